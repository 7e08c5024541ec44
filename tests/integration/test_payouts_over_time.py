"""Payouts over time, on the real database and broker: scheduled runs on a simulated clock (once per pay period
across restarts and two instances), a run retried after Stripe forgot its idempotency keys (24 h) never pays
twice, and statuses Stripe reports days later (a paid payout the bank returns, a partial reversal)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from services.payouts import disbursement, execution
from services.payouts.app import PayoutsService, create_service
from services.payouts.disbursement import idempotency_key
from services.payouts.settings import PayoutsSettings
from services.payouts.storage import lines, payouts, scheduled_runs
from shared.auth import Role, mint_token
from shared.contracts import Envelope, Topic, new_envelope
from shared.contracts.events import GatewayPayoutStatusChanged
from tests.conftest import Infra
from tests.support.helpers import eventually, publish
from tests.support.stripe_fake import API_KEY, serving
from tests.support.stripe_transfers_fake import FakeStripeTransfers

pytestmark = pytest.mark.kafka
DAY = 24 * 3600
# Far from the other payouts tests' lines (earned today), so the scheduled runs here take only this file's lines.
MONDAY_JUNE_1 = datetime(2020, 6, 1, 6, 0, tzinfo=UTC)


def settings(infra: Infra, base: str) -> PayoutsSettings:
    return PayoutsSettings(
        database_url=infra.database_url,
        kafka_bootstrap_servers=infra.bootstrap_servers,
        stripe_api_base=base,
        stripe_api_key=API_KEY,
        development=True,
        schedule_check_seconds=0,  # the test drives the scheduler on its own clock
    )


@pytest.fixture(scope="module")
async def stripe_api() -> AsyncIterator[tuple[FakeStripeTransfers, str]]:
    fake = FakeStripeTransfers()
    async with serving(fake.app()) as base:
        yield fake, base


@pytest.fixture(scope="module")
async def service(infra: Infra, stripe_api: tuple[FakeStripeTransfers, str]) -> AsyncIterator[PayoutsService]:
    created = create_service(settings(infra, stripe_api[1]))
    await created.start()
    try:
        yield created
    finally:
        await created.stop()


@pytest.fixture(scope="module")
async def api(service: PayoutsService) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=service.http), base_url="http://payouts") as client:
        yield client


def auth(service: PayoutsService, user: str = "Maker Mary") -> dict[str, str]:
    token = mint_token(service.settings.jwt_secret.get_secret_value(), user=user, roles=[Role.BILLING_MANAGER])
    return {"Authorization": f"Bearer {token}", "Idempotency-Key": f"key-{uuid.uuid4().hex}"}


def tag() -> str:
    return uuid.uuid4().hex[:8].upper()


async def payee(api: httpx.AsyncClient, service: PayoutsService, schedule: str, currency: str = "EUR") -> str:
    body = {
        "name": f"Agent {tag()}",
        "payee_type": "agent",
        "country": "DE",
        "payout_currency": currency,
        "schedule": schedule,
        "method": "stripe",
        "stripe_account": f"acct_{tag()}{tag()}",
    }
    response = await api.post("/payees", json=body, headers=auth(service))
    assert response.status_code == 201, response.text
    return str(response.json()["payee_id"])


async def earning(
    api: httpx.AsyncClient, service: PayoutsService, payee_id: str, amount: str, on: date, currency: str = "EUR"
) -> None:
    body = {"payee_id": payee_id, "amount": amount, "currency": currency, "earned_on": on.isoformat(), "reason": "Work"}
    response = await api.post("/earnings", json=body, headers=auth(service))
    assert response.status_code == 201, response.text


async def payouts_of(service: PayoutsService, payee_id: str) -> list[Any]:
    async with service.sessions() as session:
        query = select(payouts).where(payouts.c.payee_id == payee_id).order_by(payouts.c.seq)
        return list((await session.execute(query)).all())


async def periods(service: PayoutsService) -> dict[tuple[str, date], Any]:
    async with service.sessions() as session:
        rows = await session.execute(select(scheduled_runs).where(scheduled_runs.c.period_start < date(2021, 1, 1)))
        return {(r.schedule, r.period_start): r for r in rows}


class TestScheduledRuns:
    async def test_each_schedule_gets_one_run_per_period_across_restarts_and_two_instances(
        self, infra, api, service, stripe_api
    ):
        """INVARIANT: one run per schedule and pay period, whatever restarts or instances check; each takes the
        lines its schedule's payees earned before the period."""
        monthly, weekly, on_request = [await payee(api, service, s) for s in ("monthly", "weekly", "on_request")]
        for who in (monthly, weekly, on_request):
            await earning(api, service, who, "40.00", date(2020, 5, 20))
        await earning(api, service, weekly, "7.00", date(2020, 6, 3))  # in the week from June 1: next week's run

        made = await service.scheduler.run_once(MONDAY_JUNE_1)
        assert {(m.schedule, m.period_start, m.outcome) for m in made} == {
            ("weekly", date(2020, 6, 1), "created"),
            ("monthly", date(2020, 6, 1), "created"),
        }
        by_schedule = {m.schedule: m.run_id for m in made}
        [paid_monthly] = await payouts_of(service, monthly)
        [paid_weekly] = await payouts_of(service, weekly)
        assert (paid_monthly.run_id, str(paid_monthly.amount), paid_monthly.status) == (
            by_schedule["monthly"],
            "40.00",
            "Scheduled",
        )
        assert (paid_weekly.run_id, str(paid_weekly.amount)) == (by_schedule["weekly"], "40.00")
        assert await payouts_of(service, on_request) == []

        # The same day again, later in the week, and after a restart (a new service on the same database).
        assert await service.scheduler.run_once(datetime(2020, 6, 1, 23, 0, tzinfo=UTC)) == []
        assert await service.scheduler.run_once(datetime(2020, 6, 5, 9, 0, tzinfo=UTC)) == []
        restarted = create_service(settings(infra, stripe_api[1]))
        try:
            assert await restarted.scheduler.run_once(datetime(2020, 6, 6, 9, 0, tzinfo=UTC)) == []
        finally:
            await restarted.engine.dispose()

        # Two instances check the next Monday at the same moment: one weekly run, made by one of them.
        other = create_service(settings(infra, stripe_api[1]))
        try:
            both = await asyncio.gather(
                service.scheduler.run_once(datetime(2020, 6, 8, 6, 0, tzinfo=UTC)),
                other.scheduler.run_once(datetime(2020, 6, 8, 6, 0, tzinfo=UTC)),
            )
        finally:
            await other.engine.dispose()
        made_next = [m for result in both for m in result]
        assert [(m.schedule, m.period_start) for m in made_next] == [("weekly", date(2020, 6, 8))]
        assert [str(p.amount) for p in await payouts_of(service, weekly)] == ["40.00", "7.00"]
        assert len(await payouts_of(service, monthly)) == 1

        # A scheduled run is approved by a billing manager like any other (its maker is the scheduler).
        approved = await api.post(f"/runs/{by_schedule['monthly']}/approve", headers=auth(service, "Checker Chris"))
        assert approved.status_code == 200, approved.text

        # The service was down on July 1: the month's run is made at the first check after it.
        await earning(api, service, monthly, "12.00", date(2020, 6, 15))
        late = await service.scheduler.run_once(datetime(2020, 7, 15, 9, 0, tzinfo=UTC))
        assert {(m.schedule, m.period_start, m.outcome) for m in late} == {
            ("monthly", date(2020, 7, 1), "created"),
            ("weekly", date(2020, 7, 13), "nothing_to_pay"),
        }
        assert [str(p.amount) for p in await payouts_of(service, monthly)] == ["40.00", "12.00"]
        recorded = await periods(service)
        assert recorded[("weekly", date(2020, 7, 13))].run_id is None
        assert "would pay nobody" in recorded[("weekly", date(2020, 7, 13))].detail
        assert set(recorded) >= {
            ("weekly", date(2020, 6, 1)),
            ("monthly", date(2020, 6, 1)),
            ("weekly", date(2020, 6, 8)),
            ("monthly", date(2020, 7, 1)),
        }


