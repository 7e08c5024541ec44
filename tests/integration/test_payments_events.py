"""Payments fed by other systems (gateway, enterprise commands, credit notes) and under concurrency, on the real
database and broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from services.payments.storage import audit_log, payments, plumbing, receivables
from shared.auth import Role
from shared.contracts import Envelope, Topic, dlq, new_envelope
from shared.contracts.events import (
    CreditNoteApplied,
    CreditNoteIssued,
    GatewayPaymentStatusChanged,
    GatewaySettlementStatusChanged,
    Money,
    PaymentRecordRequested,
    PaymentType,
)
from tests.conftest import Infra
from tests.support.helpers import eventually, publish, read_topic
from tests.support.payments import Api, bill_payment, payments_api, seeded, year_of

pytestmark = pytest.mark.kafka


def started(account: str) -> datetime:
    """When the test consumer's online payment starts: in its own far-off year (see `year_of`)."""
    return datetime(year_of(account), 4, 18, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
async def api(infra: Infra) -> AsyncIterator[Api]:
    async for running_api in payments_api(infra):
        yield running_api


def gateway_event(account: str, intent: str, status: str, webhook: str, settlement: str, at: datetime) -> Envelope:
    data = GatewayPaymentStatusChanged(
        gateway_event_id=f"evt_{uuid.uuid4().hex[:12]}",
        payment_intent_id=intent,
        account_number=account,
        payment_type=PaymentType.BILL,
        item_reference=f"INV-{account}-1",
        amount=Money(amount=Decimal("145.50")),
        gateway_status=status,
        webhook_status=webhook,
        settlement_status=settlement,
        occurred_at=at,
    )
    return new_envelope("gateway.payment_status_changed", source="gateway_bridge", subject=account, data=data)


def settlement_event(
    account: str, intent: str, payout: str, webhook: str | None, settlement: str, at: datetime
) -> Envelope:
    data = GatewaySettlementStatusChanged(
        gateway_event_id=f"evt_{uuid.uuid4().hex[:12]}",
        payment_intent_id=intent,
        payout_id="po_1",
        payout_status=payout,
        webhook_status=webhook,
        settlement_status=settlement,
        occurred_at=at,
    )
    return new_envelope("gateway.settlement_status_changed", source="gateway_bridge", subject=account, data=data)


async def online_payment(api: Api, account: str) -> dict[str, Any]:
    async def found() -> dict[str, Any] | None:
        rows = (await api.get("/payments", q=account)).json()["payments"]
        if not rows:
            return None
        return dict((await api.get(f"/payments/{rows[0]['receipt_number']}")).json())

    return await eventually(found)


async def outstanding(api: Api, account: str, reference: str) -> Decimal:
    async with api.service.sessions() as session:
        value = (
            await session.execute(select(receivables.c.outstanding).where(receivables.c.item_reference == reference))
        ).scalar_one()
    return Decimal(value)


# --- online payments (AC 18, 22, 23) ---


async def test_ac18_online_statuses_follow_the_gateway_mapping_and_only_move_forward(api: Api) -> None:
    account, _ = await seeded(api)
    start = started(account)
    intent = f"pi_{uuid.uuid4().hex[:16]}"
    processing = gateway_event(account, intent, "processing", "Not Confirmed", "N/A", start)
    await publish(api.bootstrap, Topic.GATEWAY_EVENTS, [processing])
    pending = await online_payment(api, account)
    assert (pending["status"], pending["payment_information"]["webhook_status"]) == ("Pending", "Not Confirmed")
    assert await outstanding(api, account, f"INV-{account}-1") == Decimal("145.50"), "nothing allocated yet"

    succeeded = gateway_event(account, intent, "succeeded", "In Settlement", "In Progress", start + timedelta(hours=1))
    late = gateway_event(account, intent, "processing", "Not Confirmed", "N/A", start + timedelta(minutes=30))
    failed_after = gateway_event(account, intent, "failed", "Failed", "N/A", start + timedelta(hours=2))
    await publish(api.bootstrap, Topic.GATEWAY_EVENTS, [succeeded, late, failed_after])

    async def posted() -> dict[str, Any] | None:
        payment = await online_payment(api, account)
        return payment if payment["status"] == "Posted" else None

    payment = await eventually(posted)
    await eventually(lambda: _applied(api, late, failed_after))
    payment = await online_payment(api, account)
    assert payment["status"] == "Posted", "a late processing and a failed after succeeded never un-post"
    info = payment["payment_information"]
    assert (info["channel"], info["webhook_status"], info["settlement_status"]) == (
        "Online",
        "In Settlement",
        "In Progress",
    )
    assert payment["received_by"] == "System"
    assert await outstanding(api, account, f"INV-{account}-1") == Decimal("0.00")


async def _applied(api: Api, *envelopes: Envelope) -> bool:
    """Every one of these events has been through payments' inbox."""
    async with api.service.sessions() as session:
        seen = (
            await session.execute(select(func.count()).where(plumbing.inbox.c.event_id.in_([e.id for e in envelopes])))
        ).scalar_one()
    return seen == len(envelopes)


async def test_ac22_online_processing_time_is_the_days_from_start_to_settlement(api: Api) -> None:
    account, _ = await seeded(api)
    start = started(account)
    intent = f"pi_{uuid.uuid4().hex[:16]}"
    settled_at = start + timedelta(days=2, hours=7, minutes=12)  # 2.3 days
    await publish(
        api.bootstrap,
        Topic.GATEWAY_EVENTS,
        [
            gateway_event(account, intent, "succeeded", "In Settlement", "In Progress", start),
            settlement_event(account, intent, "paid", "Settled", "Success", settled_at),
        ],
    )

    async def settled() -> dict[str, Any] | None:
        payment = await online_payment(api, account)
        return payment if payment["payment_information"]["settlement_status"] == "Success" else None

    payment = await eventually(settled)
    assert payment["processing_time"] == "2.3 days"
    assert payment["payment_information"]["webhook_status"] == "Settled"


async def test_ac23_an_online_payment_is_pending_verification_until_a_billing_manager_verifies_it(api: Api) -> None:
    account, _ = await seeded(api)
    start = started(account)
    intent = f"pi_{uuid.uuid4().hex[:16]}"
    await publish(
        api.bootstrap,
        Topic.GATEWAY_EVENTS,
        [gateway_event(account, intent, "succeeded", "In Settlement", "In Progress", start)],
    )
    payment = await eventually(lambda: _posted_online(api, account))
    assert payment["verification"] == "Pending" and payment["processing"]["can_verify"] is True

    path = f"/payments/{payment['payment_id']}/verify"
    verified = await api.client.post(path, headers=api.auth(Role.BILLING_MANAGER, "Bill Manager"))
    assert verified.status_code == 200, verified.text
    assert verified.json()["verification"] == "Verified"
    assert verified.json()["processing"]["verified_by"] == "Bill Manager"
    again = await api.client.post(path, headers=api.auth(Role.BILLING_MANAGER))
    assert again.status_code == 422 and again.json()["code"] == "already_verified"


async def _posted_online(api: Api, account: str) -> dict[str, Any] | None:
    payment = await online_payment(api, account)
    return payment if payment["status"] == "Posted" else None


async def test_a_refund_takes_the_money_back_off_the_bill(api: Api) -> None:
    account, _ = await seeded(api)
    start = started(account)
    intent = f"pi_{uuid.uuid4().hex[:16]}"
    await publish(
        api.bootstrap,
        Topic.GATEWAY_EVENTS,
        [
            gateway_event(account, intent, "succeeded", "In Settlement", "In Progress", start),
            gateway_event(account, intent, "refunded", "Refunded", "In Progress", start + timedelta(days=1)),
        ],
    )

    async def refunded() -> bool:
        return bool((await online_payment(api, account))["status"] == "Refunded")

    await eventually(refunded)
    assert await outstanding(api, account, f"INV-{account}-1") == Decimal("145.50")


async def test_a_gateway_event_for_an_unknown_account_goes_to_the_dlq(api: Api) -> None:
    ghost = f"GHOST-{uuid.uuid4().hex[:8]}"
    await publish(
        api.bootstrap,
        Topic.GATEWAY_EVENTS,
        [gateway_event(ghost, "pi_ghost", "succeeded", "In Settlement", "In Progress", datetime.now(UTC))],
    )

    async def dead_lettered() -> bool:
        records = await read_topic(api.bootstrap, dlq(Topic.GATEWAY_EVENTS))
        return any(r.key == ghost.encode() and b"unknown_account" in dict(r.headers)["x-dlq-reason"] for r in records)

    await eventually(dead_lettered)


# --- payments.commands.v1 ---


def command(account: str, source: str, **overrides: Any) -> Envelope:
    data = PaymentRecordRequested(
        account_number=account,
        payment_type=PaymentType.BILL,
        item_reference=f"INV-{account}-1",
        method="Bank Transfer",
        amount=Decimal("145.50"),
        payment_date=started(account).date(),
    ).model_copy(update=overrides)
    return new_envelope("payment.record_requested", source=source, subject=account, data=data)


async def test_a_command_from_another_system_posts_once_received_by_that_system(api: Api) -> None:
    account, _ = await seeded(api)
    request = command(account, "lockbox")
    await publish(api.bootstrap, Topic.PAYMENTS_COMMANDS, [request, request, request])
    payment = await eventually(lambda: _posted_online(api, account))
    assert (payment["received_by"], payment["verification"]) == ("lockbox", "Verified")
    assert payment["payment_information"]["channel"] == "Walk-in"
    await eventually(lambda: _applied(api, request))
    async with api.service.sessions() as session:
        count = (await session.execute(select(func.count()).where(payments.c.account_number == account))).scalar_one()
    assert count == 1, "the command id makes redeliveries harmless"


async def test_an_invalid_command_goes_to_the_dlq_and_a_rejection_tells_the_sender_why(api: Api) -> None:
    account, _ = await seeded(api)
    bad = command(account, "pos-terminal-7", item_reference="INV-DOES-NOT-EXIST")
    await publish(api.bootstrap, Topic.PAYMENTS_COMMANDS, [bad])

    async def rejection() -> Any:
        records = await read_topic(api.bootstrap, Topic.PAYMENTS_EVENTS)
        return next(
            (r for r in records if b'"payment.record_rejected"' in r.value and str(bad.id).encode() in r.value), None
        )

    record = await eventually(rejection)
    assert b"item_reference" in record.value
    dead = [r for r in await read_topic(api.bootstrap, dlq(Topic.PAYMENTS_COMMANDS)) if r.key == account.encode()]
    assert len(dead) == 1 and b"unknown_item" in dict(dead[0].headers)["x-dlq-reason"]


# --- creditnotes.events.v1 ---


async def test_the_detail_view_shows_the_credit_note_and_an_applied_credit_lowers_what_is_owed(api: Api) -> None:
    account, name = await seeded(api)
    posted = (await api.pay(bill_payment(account, "150.00"))).json()
    now = datetime.now(UTC)
    issued = CreditNoteIssued(
        credit_note_number=f"CN-{uuid.uuid4().hex[:6]}",
        account_number=account,
        consumer_name=name,
        receipt_number=posted["receipt_number"],
        payment_id=posted["payment_id"],
        amount=Money(amount=Decimal("4.50")),
        reason="Overpayment",
        created_by="System",
        created_at=now,
        expires_at=now + timedelta(days=365),
    )
    applied = CreditNoteApplied(
        credit_note_number=issued.credit_note_number,
        account_number=account,
        payment_type=PaymentType.SERVICE,
        item_reference=f"SC-{account}-2",
        applied=Money(amount=Decimal("4.50")),
        remaining=Money(amount=Decimal("0.00")),
        status="Applied",
        applied_by="Jane Smith",
        applied_at=now,
    )
    await publish(
        api.bootstrap,
        Topic.CREDITNOTES_EVENTS,
        [
            new_envelope(t, source="credit_notes", subject=account, data=d)
            for t, d in (("credit_note.issued", issued), ("credit_note.applied", applied))
        ],
    )

    async def shown() -> dict[str, Any] | None:
        note: dict[str, Any] | None = (await api.get(f"/payments/{posted['payment_id']}")).json()["credit_note"]
        return note

    note = await eventually(shown)
    assert note == {
        "credit_note_number": issued.credit_note_number,
        "amount": {"amount": "4.50", "currency": "USD", "display": "$4.50"},
    }

    async def late_fee_left() -> bool:
        return await outstanding(api, account, f"SC-{account}-2") == Decimal("20.50")

    await eventually(late_fee_left)


# --- must hold: concurrency and idempotency on the real database ---


async def test_1000_concurrent_payments_for_one_bill_never_allocate_more_than_allowed(api: Api) -> None:
    account, _ = await seeded(api)
    threshold = (await api.get("/settings/overpayment-threshold")).json()["overpayment_threshold"]
    admin = api.auth(Role.ADMIN)
    await api.client.put("/settings/overpayment-threshold", json={"amount": "0.00"}, headers=admin)
    try:
        # 1,000 at once outnumber the connection pool: a request that waits too long is a 503 and is retried.
        responses = await asyncio.gather(*(api.pay_retrying(bill_payment(account, "1.00")) for _ in range(1000)))
    finally:
        await api.client.put("/settings/overpayment-threshold", json={"amount": threshold}, headers=admin)

    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == 145, "145 x 1.00 fit in 145.50; the 146th would overpay with no threshold"
    assert statuses.count(422) == 855
    assert {r.json()["field"] for r in responses if r.status_code == 422} == {"amount"}
    assert await outstanding(api, account, f"INV-{account}-1") == Decimal("0.50")
    async with api.service.sessions() as session:
        applied = (
            await session.execute(select(func.sum(payments.c.applied)).where(payments.c.account_number == account))
        ).scalar_one()
    assert applied == Decimal("145.00")
    receipts = {r.json()["receipt_number"] for r in responses if r.status_code == 201}
    assert len(receipts) == 145, "every posted payment has its own receipt number"


async def test_the_same_key_retried_100_times_at_once_posts_once(api: Api) -> None:
    account, _ = await seeded(api)
    key = f"retry-{uuid.uuid4()}"
    body = bill_payment(account, "100.00")
    responses = await asyncio.gather(*(api.pay_retrying(body, key=key) for _ in range(100)))
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["payment_id"] for r in responses}) == 1
    async with api.service.sessions() as session:
        count = (await session.execute(select(func.count()).where(payments.c.account_number == account))).scalar_one()
    assert count == 1
    assert await outstanding(api, account, f"INV-{account}-1") == Decimal("45.50")


