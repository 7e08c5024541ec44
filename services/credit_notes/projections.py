"""Credit notes' read models, kept from other services' events: the payments credit notes are made from, and the
bills, service charges and installments a credit note can be applied to."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.credit_notes import domain
from services.credit_notes.batches import PaymentBatches, posting_details
from services.credit_notes.commands import AutomaticCreditNotes, add_to_item
from services.credit_notes.queries import load_policy, locked_payment
from services.credit_notes.reversals import auto_apply, void_payment_credit
from services.credit_notes.storage import credit_notes, open_items, payments
from shared.contracts import Envelope, PaymentStatus, Topic, parse_data
from shared.contracts.events import (
    PaymentAdjusted,
    PaymentCancelled,
    PaymentPartiallyRefunded,
    PaymentPosted,
    PaymentStatusChanged,
    PaymentType,
)
from shared.errors import Rejected
from shared.messaging import Applying, EventHandler, Subscription
from shared.receivables import ITEM_EVENT_TYPES, latest_items, receivable_items

# --- billing.receivables.v1: what a credit note can be applied to ---

# The part of a receivable item `open_items` keeps.
ITEM_COLUMNS = ("payment_type", "item_reference", "account_number", "description", "due_date", "amount", "currency")


async def _upsert_item(session: AsyncSession, values: dict[str, Any]) -> None:
    # What was paid or credited is kept when billing re-issues an item.
    await session.execute(
        pg_insert(open_items)
        .values(**values)
        .on_conflict_do_update(
            index_elements=["payment_type", "item_reference"],
            set_={k: v for k, v in values.items() if k not in ("payment_type", "item_reference")},
        )
    )


async def on_receivable_issued(session: AsyncSession, envelope: Envelope) -> None:
    """A bill, a service charge, or each installment of a plan: an item a credit note can be applied to. A new
    bill is paid from the account's credit at once when the auto-apply policy says so."""
    for item in receivable_items(envelope):
        await _upsert_item(session, item.as_row(*ITEM_COLUMNS))
        if envelope.type == "bill.issued":
            await auto_apply(session, item.account_number, item.kind.value, item.reference)


# A re-issue replaces all of an item but its key.
ITEM_CHANGES = tuple(c for c in ITEM_COLUMNS if c not in ("payment_type", "item_reference"))


class OneByOne(Exception):
    """The batch needs the one-event-at-a-time path."""


async def on_billing_batch(session: AsyncSession, batch: Sequence[Applying]) -> None:
    """A delivery batch of billing events in one statement, leaving what `on_receivable_issued` would one by one.

    Only when no credit could pay a bill of the batch: which credit pays which bill depends on their order, so such a
    batch goes one event at a time."""
    issued = latest_items((item for a in batch for item in receivable_items(a.envelope)), ITEM_CHANGES)
    billed = {item.account_number for item in issued if item.kind is PaymentType.BILL}
    if billed and (await load_policy(session)).auto_apply_credit is not domain.AutoApply.OFF:
        with_credit = await session.execute(
            select(credit_notes.c.account_number)
            .where(
                credit_notes.c.account_number.in_(billed),
                credit_notes.c.status == domain.Status.ACTIVE.value,
            )
            .limit(1)
        )
        if with_credit.first() is not None:
            raise OneByOne("credit may pay a bill of this batch")
    if issued:
        statement = pg_insert(open_items)
        # Executed with many rows: compiled once and cached.
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=["payment_type", "item_reference"],
                set_={name: statement.excluded[name] for name in ITEM_CHANGES},
            ),
            [item.as_row(*ITEM_COLUMNS) for item in issued],
        )


# --- payments.events.v1: the payments credit notes are made from ---


async def on_payment_posted(session: AsyncSession, envelope: Envelope) -> None:
    posted = parse_data(envelope, PaymentPosted)
    details = posting_details(posted)
    statement = pg_insert(payments).values(
        receipt_number=posted.receipt_number,
        payment_id=posted.payment_id,
        account_number=posted.consumer.account_number,
        consumer_name=posted.consumer.name,
        amount=posted.amount.amount,
        currency=posted.amount.currency,
        status=PaymentStatus.POSTED,
        posted_at=posted.posted_at,
        **details,
    )
    # A row made from an earlier `payment.overpaid` lacks the item; a replayed `payment.posted` changes nothing.
    first_sight = (
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=["receipt_number"], set_=details, where=payments.c.payment_type.is_(None)
            ).returning(payments.c.receipt_number)
        )
    ).first()
    if first_sight is not None:
        await add_to_item(
            session,
            posted.item.payment_type,
            posted.item.item_reference,
            posted.consumer.account_number,
            details["allocated"],
        )


async def on_payment_cancelled(session: AsyncSession, envelope: Envelope) -> None:
    cancelled = parse_data(envelope, PaymentCancelled)
    payment = await locked_payment(session, cancelled.receipt_number)
    if payment is None:
        raise Rejected("unknown_payment", f"payment {cancelled.receipt_number} was never posted")
    if payment.status == PaymentStatus.CANCELLED:
        return
    await _close_payment(
        session,
        payment,
        PaymentStatus.CANCELLED,
        f"payment cancelled: {cancelled.reason}",
        cancelled_at=cancelled.cancelled_at,
    )