async def approved_run(api: httpx.AsyncClient, service: PayoutsService, amount: str) -> tuple[str, str]:
    who = await payee(api, service, "on_request", currency="USD")
    await earning(api, service, who, amount, datetime.now(UTC).date(), currency="USD")
    run = (await api.post("/runs", json={"payee_ids": [who]}, headers=auth(service))).json()
    approved = await api.post(f"/runs/{run['run_id']}/approve", headers=auth(service, "Checker Chris"))
    assert approved.status_code == 200, approved.text
    return str(run["run_id"]), str(run["payouts"][0]["payout_id"])


class TestStripeForgetsKeys:
    async def test_the_fake_forgets_keys_after_24_hours_so_a_blind_resend_would_pay_twice(self, stripe_api):
        """The check below could fail: after 24 h the same key makes a second transfer, as at Stripe."""
        fake, base = stripe_api
        client = disbursement.stripe_client(PayoutsSettings(stripe_api_base=base, stripe_api_key=API_KEY))
        request = disbursement.TransferRequest(
            f"PO-T{tag()}", f"RUN-T{tag()}", "PE-1", f"acct_{tag()}{tag()}", Decimal("5"), "USD"
        )
        first = await disbursement.send_transfer(client, request)
        assert await disbursement.send_transfer(client, request) == first
        fake.advance(DAY + 1)
        assert await disbursement.send_transfer(client, request) != first
        assert len(fake.created_for(request.payout_id)) == 2

    async def test_a_run_retried_after_stripe_forgot_its_key_finds_the_transfer_and_never_pays_twice(
        self, api, service, stripe_api
    ):
        """INVARIANT: a payout whose answer was lost is looked up at Stripe before any new request, so a retry
        days later records the first transfer and sends nothing."""
        fake, _ = stripe_api
        run_id, payout_id = await approved_run(api, service, "25.00")

        async def crash(_: str) -> None:
            raise RuntimeError("process killed after Stripe answered")

        with pytest.raises(RuntimeError):
            await execution.execute_run(
                service.sessions,
                run_id,
                actor="Checker Chris",
                client=service.stripe,
                settings=service.settings,
                after_send=crash,
            )
        [transfer] = fake.created_for(payout_id)
        fake.advance(DAY + 3600)  # Stripe no longer knows the key
        lists_before = len(fake.list_requests)

        retried = await api.post(f"/runs/{run_id}/execute", headers=auth(service, "Checker Chris"))

        assert retried.status_code == 200, retried.text
        assert retried.json()["execution"]["recovered"] == [payout_id]
        assert fake.requests_per_key[idempotency_key(payout_id)] == 1  # no second POST at all
        assert len(fake.list_requests) == lists_before + 1
        assert fake.list_requests[-1]["transfer_group"] == run_id
        assert fake.created_for(payout_id) == [transfer]
        [row] = [p for p in retried.json()["payouts"] if p["payout_id"] == payout_id]
        assert (row["status"], row["reference"]) == ("Sent", transfer["id"])

    async def test_an_attempt_that_never_reached_stripe_is_sent_after_the_look_up_finds_nothing(
        self, api, service, stripe_api
    ):
        fake, _ = stripe_api
        run_id, payout_id = await approved_run(api, service, "30.00")
        fake.fail_next = 1  # Stripe answers 500: the outcome is unknown, nothing was created
        first = await api.post(f"/runs/{run_id}/execute", headers=auth(service, "Checker Chris"))
        assert [r["payout_id"] for r in first.json()["execution"]["retry_later"]] == [payout_id]
        fake.advance(DAY + 3600)

        retried = await api.post(f"/runs/{run_id}/execute", headers=auth(service, "Checker Chris"))

        assert retried.json()["execution"]["sent"] == [payout_id]
        assert retried.json()["execution"]["recovered"] == []
        assert fake.list_requests[-1]["transfer_group"] == run_id
        assert fake.requests_per_key[idempotency_key(payout_id)] == 2
        assert len(fake.created_for(payout_id)) == 1


