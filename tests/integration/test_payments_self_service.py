"""The customer's self-service endpoints of payments on the real database and broker: the account, its
payments, online payment through a Stripe PaymentIntent, and the staff's payment preview."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from services.payments.storage import idempotency_keys, payments
from shared.auth import Role, mint_token
from shared.contracts import Topic, new_envelope
from shared.contracts.events import GatewayPaymentStatusChanged, Money, PaymentType
from tests.conftest import Infra
from tests.support.helpers import eventually, publish
from tests.support.payments import SECRET, Api, bill_payment, payments_api, seeded
from tests.support.stripe_fake import API_KEY, FakeStripeApi, serving

pytestmark = pytest.mark.kafka


class Harness:
    def __init__(self, api: Api, stripe: FakeStripeApi) -> None:
        self.api = api
        self.stripe = stripe


@pytest.fixture(scope="module")
async def harness(infra: Infra) -> AsyncIterator[Harness]:
    fake = FakeStripeApi()
    async with serving(fake.app()) as base:
        async for api in payments_api(infra, stripe_api_base=base, stripe_api_key=SecretStr(API_KEY)):
            yield Harness(api, fake)


def customer(account: str) -> dict[str, str]:
    token = mint_token(SECRET, user="John Doe", roles=[Role.CUSTOMER], account_number=account)
    return {"Authorization": f"Bearer {token}"}


def intent_body(account: str, n: int = 1) -> dict[str, str]:
    return {"payment_type": "bill", "item_reference": f"INV-{account}-{n}"}


async def start_intent(api: Api, account: str, headers: dict[str, str], key: str | None = None) -> httpx.Response:
    return await api.client.post(
        f"/accounts/{account}/payment-intents",
        json=intent_body(account),
        headers=headers | {"Idempotency-Key": key or f"intent-{uuid.uuid4()}"},
    )


async def test_a_customer_reads_their_own_account_and_payments(harness: Harness) -> None:
    api = harness.api
    account, name = await seeded(api, balance="600.25")
    paid = await api.pay(bill_payment(account, "45.50"))
    assert paid.status_code == 201, paid.text

    summary = await api.client.get(f"/accounts/{account}", headers=customer(account))
    assert summary.status_code == 200, summary.text
    body = summary.json()
    assert (body["name"], body["account_number"]) == (name, account)
    assert body["service_address"] == "123 Main Street, Cityville"
    assert body["current_balance"]["amount"] == "554.75"
    first = body["open_items"][0]
    assert len(body["open_items"]) == 7
    bill = next(i for i in body["open_items"] if i["item_reference"] == f"INV-{account}-1")
    assert bill["payment_type"] == "bill" and bill["amount"]["amount"] == "145.50"
    assert bill["outstanding"]["amount"] == "100.00"
    assert set(first) == {"payment_type", "item_reference", "description", "due_date", "amount", "outstanding"}

    history = await api.client.get(f"/accounts/{account}/payments", headers=customer(account))
    assert history.status_code == 200, history.text
    [row] = history.json()["payments"]
    assert row["receipt_number"] == paid.json()["receipt_number"]
    assert (row["amount"]["amount"], row["method"], row["channel"]) == ("45.50", "Credit Card", "Walk-in")
    assert (row["payment_type"], row["item_reference"], row["status"]) == ("bill", f"INV-{account}-1", "Posted")
    assert "settlement_status" in row and history.json()["next_cursor"] is None


async def test_account_payments_page_with_a_keyset_cursor(harness: Harness) -> None:
    api = harness.api
    account, _ = await seeded(api)
    for amount in ("10.00", "11.00", "12.00", "13.00", "14.00"):
        assert (await api.pay(bill_payment(account, amount))).status_code == 201
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        response = await api.client.get(f"/accounts/{account}/payments", headers=customer(account), params=params)
        assert response.status_code == 200, response.text
        seen += [p["payment_id"] for p in response.json()["payments"]]
        pages += 1
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and len(seen) == 5 and len(set(seen)) == 5
    bad = await api.client.get(f"/accounts/{account}/payments", headers=customer(account), params={"cursor": "x"})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_cursor"


async def test_a_customer_gets_404_for_every_other_account_on_every_endpoint(harness: Harness) -> None:
    api = harness.api
    mine, _ = await seeded(api)
    theirs, _ = await seeded(api)  # exists, and has a bill to pay
    intent = await start_intent(api, theirs, api.auth())  # staff may start one for any account
    assert intent.status_code == 201, intent.text
    theirs_intent = intent.json()["payment_intent_id"]
    for other in (theirs, "WU-NO-SUCH-ACCOUNT"):
        calls = [
            api.client.get(f"/accounts/{other}", headers=customer(mine)),
            api.client.get(f"/accounts/{other}/payments", headers=customer(mine)),
            start_intent(api, other, customer(mine)),
            api.client.get(f"/accounts/{other}/payment-intents/{theirs_intent}", headers=customer(mine)),
        ]
        for call in calls:
            response = await call
            assert response.status_code == 404, (other, response.text)
            assert response.json()["code"] == "not_found"
    # Their intent through my own account is not found either: an intent belongs to the account it was made for.
    probe = await api.client.get(f"/accounts/{mine}/payment-intents/{theirs_intent}", headers=customer(mine))
    assert probe.status_code == 404, probe.text
    # Staff roles as for consumer details: the payee role is neither staff nor the customer.
    payee = {"Authorization": f"Bearer {mint_token(SECRET, user='P', roles=[Role.PAYEE], payee_id='p1')}"}
    assert (await api.client.get(f"/accounts/{mine}", headers=payee)).status_code == 403
    assert (await api.get(f"/accounts/{theirs}", Role.BILLING_MANAGER)).status_code == 200


async def test_paying_online_creates_a_payment_intent_then_follows_the_gateway_to_posted(harness: Harness) -> None:
    api = harness.api
    account, _ = await seeded(api)
    key = f"intent-{uuid.uuid4()}"
    created = await start_intent(api, account, customer(account), key)
    assert created.status_code == 201, created.text
    body = created.json()
    intent_id = body["payment_intent_id"]
    assert body["status"] == "Pending" and body["client_secret"].startswith(intent_id)
    assert body["amount"]["amount"] == "145.50" and body["currency"] == "USD"
    sent = harness.stripe.intents[intent_id]
    assert sent["amount"] == 14550 and sent["currency"] == "usd"
    assert sent["metadata"] == {"account_number": account, "payment_type": "bill", "item_reference": f"INV-{account}-1"}

    again = await start_intent(api, account, customer(account), key)
    assert again.status_code == 201 and again.json()["payment_intent_id"] == intent_id, "a retry is the same intent"
    other_body = await api.client.post(
        f"/accounts/{account}/payment-intents",
        json=intent_body(account, 2),
        headers=customer(account) | {"Idempotency-Key": key},
    )
    assert other_body.status_code == 409
    async with api.service.sessions() as session:
        stored = await session.scalar(
            select(func.count()).select_from(idempotency_keys).where(idempotency_keys.c.result == intent_id)
        )
        assert stored == 1
        assert (
            await session.scalar(select(func.count()).select_from(payments).where(payments.c.account_number == account))
            == 0
        )

    follow = f"/accounts/{account}/payment-intents/{intent_id}"
    pending = await api.client.get(follow, headers=customer(account))
    assert pending.status_code == 200 and pending.json()["status"] == "Pending"
    assert pending.json()["receipt_number"] is None

    # What gateway_bridge publishes for Stripe's payment_intent.succeeded webhook of this intent.
    succeeded = GatewayPaymentStatusChanged(
        gateway_event_id=f"evt_{uuid.uuid4().hex[:12]}",
        payment_intent_id=intent_id,
        account_number=account,
        payment_type=PaymentType.BILL,
        item_reference=f"INV-{account}-1",
        amount=Money(amount=Decimal("145.50")),
        gateway_status="succeeded",
        webhook_status="In Settlement",
        settlement_status="In Progress",
        occurred_at=datetime.now(UTC),
    )
    envelope = new_envelope("gateway.payment_status_changed", source="gateway_bridge", subject=account, data=succeeded)
    await publish(api.bootstrap, Topic.GATEWAY_EVENTS, [envelope])

    async def posted() -> dict[str, Any] | None:
        answer = (await api.client.get(follow, headers=customer(account))).json()
        return answer if answer["status"] == "Posted" else None

    done = await eventually(posted)
    assert done["receipt_number"] and done["settlement_status"] == "In Progress"
    summary = (await api.client.get(f"/accounts/{account}", headers=customer(account))).json()
    assert f"INV-{account}-1" not in [i["item_reference"] for i in summary["open_items"]]
    paid_again = await start_intent(api, account, customer(account))
    assert paid_again.status_code == 422 and paid_again.json()["code"] == "nothing_owed", paid_again.text


async def test_an_intent_for_an_unknown_item_is_refused_before_stripe_is_asked(harness: Harness) -> None:
    api = harness.api
    account, _ = await seeded(api)
    before = len(harness.stripe.intents)
    response = await api.client.post(
        f"/accounts/{account}/payment-intents",
        json={"payment_type": "bill", "item_reference": "INV-NOPE"},
        headers=customer(account) | {"Idempotency-Key": f"intent-{uuid.uuid4()}"},
    )
    assert response.status_code == 404 and response.json()["code"] == "unknown_item"
    assert len(harness.stripe.intents) == before


async def test_preview_returns_the_analysis_and_problems_and_writes_nothing(harness: Harness) -> None:
    api = harness.api
    account, _ = await seeded(api)
    headers = api.auth(Role.RECOVERY_EXECUTIVE)

    async def count() -> int:
        async with api.service.sessions() as session:
            found = await session.scalar(
                select(func.count()).select_from(payments).where(payments.c.account_number == account)
            )
            return int(found or 0)

    ok = await api.client.post(
        "/payments/preview",
        json=bill_payment(account, "150.00", method="Cash", cash_received="200.00"),
        headers=headers,
    )
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert body["valid"] is True and body["problems"] == []
    assert body["analysis"] == {"due": "145.50", "paid": "150.00", "difference": "4.50", "outcome": "over"}
    assert body["change_given"] == "50.00"

    wrong = await api.client.post(
        "/payments/preview",
        json=bill_payment(account, "5000.00", method="Cash", cash_received="10.00", channel="Pigeon"),
        headers=headers,
    )
    assert wrong.status_code == 200, wrong.text
    codes = [p["code"] for p in wrong.json()["problems"]]
    assert codes == ["unknown_channel", "amount_exceeds_outstanding", "cash_received_too_low"]
    assert wrong.json()["valid"] is False and wrong.json()["analysis"]["outcome"] == "over"

    unknown = await api.client.post(
        "/payments/preview", json=bill_payment(account, item_reference="INV-NOPE"), headers=headers
    )
    assert [p["code"] for p in unknown.json()["problems"]] == ["unknown_item"]
    assert unknown.json()["analysis"] is None
    # The same body POST /payments refuses with the first problem the preview names.
    refused = await api.pay(bill_payment(account, "5000.00"))
    assert refused.status_code == 422 and refused.json()["code"] == "amount_exceeds_outstanding"
    assert await count() == 0
    customer_preview = await api.client.post("/payments/preview", json=bill_payment(account), headers=customer(account))
    assert customer_preview.status_code == 403
