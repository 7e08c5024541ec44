"""Stripe webhooks through the gateway bridge's real HTTP endpoint, on the real database and broker.

The bridge runs in-process and is served by uvicorn on loopback; a local Stripe-compatible API answers the
settlement worker's balance-transaction look-ups. Every test uses its own account numbers.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from services.gateway_bridge.app import GatewayBridge, create_service
from services.gateway_bridge.commands import IGNORED
from services.gateway_bridge.settings import GatewayBridgeSettings
from services.gateway_bridge.storage import listed_payouts, payment_intents, payout_jobs, plumbing, webhook_events
from shared.contracts import Topic, dlq
from tests.conftest import Infra
from tests.support import stripe_fake as sf
from tests.support.helpers import eventually, read_topic, running, unique_account

pytestmark = pytest.mark.kafka


@dataclass
class Bridge:
    service: GatewayBridge
    client: httpx.AsyncClient
    api: sf.FakeStripeApi

    async def post(self, event: dict[str, Any], *, header: str | None = None, body: bytes | None = None):
        body = body if body is not None else sf.body_of(event)
        headers = {"content-type": "application/json"}
        signature = header if header is not None else sf.sign(body)
        if signature:
            headers["stripe-signature"] = signature
        return await self.client.post("/webhooks/stripe", content=body, headers=headers)

    async def intent(self, intent_id: str) -> Any:
        async with self.service.sessions() as session:
            return (
                await session.execute(select(payment_intents).where(payment_intents.c.payment_intent_id == intent_id))
            ).first()

    async def stored(self, event_id: str) -> Any:
        async with self.service.sessions() as session:
            return (await session.execute(select(webhook_events).where(webhook_events.c.event_id == event_id))).first()


def bridge_settings(infra: Infra, api_base: str) -> GatewayBridgeSettings:
    return GatewayBridgeSettings(
        database_url=infra.database_url,
        kafka_bootstrap_servers=infra.bootstrap_servers,
        stripe_webhook_secret=SecretStr(f"{sf.SECRET}, {sf.OLD_SECRET}"),
        stripe_api_key=SecretStr(sf.API_KEY),
        development=True,
        stripe_api_base=api_base,
        settlement_poll_seconds=0.1,
        settlement_retry_seconds=0.2,
        settlement_max_attempts=3,
    )


@pytest.fixture(scope="module")
async def bridge(infra: Infra) -> AsyncIterator[Bridge]:
    api = sf.FakeStripeApi()
    async with sf.serving(api.app()) as api_base:
        service = create_service(bridge_settings(infra, api_base))
        async with running(service), sf.serving(service.http) as base, httpx.AsyncClient(base_url=base) as client:
            yield Bridge(service, client, api)


async def gateway_events(infra: Infra, account: str, topic: str = Topic.GATEWAY_EVENTS) -> list[dict[str, Any]]:
    records = await read_topic(infra.bootstrap_servers, topic)
    return [
        {**json.loads(r.value), "_headers": dict(r.headers)} for r in records if r.key and r.key.decode() == account
    ]


async def wait_for_events(
    infra: Infra, account: str, count: int, topic: str = Topic.GATEWAY_EVENTS
) -> list[dict[str, Any]]:
    async def enough() -> list[dict[str, Any]]:
        found = await gateway_events(infra, account, topic)
        return found if len(found) >= count else []

    return await eventually(enough, within=180)


class TestPaymentIntentWebhooks:
    async def test_ac18_succeeded_webhook_publishes_in_settlement_in_progress(self, bridge: Bridge, infra: Infra):
        account = unique_account()
        intent = sf.new_id("pi")
        event = sf.payment_intent_event("payment_intent.succeeded", intent, sf.metadata(account))
        response = await bridge.post(event)
        assert response.status_code == 200
        assert response.json() == {"received": True, "event_id": event["id"], "outcome": "published"}

        [published] = await wait_for_events(infra, account, 1)
        assert published["type"] == "gateway.payment_status_changed"
        assert published["subject"] == account
        data = published["data"]
        assert data["gateway_event_id"] == event["id"]
        assert data["payment_intent_id"] == intent
        assert (data["gateway_status"], data["webhook_status"], data["settlement_status"]) == (
            "succeeded",
            "In Settlement",
            "In Progress",
        )
        assert data["amount"] == {"amount": "145.50", "currency": "USD"}
        assert (data["payment_type"], data["item_reference"]) == ("bill", "INV-2025-001234")
        assert data["superseded"] is False
        assert data["initiated_at"] is not None, "payments needs it for the processing time in days"
        row = await bridge.intent(intent)
        assert (row.gateway_status, row.webhook_status, row.settlement_status) == (
            "succeeded",
            "In Settlement",
            "In Progress",
        )

    @pytest.mark.parametrize(
        ("event_type", "webhook", "settlement"),
        [("payment_intent.payment_failed", "Failed", "N/A"), ("payment_intent.processing", "Not Confirmed", "N/A")],
    )
    async def test_ac18_failed_and_processing_map_as_the_seed_says(
        self, bridge: Bridge, infra: Infra, event_type: str, webhook: str, settlement: str
    ):
        account = unique_account()
        assert (
            await bridge.post(sf.payment_intent_event(event_type, sf.new_id("pi"), sf.metadata(account)))
        ).is_success
        [published] = await wait_for_events(infra, account, 1)
        assert (published["data"]["webhook_status"], published["data"]["settlement_status"]) == (webhook, settlement)

    async def test_a_duplicate_event_id_answers_2xx_and_changes_nothing(self, bridge: Bridge, infra: Infra):
        """INVARIANT: Stripe's retries of one event never publish it twice."""
        account = unique_account()
        event = sf.payment_intent_event("payment_intent.succeeded", sf.new_id("pi"), sf.metadata(account))
        first = await bridge.post(event)
        again = await bridge.post(event)
        assert (first.status_code, again.status_code) == (200, 200)
        assert again.json()["outcome"] == "duplicate"
        await wait_for_events(infra, account, 1)
        later = sf.payment_intent_event("payment_intent.processing", sf.new_id("pi"), sf.metadata(account))
        await bridge.post(later)  # a marker: once it is on the topic, a second copy of the first would be too
        events = await wait_for_events(infra, account, 2)
        assert [e["data"]["gateway_event_id"] for e in events] == [event["id"], later["id"]]

    async def test_a_late_processing_never_overwrites_succeeded(self, bridge: Bridge, infra: Infra):
        account = unique_account()
        intent = sf.new_id("pi")
        succeeded = sf.payment_intent_event("payment_intent.succeeded", intent, sf.metadata(account))
        processing = sf.payment_intent_event("payment_intent.processing", intent, sf.metadata(account))
        failed = sf.payment_intent_event("payment_intent.payment_failed", intent, sf.metadata(account))
        outcomes = [(await bridge.post(e)).json()["outcome"] for e in (succeeded, processing, failed)]
        assert outcomes == ["published", "superseded", "superseded"]
        row = await bridge.intent(intent)
        assert (row.gateway_status, row.webhook_status, row.events_applied) == ("succeeded", "In Settlement", 3)
        events = await wait_for_events(infra, account, 3)
        assert [(e["data"]["gateway_status"], e["data"]["superseded"]) for e in events] == [
            ("succeeded", False),
            ("processing", True),
            ("failed", True),
        ], "late events are published in arrival order for the audit trail, marked superseded"

    async def test_missing_metadata_is_accepted_and_dead_lettered_with_the_field_named(self, bridge: Bridge, infra):
        account = unique_account()
        meta = sf.metadata(account)
        del meta["item_reference"]
        event = sf.payment_intent_event("payment_intent.succeeded", sf.new_id("pi"), meta)
        response = await bridge.post(event)
        assert response.status_code == 200, "Stripe must not retry an event it can never fix"
        assert response.json()["outcome"] == "dead_lettered"
        [dead] = await wait_for_events(infra, account, 1, dlq(Topic.GATEWAY_EVENTS))
        assert dead["_headers"]["x-dlq-reason"] == b"metadata.item_reference missing"
        assert dead["data"]["id"] == event["id"]
        assert "payment_method_details" not in json.dumps(dead["data"]), "the DLQ copy carries no payment details"
        assert await gateway_events(infra, account) == []
        assert (await bridge.stored(event["id"])).detail == "metadata.item_reference missing"

    async def test_an_unhandled_event_type_is_counted_as_ignored_not_an_error(self, bridge: Bridge):
        before = IGNORED._value.get()
        event = sf.event("customer.created", {"id": sf.new_id("cus"), "object": "customer"})
        response = await bridge.post(event)
        assert response.status_code == 200 and response.json()["outcome"] == "ignored"
        assert IGNORED._value.get() == before + 1
        assert (await bridge.stored(event["id"])).outcome == "ignored", "every event id seen is kept"

    async def test_the_raw_body_is_kept_byte_for_byte_for_audit(self, bridge: Bridge):
        account = unique_account()
        event = sf.payment_intent_event("payment_intent.processing", sf.new_id("pi"), sf.metadata(account))
        body = sf.body_of(event)
        await bridge.post(event, body=body)
        stored = await bridge.stored(event["id"])
        assert stored.raw_body == body
        assert not stored.body_masked

    async def test_a_card_number_smuggled_into_metadata_is_masked_before_it_is_stored(self, bridge: Bridge):
        account = unique_account()
        meta = {**sf.metadata(account), "note": "paid with 4242424242424242"}
        event = sf.payment_intent_event("payment_intent.processing", sf.new_id("pi"), meta)
        await bridge.post(event)
        stored = await bridge.stored(event["id"])
        assert b"4242424242424242" not in stored.raw_body
        assert b"************4242" in stored.raw_body and stored.body_masked

    async def test_a_dead_lettered_copy_never_carries_a_card_number(self, bridge: Bridge, infra: Infra):
        account = unique_account()
        meta = {"account_number": account, "payment_type": "4242424242424242", "item_reference": "INV-1"}
        await bridge.post(sf.payment_intent_event("payment_intent.succeeded", sf.new_id("pi"), meta))
        [dead] = await wait_for_events(infra, account, 1, dlq(Topic.GATEWAY_EVENTS))
        assert "4242424242424242" not in json.dumps(dead["data"])
        assert b"4242424242424242" not in dead["_headers"]["x-dlq-reason"]


