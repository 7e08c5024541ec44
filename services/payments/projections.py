"""Read models kept from other systems' events: what each account owes (billing), and the credit made from its
payments (credit_notes): issued, applied, expired, voided, refunded."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from sqlalchemy import case, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments.commands import SYSTEM, allocate, lock_item
from services.payments.storage import accounts, audit_log, credit_balances, payments, receivables
from shared import audit, ledger
from shared.contracts import Envelope, Topic, counts_as_collected, parse_data
from shared.contracts.events import (
    AccountUpserted,
    CreditNoteApplied,
    CreditNoteExpired,
    CreditNoteIssued,
    CreditNoteRefundRequested,
    CreditNoteVoided,
)
from shared.messaging import Applying, Subscription
from shared.receivables import (
    ITEM_EVENT_TYPES,
    REISSUE_CHANGES,
    billing_account,
    latest_accounts,
    latest_items,
    receivable_items,
)

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


async def on_billing_batch(session: AsyncSession, batch: Sequence[Applying]) -> None:
    """A delivery batch of billing events in two statements, leaving what the handlers above would one by one:
    month-end brings a bill for every account at once."""
    described = latest_accounts(
        billing_account(parse_data(a.envelope, AccountUpserted)) for a in batch if a.envelope.type == "account.upserted"
    )
    # Each statement is executed with many rows: compiled once and cached, where .values([...]) compiles each time.
    if described:
        statement = pg_insert(accounts)
        reported = statement.excluded.reported_balance
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=["account_number"],
                set_={
                    **{name: statement.excluded[name] for name in described[0].as_row() if name != "account_number"},
                    # A description without billing's figure leaves the figure and what was collected since.
                    "reported_balance": func.coalesce(reported, accounts.c.reported_balance),
                    "collected_since_report": case(
                        (reported.is_(None), accounts.c.collected_since_report), else_=Decimal(0)
                    ),
                },
            ),
            [account.as_row() | {"reported_balance": account.reported_balance} for account in described],
        )
    issued = latest_items(
        item for a in batch if a.envelope.type in ITEM_EVENT_TYPES for item in receivable_items(a.envelope)
    )
    if issued:
        statement = pg_insert(receivables)
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=["payment_type", "item_reference"],
                set_={name: statement.excluded[name] for name in REISSUE_CHANGES},
            ),
            [item.as_row() | {"outstanding": item.amount} for item in issued],
        )


# --- creditnotes.events.v1 ---


async def on_credit_note_issued(session: AsyncSession, envelope: Envelope) -> None:
    """New credit on the account, made from a payment: the part of the payment that settled nothing first, then its
    settlement (by the ledger rule credit_notes applies too), so the same money is never both."""
    note = parse_data(envelope, CreditNoteIssued)
    first_sight = (
        await session.execute(
            pg_insert(credit_balances)
            .values(
                credit_note_number=note.credit_note_number,
                account_number=note.account_number,
                receipt_number=note.receipt_number,
                amount=note.amount.amount,
                remaining=note.amount.amount,
                currency=note.amount.currency,
                status="Active",
                reason=note.reason,
                created_at=note.created_at,
                expires_at=note.expires_at,
            )
            .on_conflict_do_nothing()
            .returning(credit_balances.c.credit_note_number)
        )
    ).first()
    if first_sight is None:
        return
    payment = (
        await session.execute(
            select(payments).where(payments.c.receipt_number == note.receipt_number).with_for_update()
        )
    ).first()
    if payment is None:
        return
    credited = payment.credited + note.amount.amount
    values: dict[str, object] = {"credited": credited}
    if payment.credit_note_number is None:
        values |= {"credit_note_number": note.credit_note_number, "credit_note_amount": note.amount.amount}
    applied = ledger.settled_after_credit(payment.applied, payment.amount, refunded=payment.refunded, credited=credited)
    if counts_as_collected(payment.status) and applied < payment.applied:
        item = await lock_item(session, payment.account_number, payment.payment_type, payment.item_reference)
        await allocate(session, payment.account_number, item, applied - payment.applied)
        values["applied"] = applied
        await audit.record(
            session,
            audit_log,
            actor=note.created_by,
            action="payment.credited",
            subject=payment.payment_id,
            before={"applied": payment.applied},
            after={"applied": applied, "credit_note_number": note.credit_note_number, "item": payment.item_reference},
            reason=f"credit note {note.credit_note_number} turned part of the payment into credit",
        )
    await session.execute(update(payments).where(payments.c.payment_id == payment.payment_id).values(**values))


async def _credit_balance(session: AsyncSession, number: str, **values: object) -> None:
    await session.execute(
        update(credit_balances).where(credit_balances.c.credit_note_number == number).values(**values)
    )


async def on_credit_note_applied(session: AsyncSession, envelope: Envelope) -> None:
    applied = parse_data(envelope, CreditNoteApplied)
    item = await lock_item(session, applied.account_number, applied.payment_type, applied.item_reference)
    # Credit notes checked the item was open; never let the read model go below zero if it raced a payment.
    amount = min(applied.applied.amount, item.outstanding)
    await allocate(session, applied.account_number, item, amount)
    await _credit_balance(
        session, applied.credit_note_number, remaining=applied.remaining.amount, status=applied.status
    )
    await audit.record(
        session,
        audit_log,
        actor=applied.applied_by,
        action="credit_note.applied",
        subject=applied.item_reference,
        after={"credit_note_number": applied.credit_note_number, "applied": amount},
    )


async def on_credit_note_expired(session: AsyncSession, envelope: Envelope) -> None:
    expired = parse_data(envelope, CreditNoteExpired)
    await _credit_balance(session, expired.credit_note_number, status="Expired")


async def on_credit_note_refund_requested(session: AsyncSession, envelope: Envelope) -> None:
    refund = parse_data(envelope, CreditNoteRefundRequested)
    await _credit_balance(session, refund.credit_note_number, remaining=0, status="Refunded")


async def on_credit_note_voided(session: AsyncSession, envelope: Envelope) -> None:
    """Credit given back because its money went back: applications reversed make their items owed again."""
    voided = parse_data(envelope, CreditNoteVoided)
    await _credit_balance(session, voided.credit_note_number, remaining=voided.remaining.amount, status=voided.status)
    given_back = voided.voided.amount
    for reversal in voided.reversed:
        item = await lock_item(session, voided.account_number, reversal.payment_type, reversal.item_reference)
        # Never owed more than billed, whatever order the read model saw things in.
        amount = min(reversal.amount.amount, item.amount - item.outstanding)
        await allocate(session, voided.account_number, item, -amount)
        given_back += reversal.amount.amount
        await audit.record(
            session,
            audit_log,
            actor=voided.voided_by or SYSTEM,
            action="credit_note.reversed",
            subject=reversal.item_reference,
            before={"outstanding": item.outstanding},
            after={
                "outstanding": item.outstanding + amount,
                "credit_note_number": voided.credit_note_number,
                "application_id": reversal.application_id,
                "reversed": amount,
            },
            reason=voided.reason,
        )
    await session.execute(
        update(payments)
        .where(payments.c.receipt_number == voided.receipt_number)
        .values(credited=func.greatest(payments.c.credited - given_back, 0))
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
            batch_handler=on_billing_batch,
        ),
        Subscription(
            "credit_notes",
            Topic.CREDITNOTES_EVENTS,
            {
                "credit_note.issued": on_credit_note_issued,
                "credit_note.applied": on_credit_note_applied,
                "credit_note.expired": on_credit_note_expired,
                "credit_note.voided": on_credit_note_voided,
                "credit_note.refund_requested": on_credit_note_refund_requested,
            },
        ),
    ]