# The statuses in which a payment's money has gone back: its credit goes back with it.
_MONEY_WENT_BACK = {PaymentStatus.REFUNDED.value: "payment refunded", PaymentStatus.CHARGED_BACK.value: "dispute lost"}


async def on_payment_status_changed(session: AsyncSession, envelope: Envelope) -> None:
    """A refunded or charged-back payment (its money went back) gets no new credit notes, and its credit is void."""
    changed = parse_data(envelope, PaymentStatusChanged)
    reason = _MONEY_WENT_BACK.get(changed.status)
    if reason is None:
        return
    payment = await locked_payment(session, changed.receipt_number)
    # Never posted (a refund of a payment that never counted) or already closed: nothing to take back.
    if payment is None or payment.status != PaymentStatus.POSTED:
        return
    await _close_payment(session, payment, changed.status, reason)


async def _close_payment(session: AsyncSession, payment: Row[Any], status: str, reason: str, **values: Any) -> None:
    await session.execute(
        update(payments)
        .where(payments.c.receipt_number == payment.receipt_number)
        .values(status=status, allocated=0, **values)
    )
    if payment.payment_type is not None:
        # Payments reversed the allocation, so the item is owed again.
        await add_to_item(
            session, payment.payment_type, payment.item_reference, payment.account_number, -payment.allocated
        )
    # The money went back: so does all the credit made from it, used or not (reversal propagates).
    await void_payment_credit(session, payment.receipt_number, most=None, reason=reason)


async def on_payment_partially_refunded(session: AsyncSession, envelope: Envelope) -> None:
    """Part of a payment went back: payments took `settled_reduction` off its item; its credit gives back the rest."""
    refund = parse_data(envelope, PaymentPartiallyRefunded)
    payment = await locked_payment(session, refund.receipt_number)
    if payment is None:
        raise Rejected("unknown_payment", f"payment {refund.receipt_number} was never posted")
    reduction = min(refund.settled_reduction.amount, payment.allocated)
    await session.execute(
        update(payments)
        .where(payments.c.receipt_number == payment.receipt_number)
        .values(refunded=payments.c.refunded + refund.refunded.amount, allocated=payment.allocated - reduction)
    )
    if reduction > 0 and payment.payment_type is not None:
        await add_to_item(session, payment.payment_type, payment.item_reference, payment.account_number, -reduction)
    if refund.credit_to_void.amount > 0:
        await void_payment_credit(
            session, payment.receipt_number, most=refund.credit_to_void.amount, reason="payment partially refunded"
        )


async def on_payment_adjusted(session: AsyncSession, envelope: Envelope) -> None:
    """A payment moved to another item or its amount corrected: the old item is owed again, the new one settled."""
    adjusted = parse_data(envelope, PaymentAdjusted)
    payment = await locked_payment(session, adjusted.receipt_number)
    if payment is None:
        raise Rejected("unknown_payment", f"payment {adjusted.receipt_number} was never posted")
    account = adjusted.account_number
    previous = adjusted.previous_item
    await add_to_item(session, previous.payment_type, previous.item_reference, account, -payment.allocated)
    await add_to_item(
        session, adjusted.item.payment_type, adjusted.item.item_reference, account, adjusted.applied.amount
    )
    await session.execute(
        update(payments)
        .where(payments.c.receipt_number == payment.receipt_number)
        .values(
            amount=adjusted.amount.amount,
            payment_type=adjusted.item.payment_type.value,
            item_reference=adjusted.item.item_reference,
            allocated=adjusted.applied.amount,
        )
    )


def subscriptions(number_format: domain.NumberFormat) -> list[Subscription]:
    """The service's subscriptions. `payment.overpaid` is a command in effect (it issues a credit note), but it
    arrives on the payments topic with the events that keep the payments read model, so it shares their
    subscription (and its order within a partition: a payment is posted before it is credited)."""
    automatic = AutomaticCreditNotes(number_format)
    handlers: dict[str, EventHandler] = {
        "payment.posted": on_payment_posted,
        "payment.overpaid": automatic.on_payment_overpaid,
        "payment.cancelled": on_payment_cancelled,
        "payment.status_changed": on_payment_status_changed,
        "payment.partially_refunded": on_payment_partially_refunded,
        "payment.adjusted": on_payment_adjusted,
    }
    return [
        Subscription(
            "payments",
            Topic.PAYMENTS_EVENTS,
            handlers,
            batch_handler=PaymentBatches(handlers, number_format).apply,
        ),
        Subscription(
            "billing",
            Topic.BILLING_RECEIVABLES,
            dict.fromkeys(ITEM_EVENT_TYPES, on_receivable_issued),
            batch_handler=on_billing_batch,
        ),
    ]