def gateway(event_type: str, payout_id: str, object_id: str, **kw: Any) -> Envelope:
    data = GatewayPayoutStatusChanged(
        gateway_event_id=f"evt_{tag()}",
        event_type=event_type,
        object_type=event_type.split(".")[0],
        object_id=object_id,
        paydesk_payout_id=payout_id,
        occurred_at=datetime.now(UTC),
        **kw,
    )
    return new_envelope("gateway.payout_status_changed", source="gateway_bridge", subject=payout_id, data=data)


async def status_of(service: PayoutsService, payout_id: str) -> str:
    async with service.sessions() as session:
        row = (await session.execute(select(payouts.c.status).where(payouts.c.payout_id == payout_id))).one()
    return str(row.status)


class TestLateStatuses:
    async def test_a_paid_payout_the_bank_sends_back_is_returned_and_a_partial_reversal_changes_nothing(
        self, infra, api, service
    ):
        returned_run, returned = await approved_run(api, service, "20.00")
        kept_run, kept = await approved_run(api, service, "21.00")
        sent = {}
        for run_id, payout_id in ((returned_run, returned), (kept_run, kept)):
            executed = (await api.post(f"/runs/{run_id}/execute", headers=auth(service, "Checker Chris"))).json()
            sent[payout_id] = next(p["reference"] for p in executed["payouts"] if p["payout_id"] == payout_id)
        await publish(
            infra.bootstrap_servers,
            Topic.GATEWAY_EVENTS,
            [
                gateway("payout.paid", returned, f"po_{tag()}"),
                gateway("payout.failed", returned, f"po_{tag()}", failure_code="account_closed"),
                gateway("transfer.reversed", kept, sent[kept], fully_reversed=False),
                gateway("payout.paid", kept, f"po_{tag()}"),
            ],
        )

        async def settled() -> bool:
            return (await status_of(service, returned), await status_of(service, kept)) == ("Returned", "Paid")

        await eventually(settled)
        async with service.sessions() as session:
            mine = (
                await session.execute(
                    select(lines.c.status, lines.c.payout_id).where(
                        lines.c.payee_id
                        == select(payouts.c.payee_id).where(payouts.c.payout_id == returned).scalar_subquery()
                    )
                )
            ).all()
        assert [(r.status, r.payout_id) for r in mine] == [("Open", None)]
