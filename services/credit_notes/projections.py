"""Credit notes' read models, kept from other services' events: the payments credit notes are made from, and the
bills, service charges and installments a credit note can be applied to."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Row, func, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.credit_notes import domain
from services.credit_notes.commands import AutomaticCreditNotes
from services.credit_notes.queries import locked_payment
from services.credit_notes.storage import open_items, payments
from shared.contracts import Envelope, PaymentStatus, Topic, parse_data
from shared.contracts.events import PaymentCancelled, PaymentPosted, PaymentStatusChanged
from shared.errors import Rejected
from shared.messaging import Subscription
from shared.receivables import ITEM_EVENT_TYPES, receivable_items

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
    """A bill, a service charge, or each installment of a plan: an item a credit note can be applied to."""
    for item in receivable_items(envelope):
        await _upsert_item(session, item.as_row(*ITEM_COLUMNS))


# --- payments.events.v1: the payments credit notes are made from ---


async def _add_to_item(
    session: AsyncSession, payment_type: str, item_reference: str, account: str, paid: Decimal
) -> None:
    """Add (or with a negative amount, take back) what a payment settled on an item, seen or not yet seen."""
    statement = pg_insert(open_items).values(
        payment_type=payment_type, item_reference=item_reference, account_number=account, paid=max(paid, Decimal(0))
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["payment_type", "item_reference"],
            set_={"paid": func.greatest(open_items.c.paid + paid, 0)},
        )
    )


async def on_payment_posted(session: AsyncSession, envelope: Envelope) -> None:
    posted = parse_data(envelope, PaymentPosted)
    allocated = min(posted.amount.amount, posted.item.due.amount)
    details = {
        "payment_date": posted.payment_date,
        "method": posted.method,
        "channel": posted.channel,
        "payment_type": posted.item.payment_type.value,
        "item_reference": posted.item.item_reference,
        "allocated": allocated,
    }
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
        await _add_to_item(
            session, posted.item.payment_type, posted.item.item_reference, posted.consumer.account_number, allocated
        )


async def on_payment_cancelled(session: AsyncSession, envelope: Envelope) -> None:
    cancelled = parse_data(envelope, PaymentCancelled)
    payment = await locked_payment(session, cancelled.receipt_number)
    if payment is None:
        raise Rejected("unknown_payment", f"payment {cancelled.receipt_number} was never posted")
    if payment.status == PaymentStatus.CANCELLED:
        return
    await _close_payment(session, payment, PaymentStatus.CANCELLED, cancelled_at=cancelled.cancelled_at)


async def on_payment_status_changed(session: AsyncSession, envelope: Envelope) -> None:
    """A refunded payment (its money went back through the gateway) gets no new credit notes."""
    changed = parse_data(envelope, PaymentStatusChanged)
    if changed.status != PaymentStatus.REFUNDED:
        return
    payment = await locked_payment(session, changed.receipt_number)
    # Never posted (a refund of a payment that never counted) or already closed: nothing to take back.
    if payment is None or payment.status != PaymentStatus.POSTED:
        return
    await _close_payment(session, payment, PaymentStatus.REFUNDED)


async def _close_payment(session: AsyncSession, payment: Row[Any], status: str, **values: Any) -> None:
    await session.execute(
        update(payments).where(payments.c.receipt_number == payment.receipt_number).values(status=status, **values)
    )
    if payment.payment_type is not None:
        # Payments reversed the allocation, so the item is owed again.
        await _add_to_item(
            session, payment.payment_type, payment.item_reference, payment.account_number, -payment.allocated
        )


def subscriptions(number_format: domain.NumberFormat) -> list[Subscription]:
    """The service's subscriptions. `payment.overpaid` is a command in effect (it issues a credit note), but it
    arrives on the payments topic with the events that keep the payments read model, so it shares their
    subscription (and its order within a partition: a payment is posted before it is credited)."""
    automatic = AutomaticCreditNotes(number_format)
    return [
        Subscription(
            "payments",
            Topic.PAYMENTS_EVENTS,
            {
                "payment.posted": on_payment_posted,
                "payment.overpaid": automatic.on_payment_overpaid,
                "payment.cancelled": on_payment_cancelled,
                "payment.status_changed": on_payment_status_changed,
            },
        ),
        Subscription(
            "billing",
            Topic.BILLING_RECEIVABLES,
            dict.fromkeys(ITEM_EVENT_TYPES, on_receivable_issued),
        ),
    ]