async def test_a_partial_refund_keeps_the_payment_posted_and_a_payout_failing_after_paid_is_failed(api: Api) -> None:
    account, _ = await seeded(api)
    start = started(account)
    intent = f"pi_{uuid.uuid4().hex[:16]}"
    partial = gateway_event(
        account, intent, "partially_refunded", "Refunded", "In Progress", start + timedelta(hours=3)
    )
    paid = settlement_event(account, intent, "paid", "Settled", "Success", start + timedelta(days=2))
    failed = settlement_event(account, intent, "failed", None, "Failed", start + timedelta(days=3))
    await publish(
        api.bootstrap,
        Topic.GATEWAY_EVENTS,
        [gateway_event(account, intent, "succeeded", "In Settlement", "In Progress", start), partial, paid, failed],
    )
    await eventually(lambda: _applied(api, partial, paid, failed))
    payment = await online_payment(api, account)
    assert payment["status"] == "Posted", "a partial refund does not un-post"
    info = payment["payment_information"]
    assert (info["webhook_status"], info["settlement_status"]) == ("Settled", "Failed"), (
        "failed keeps the webhook status"
    )
    async with api.service.sessions() as session:
        actions = (
            await session.execute(select(audit_log.c.action).where(audit_log.c.subject == payment["payment_id"]))
        ).scalars()
        assert "payment.partially_refunded" in set(actions)
