"""Read models kept from other systems' events: what each account owes (billing), and credit notes against it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments.commands import allocate, audit, lock_item
from services.payments.storage import accounts, payments, receivables
from shared.contracts import Envelope, Topic, parse_data
from shared.contracts.events import (
    AccountUpserted,
    BillIssued,
    CreditNoteApplied,
    CreditNoteIssued,
    InstallmentPlanCreated,
    PaymentType,
    ServiceChargeIssued,
)
from shared.messaging import Subscription

# --- billing.receivables.v1: the accounts and the items they owe ---


async def on_account_upserted(session: AsyncSession, envelope: Envelope) -> None:
    account = parse_data(envelope, AccountUpserted)
    values = account.model_dump(exclude={"current_balance"})
    if account.current_balance is not None:
        # Billing's statement already includes everything it knew: count our collections afresh from here.
        values |= {"reported_balance": account.current_balance.amount, "collected_since_report": Decimal(0)}
    await session.execute(
        pg_insert(accounts).values(**values).on_conflict_do_update(index_elements=["account_number"], set_=values)
    )


async def _upsert_receivable(session: AsyncSession, values: dict[str, Any]) -> None:
    # A re-issued item updates its description and dates but never resets what was already paid.
    await session.execute(
        pg_insert(receivables)
        .values(**values)
        .on_conflict_do_update(
            index_elements=["payment_type", "item_reference"],
            set_={k: values[k] for k in ("description", "period_or_date", "issued_on", "due_date")},
        )
    )


async def on_bill_issued(session: AsyncSession, envelope: Envelope) -> None:
    bill = parse_data(envelope, BillIssued)
    await _upsert_receivable(
        session,
        {
            "payment_type": PaymentType.BILL,
            "item_reference": bill.invoice_number,
            "account_number": bill.account_number,
            "description": f"Bill {bill.billing_period}",
            "period_or_date": bill.billing_period,
            "issued_on": bill.issued_on,
            "due_date": bill.due_date,
            "amount": bill.amount.amount,
            "outstanding": bill.amount.amount,
            "currency": bill.amount.currency,
        },
    )


async def on_service_charge_issued(session: AsyncSession, envelope: Envelope) -> None:
    charge = parse_data(envelope, ServiceChargeIssued)
    await _upsert_receivable(
        session,
        {
            "payment_type": PaymentType.SERVICE,
            "item_reference": charge.service_charge_id,
            "account_number": charge.account_number,
            "description": charge.description,
            "period_or_date": charge.service_date.isoformat(),
            "issued_on": charge.service_date,
            "due_date": charge.due_date,
            "amount": charge.amount.amount,
            "outstanding": charge.amount.amount,
            "currency": charge.amount.currency,
        },
    )


async def on_installment_plan_created(session: AsyncSession, envelope: Envelope) -> None:
    plan = parse_data(envelope, InstallmentPlanCreated)
    for installment in plan.installments:
        await _upsert_receivable(
            session,
            {
                "payment_type": PaymentType.INSTALLMENT,
                "item_reference": f"{plan.plan_id}/{installment.number}",
                "account_number": plan.account_number,
                "description": f"Plan {plan.plan_id} installment {installment.number}",
                "period_or_date": installment.due_date.isoformat(),
                "issued_on": plan.created_on,
                "due_date": installment.due_date,
                "amount": installment.amount.amount,
                "outstanding": installment.amount.amount,
                "currency": installment.amount.currency,
            },
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
    await audit(
        session,
        applied.applied_by,
        "credit_note.applied",
        applied.item_reference,
        {"credit_note_number": applied.credit_note_number, "applied": str(amount)},
    )


def subscriptions() -> list[Subscription]:
    """The event consumers of billing's receivables and of credit notes."""
    return [
        Subscription(
            "billing",
            Topic.BILLING_RECEIVABLES,
            {
                "account.upserted": on_account_upserted,
                "bill.issued": on_bill_issued,
                "service_charge.issued": on_service_charge_issued,
                "installment_plan.created": on_installment_plan_created,
            },
        ),
        Subscription(
            "credit_notes",
            Topic.CREDITNOTES_EVENTS,
            {"credit_note.issued": on_credit_note_issued, "credit_note.applied": on_credit_note_applied},
        ),
    ]