class TestSignatures:
    """INVARIANT: nothing is stored unless Stripe provably sent it, recently."""

    async def count_stored(self, bridge: Bridge, event_id: str, account: str) -> tuple[int, int]:
        """What was stored of this event: other tests' webhooks and the service's own work may write meanwhile."""
        async with bridge.service.sessions() as session:
            events = (
                await session.execute(
                    select(func.count()).select_from(webhook_events).where(webhook_events.c.event_id == event_id)
                )
            ).scalar_one()
            outbox = (
                await session.execute(
                    select(func.count()).select_from(plumbing.outbox).where(plumbing.outbox.c.key == account)
                )
            ).scalar_one()
        return int(events), int(outbox)

    @pytest.mark.parametrize(
        "header",
        [
            "",
            "t=abc,v1=def",
            f"t={int(time.time())},v1={'0' * 64}",
            f"t={int(time.time())},v0=deadbeef",
        ],
    )
    async def test_a_missing_or_wrong_signature_is_400_and_stores_nothing(self, bridge: Bridge, header: str):
        account = unique_account()
        event = sf.payment_intent_event("payment_intent.succeeded", sf.new_id("pi"), sf.metadata(account))
        response = await bridge.post(event, header=header or "")
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_signature"
        assert await self.count_stored(bridge, event["id"], account) == (0, 0)
        # The same event, signed, is stored and relayed under the account's key: the count above could have seen it.
        assert (await bridge.post(event)).status_code == 200
        assert await self.count_stored(bridge, event["id"], account) == (1, 1)

    async def test_a_signature_older_than_five_minutes_is_rejected(self, bridge: Bridge):
        event = sf.payment_intent_event("payment_intent.succeeded", sf.new_id("pi"), sf.metadata(unique_account()))
        body = sf.body_of(event)
        stale = sf.sign(body, timestamp=int(time.time()) - 301)
        response = await bridge.post(event, body=body, header=stale)
        assert response.status_code == 400 and "tolerance" in response.json()["detail"]
        assert await bridge.stored(event["id"]) is None
        recent = sf.sign(body, timestamp=int(time.time()) - 240)
        assert (await bridge.post(event, body=body, header=recent)).status_code == 200

    async def test_a_body_changed_after_signing_is_rejected(self, bridge: Bridge):
        event = sf.payment_intent_event("payment_intent.succeeded", sf.new_id("pi"), sf.metadata(unique_account()))
        header = sf.sign(sf.body_of(event))
        event["data"]["object"]["amount_received"] = 1
        assert (await bridge.post(event, header=header)).status_code == 400

    async def test_during_rotation_either_secret_and_several_v1_signatures_are_accepted(self, bridge: Bridge):
        for secrets in ([sf.OLD_SECRET], ["whsec_someone_else", sf.SECRET], [sf.OLD_SECRET, sf.SECRET]):
            event = sf.payment_intent_event("payment_intent.processing", sf.new_id("pi"), sf.metadata(unique_account()))
            body = sf.body_of(event)
            assert (await bridge.post(event, body=body, header=sf.sign_rotating(body, secrets))).status_code == 200
        event = sf.payment_intent_event("payment_intent.processing", sf.new_id("pi"), sf.metadata(unique_account()))
        body = sf.body_of(event)
        assert (await bridge.post(event, body=body, header=sf.sign(body, "whsec_retired"))).status_code == 400

    async def test_a_signed_body_that_is_not_a_stripe_event_is_400(self, bridge: Bridge):
        for body in (b"[1, 2]", b'{"type": "payment_intent.succeeded"}', b"not json"):
            response = await bridge.post({}, body=body)
            assert response.status_code == 400 and response.json()["code"] == "malformed_event"


