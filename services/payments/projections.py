"""Read models kept from other systems' events: what each account owes (billing), and credit notes against it."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments.commands import allocate, lock_item
from services.payments.storage import accounts, audit_log, payments, receivables
from shared import audit
from shared.contracts import Envelope, Topic, parse_data
from shared.contracts.events import AccountUpserted, CreditNoteApplied, CreditNoteIssued
from shared.messaging import Subscription
from shared.receivables import ITEM_EVENT_TYPES, billing_account, receivable_items

# --- billing.receivables.v1: the accounts and the items they owe ---


async def on_account_upserted(session: AsyncSession, envelope: Envelope) -> None:
    account = billing_account(parse_data(envelope, AccountUpserted))
    values = account.as_row()
    if account.reported_balance is not None:
        # Billing's statement already includes everything it knew: count our collections afresh from here.
        values |= {"reported_balance": account.reported_balance, "collected_since_report": Decimal(0)}
    await session.execute(
        pg_insert(accounts).values(**values).on_conflict_do_update(index_elements=["account_number"], set_=values)
    )


async def on_receivable_issued(session: AsyncSession, envelope: Envelope) -> None:
    """A bill, a service charge, or an installment plan (one item per installment)."""
    for item in receivable_items(envelope):
        values = item.as_row() | {"outstanding": item.amount}
        # A re-issued item updates its description and dates but never resets what was already paid.
        await session.execute(
            pg_insert(receivables)
            .values(**values)
            .on_conflict_do_update(
                index_elements=["payment_type", "item_reference"],
                set_={k: values[k] for k in ("description", "period_or_date", "issued_on", "due_date")},
            )
        )


# --- creditnotes.events.v1 ---


async def on_credit_note_issued(session: AsyncSession, envelope: Envelope) -> None:
    note = parse_data(envelope, CreditNoteIssued)
    # The detail view shows the first credit note a payment generated.
    await session.execute(
        update(payments)
        .where(payments.c.receipt_number == note.receipt_number, payments.c.credit_note_number.is_(None))
        .values(credit_note_number=note.credit_note_number, credit_note_amount=note.amount.amount)
    )


async def on_credit_note_applied(session: AsyncSession, envelope: Envelope) -> None:
    applied = parse_data(envelope, CreditNoteApplied)
    item = await lock_item(session, applied.account_number, applied.payment_type, applied.item_reference)
    # Credit notes checked the item was open; never let the read model go below zero if it raced a payment.
    amount = min(applied.applied.amount, item.outstanding)
    await allocate(session, applied.account_number, item, amount)
    await audit.record(
        session,
        audit_log,
        actor=applied.applied_by,
        action="credit_note.applied",
        subject=applied.item_reference,
        after={"credit_note_number": applied.credit_note_number, "applied": amount},
    )


def subscriptions() -> list[Subscription]:
    """The event consumers of billing's receivables and of credit notes."""
    return [
        Subscription(
            "billing",
            Topic.BILLING_RECEIVABLES,
            {
                "account.upserted": on_account_upserted,
                **dict.fromkeys(ITEM_EVENT_TYPES, on_receivable_issued),
            },
        ),
        Subscription(
            "credit_notes",
            Topic.CREDITNOTES_EVENTS,
            {"credit_note.issued": on_credit_note_issued, "credit_note.applied": on_credit_note_applied},
        ),
    ]