class TestChargeWebhooks:
    async def test_a_refund_without_metadata_is_routed_through_the_known_payment_intent(self, bridge: Bridge, infra):
        account = unique_account()
        intent = sf.new_id("pi")
        await bridge.post(sf.payment_intent_event("payment_intent.succeeded", intent, sf.metadata(account)))
        refund = sf.refund_event(intent)
        assert (await bridge.post(refund)).json()["outcome"] == "published"
        events = await wait_for_events(infra, account, 2)
        data = events[1]["data"]
        assert (data["gateway_status"], data["webhook_status"], data["payment_intent_id"]) == (
            "refunded",
            "Refunded",
            intent,
        )
        assert data["item_reference"] == "INV-2025-001234" and data["amount"]["amount"] == "145.50"
        assert data["amount_refunded"] == {"amount": "145.50", "currency": "USD"}
        assert (await bridge.intent(intent)).webhook_status == "Refunded"

    async def test_a_dispute_is_published_as_disputed(self, bridge: Bridge, infra: Infra):
        account = unique_account()
        intent = sf.new_id("pi")
        await bridge.post(sf.payment_intent_event("payment_intent.succeeded", intent, sf.metadata(account)))
        await bridge.post(sf.dispute_event(intent))
        events = await wait_for_events(infra, account, 2)
        assert (events[1]["data"]["gateway_status"], events[1]["data"]["webhook_status"]) == ("disputed", "Disputed")

    async def test_a_partial_refund_is_not_a_full_refund(self, bridge: Bridge, infra: Infra):
        account = unique_account()
        intent = sf.new_id("pi")
        await bridge.post(sf.payment_intent_event("payment_intent.succeeded", intent, sf.metadata(account)))
        await bridge.post(sf.refund_event(intent, refunded=5000))
        events = await wait_for_events(infra, account, 2)
        assert events[1]["data"]["gateway_status"] == "partially_refunded"
        assert events[1]["data"]["amount_refunded"]["amount"] == "50.00"

    async def test_a_refund_carrying_its_own_metadata_needs_no_earlier_event(self, bridge: Bridge, infra: Infra):
        account = unique_account()
        intent = sf.new_id("pi")
        await bridge.post(sf.refund_event(intent, meta=sf.metadata(account, "SC-1", "service")))
        [event] = await wait_for_events(infra, account, 1)
        assert (event["data"]["payment_type"], event["data"]["item_reference"]) == ("service", "SC-1")

    async def test_a_refund_of_an_unknown_payment_intent_goes_to_the_dlq(self, bridge: Bridge, infra: Infra):
        intent = sf.new_id("pi")
        response = await bridge.post(sf.refund_event(intent))
        assert response.status_code == 200 and response.json()["outcome"] == "dead_lettered"
        [dead] = await wait_for_events(infra, intent, 1, dlq(Topic.GATEWAY_EVENTS))
        reason = dead["_headers"]["x-dlq-reason"].decode()
        assert "metadata.account_number missing" in reason and intent in reason


class TestSettlement:
    async def paid_intents(self, bridge: Bridge, account: str, n: int) -> list[str]:
        intents = [sf.new_id("pi") for _ in range(n)]
        for intent in intents:
            await bridge.post(sf.payment_intent_event("payment_intent.succeeded", intent, sf.metadata(account)))
        return intents

    async def test_ac18_payout_events_become_one_settlement_event_per_payment(self, bridge: Bridge, infra: Infra):
        account = unique_account()
        intents = await self.paid_intents(bridge, account, 3)
        payout = sf.new_id("po")
        bridge.api.payouts[payout] = [(i, 14550) for i in intents]
        bridge.api.fail_next = 2  # Stripe hiccups twice; tenacity retries
        created = await bridge.post(sf.payout_event("payout.created", payout))
        assert created.json()["outcome"] == "payout_pending"
        settlement = await wait_for_events(infra, account, 6)
        assert {e["data"]["payment_intent_id"] for e in settlement[3:]} == set(intents)
        assert {(e["data"]["webhook_status"], e["data"]["settlement_status"]) for e in settlement[3:]} == {
            ("In Settlement", "In Progress")
        }

        await bridge.post(sf.payout_event("payout.paid", payout))
        settled = (await wait_for_events(infra, account, 9))[6:]
        assert {e["type"] for e in settled} == {"gateway.settlement_status_changed"}
        assert {(e["data"]["webhook_status"], e["data"]["settlement_status"]) for e in settled} == {
            ("Settled", "Success")
        }
        assert all(e["data"]["payout_id"] == payout and e["data"]["account_number"] == account for e in settled)
        for intent in intents:
            row = await bridge.intent(intent)
            assert (row.payout_status, row.webhook_status, row.settlement_status) == ("paid", "Settled", "Success")

    async def test_ac18_a_failed_payout_keeps_the_webhook_status_and_fails_the_settlement(self, bridge, infra):
        account = unique_account()
        [intent] = await self.paid_intents(bridge, account, 1)
        payout = sf.new_id("po")
        bridge.api.payouts[payout] = [(intent, 14550)]
        await bridge.post(sf.payout_event("payout.failed", payout))
        [_, failed] = await wait_for_events(infra, account, 2)
        assert failed["data"]["webhook_status"] is None, "None keeps the previous webhook status"
        assert failed["data"]["settlement_status"] == "Failed"
        row = await bridge.intent(intent)
        assert (row.webhook_status, row.settlement_status) == ("In Settlement", "Failed")

    async def test_a_payout_of_a_payment_we_never_saw_goes_to_the_dlq(self, bridge: Bridge, infra: Infra):
        stranger = sf.new_id("pi")
        payout = sf.new_id("po")
        bridge.api.payouts[payout] = [(stranger, 1000)]
        await bridge.post(sf.payout_event("payout.paid", payout))
        [dead] = await wait_for_events(infra, stranger, 1, dlq(Topic.GATEWAY_EVENTS))
        assert f"payment intent {stranger}" in dead["_headers"]["x-dlq-reason"].decode()

    async def test_a_payout_stripe_does_not_know_is_dead_lettered_not_retried_forever(self, bridge: Bridge, infra):
        payout = sf.new_id("po")
        event = sf.payout_event("payout.paid", payout)
        await bridge.post(event)
        [dead] = await wait_for_events(infra, payout, 1, dlq(Topic.GATEWAY_EVENTS))
        assert "No such payout" in dead["_headers"]["x-dlq-reason"].decode()
        async with bridge.service.sessions() as session:
            job = (await session.execute(select(payout_jobs).where(payout_jobs.c.event_id == event["id"]))).one()
        assert job.done_at is not None and job.attempts == 1


class TestPayoutListing:
    async def test_a_paid_payout_is_listed_once_with_nets_summing_to_its_amount(self, bridge: Bridge, infra: Infra):
        account = unique_account()
        intents = [sf.new_id("pi") for _ in range(2)]
        for intent, amount in zip(intents, (14550, 20000), strict=True):
            event = sf.payment_intent_event("payment_intent.succeeded", intent, sf.metadata(account), amount=amount)
            await bridge.post(event)
        payout = sf.new_id("po")
        bridge.api.payouts[payout] = list(zip(intents, (14550, 20000), strict=True))
        net = sf.payout_net(bridge.api.payouts[payout])
        paid = sf.payout_event("payout.paid", payout, amount=net)
        assert (await bridge.post(paid)).json()["outcome"] == "payout_pending"

        [listed] = await wait_for_events(infra, payout, 1)
        assert listed["type"] == "gateway.payout_listed" and listed["subject"] == payout
        data = listed["data"]
        assert (data["payout_id"], data["status"]) == (payout, "paid")
        assert data["amount"] == {"amount": f"{net / 100:.2f}", "currency": "USD"}
        transactions = data["balance_transactions"]
        assert [t["type"] for t in transactions] == ["charge", "charge"], "the payout's own transaction is left out"
        assert sum(Decimal(t["net"]["amount"]) for t in transactions) == Decimal(data["amount"]["amount"])
        assert {t["payment_intent_id"] for t in transactions} == set(intents)
        assert {t["account_number"] for t in transactions} == {account}
        assert [(t["amount"]["amount"], t["fee"]["amount"]) for t in transactions] == [
            ("145.50", "4.52"),
            ("200.00", "6.10"),
        ]

        # Stripe redelivers the event, and a second payout event (another job) lists the same payout again.
        assert (await bridge.post(paid)).json()["outcome"] == "duplicate"
        again = sf.payout_event("payout.paid", payout, amount=net)
        await bridge.post(again)
        await wait_for_events(infra, account, 6)  # 2 payments + 2 settlements per job: the second job ran

        async def second_job_done() -> bool:
            async with bridge.service.sessions() as session:
                job = (await session.execute(select(payout_jobs).where(payout_jobs.c.event_id == again["id"]))).one()
            return job.done_at is not None

        await eventually(second_job_done, within=60)
        assert [e["type"] for e in await gateway_events(infra, payout)] == ["gateway.payout_listed"]
        async with bridge.service.sessions() as session:
            rows = (await session.execute(select(listed_payouts).where(listed_payouts.c.payout_id == payout))).all()
        assert [r.event_id for r in rows] == [paid["id"]]

    async def test_a_listed_payout_that_fails_later_is_listed_again_with_its_new_status(
        self, bridge: Bridge, infra: Infra
    ):
        """Paid, then returned by the bank (Stripe's payout.failed after payout.paid): reconciliation hears of it;
        a late report of an earlier status lists nothing more."""
        account = unique_account()
        intent = sf.new_id("pi")
        await bridge.post(sf.payment_intent_event("payment_intent.succeeded", intent, sf.metadata(account)))
        payout = sf.new_id("po")
        bridge.api.payouts[payout] = [(intent, 10000)]
        net = sf.payout_net(bridge.api.payouts[payout])
        await bridge.post(sf.payout_event("payout.paid", payout, amount=net))
        [paid] = await wait_for_events(infra, payout, 1)
        assert paid["data"]["status"] == "paid"

        failed = sf.payout_event("payout.failed", payout, amount=net)
        await bridge.post(failed)
        _, returned = await wait_for_events(infra, payout, 2)
        assert (returned["type"], returned["data"]["status"]) == ("gateway.payout_listed", "failed")
        assert returned["id"] != paid["id"]
        assert returned["data"]["balance_transactions"] == paid["data"]["balance_transactions"]

        late = sf.payout_event("payout.paid", payout, amount=net)
        await bridge.post(late)

        async def late_job_done() -> bool:
            async with bridge.service.sessions() as session:
                job = (await session.execute(select(payout_jobs).where(payout_jobs.c.event_id == late["id"]))).one()
            return job.done_at is not None

        await eventually(late_job_done, within=180)
        assert [e["data"]["status"] for e in await gateway_events(infra, payout)] == ["paid", "failed"]
        async with bridge.service.sessions() as session:
            row = (await session.execute(select(listed_payouts).where(listed_payouts.c.payout_id == payout))).one()
        assert (row.status, row.event_id) == ("failed", failed["id"])


class TestOutgoingPayouts:
    async def test_a_connect_transfer_and_payout_with_our_metadata_become_payout_status_changes(
        self, bridge: Bridge, infra: Infra
    ):
        ours = f"PO-{unique_account()}"
        connected = sf.new_id("acct")
        transfer = sf.new_id("tr")
        created = sf.transfer_event("transfer.created", transfer, connected, meta={"paydesk_payout_id": ours})
        assert (await bridge.post(created)).json()["outcome"] == "published"
        payout = sf.new_id("po")
        paid = sf.payout_event("payout.paid", payout, amount=25000, account=connected, meta={"paydesk_payout_id": ours})
        assert (await bridge.post(paid)).json()["outcome"] == "published"
        assert (await bridge.post(paid)).json()["outcome"] == "duplicate"

        first, second = await wait_for_events(infra, ours, 2)
        assert {first["type"], second["type"]} == {"gateway.payout_status_changed"}
        assert (first["data"]["event_type"], first["data"]["object_type"], first["data"]["object_id"]) == (
            "transfer.created",
            "transfer",
            transfer,
        )
        assert (second["data"]["event_type"], second["data"]["object_type"], second["data"]["object_id"]) == (
            "payout.paid",
            "payout",
            payout,
        )
        for published, event in ((first, created), (second, paid)):
            assert published["data"]["gateway_event_id"] == event["id"]
            assert published["data"]["paydesk_payout_id"] == ours
            assert published["data"]["connected_account"] == connected
            assert published["data"]["amount"] == {"amount": "250.00", "currency": "USD"}
        assert (first["data"]["fully_reversed"], second["data"]["fully_reversed"]) == (False, None)
        # A connected account's payout is not the utility's: no settlement job, no balance-transaction look-up.
        async with bridge.service.sessions() as session:
            jobs = (await session.execute(select(payout_jobs).where(payout_jobs.c.payout_id == payout))).all()
        assert jobs == []
        assert all(r.get("payout") != payout for r in bridge.api.requests)

    async def test_a_transfer_reversal_says_whether_the_whole_amount_came_back(self, bridge: Bridge, infra: Infra):
        connected = sf.new_id("acct")
        whole, part = sf.new_id("tr"), sf.new_id("tr")
        await bridge.post(sf.transfer_event("transfer.reversed", whole, connected))
        partial = sf.transfer_event("transfer.reversed", part, connected)
        partial["data"]["object"].update(reversed=False, amount_reversed=5000)
        await bridge.post(partial)
        [full_event] = await wait_for_events(infra, whole, 1)
        [partial_event] = await wait_for_events(infra, part, 1)
        assert (full_event["data"]["fully_reversed"], partial_event["data"]["fully_reversed"]) == (True, False)

    async def test_a_failed_connect_payout_carries_stripes_failure(self, bridge: Bridge, infra: Infra):
        connected = sf.new_id("acct")
        payout = sf.new_id("po")
        failed = sf.payout_event("payout.failed", payout, account=connected)
        assert (await bridge.post(failed)).json()["outcome"] == "published"
        [published] = await wait_for_events(infra, payout, 1)
        data = published["data"]
        assert (data["paydesk_payout_id"], data["connected_account"]) == (None, connected)
        assert data["failure_code"] == "account_closed"
        assert data["failure_message"] == "The bank account has been closed."
