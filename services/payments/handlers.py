"""Payments' commands and event handlers. Each runs inside the caller's transaction and stages its events."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Sequence, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments import domain
from services.payments.storage import (
    accounts,
    audit_log,
    idempotency_keys,
    payment_id_seq,
    payments,
    receipt_number_seq,
    receivables,
    transaction_id_seq,
)
from shared.contracts import Envelope, Topic, new_envelope, parse_data
from shared.contracts.events import (
    AccountUpserted,
    BillIssued,
    ConsumerSnapshot,
    InstallmentPlanCreated,
    ItemSnapshot,
    Money,
    PaymentOverpaid,
    PaymentPosted,
    PaymentType,
    ServiceChargeIssued,
)
from shared.errors import Conflict, NotFound
from shared.money import quantize

SOURCE = "payments"
Stage = Callable[[AsyncSession, str, Envelope], Awaitable[None]]

# --- billing.receivables.v1: keep the read model of what each account owes ---


async def on_account_upserted(session: AsyncSession, envelope: Envelope) -> None:
    account = parse_data(envelope, AccountUpserted)
    values = account.model_dump()
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


BILLING_HANDLERS = {
    "account.upserted": on_account_upserted,
    "bill.issued": on_bill_issued,
    "service_charge.issued": on_service_charge_issued,
    "installment_plan.created": on_installment_plan_created,
}

# --- recording a payment ---


@dataclass(frozen=True)
class RecordPayment:
    account_number: str
    payment_type: PaymentType
    item_reference: str
    channel: str
    method: str
    amount: Decimal
    payment_date: date
    cash_received: Decimal | None = None
    notes: str | None = None

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.__dict__, default=str, sort_keys=True).encode()).hexdigest()


async def _next_number(session: AsyncSession, sequence: Sequence, kind: str, year: int) -> str:
    value = (await session.execute(select(sequence.next_value()))).scalar_one()
    return domain.DEFAULT_FORMATS[kind].render(int(value), year)


async def record_payment(
    session: AsyncSession,
    stage: Stage,
    command: RecordPayment,
    *,
    received_by: str,
    idempotency_key: str,
    overpayment_threshold: Decimal = Decimal("1000.00"),
) -> str:
    """Post a payment exactly once for `idempotency_key`; returns its payment id."""
    fingerprint = command.fingerprint()
    claimed = (
        await session.execute(
            pg_insert(idempotency_keys)
            .values(key=idempotency_key, request_hash=fingerprint)
            .on_conflict_do_nothing()
            .returning(idempotency_keys.c.key)
        )
    ).first()
    if claimed is None:
        earlier = (
            await session.execute(select(idempotency_keys).where(idempotency_keys.c.key == idempotency_key))
        ).one()
        if earlier.request_hash != fingerprint:
            raise Conflict("idempotency_key_reused", "this Idempotency-Key was used with a different request")
        return str(earlier.payment_id)

    account = (
        await session.execute(select(accounts).where(accounts.c.account_number == command.account_number))
    ).first()
    if account is None:
        raise NotFound("unknown_account", f"no consumer with account {command.account_number}", field="account_number")
    # Row lock: concurrent payments for one item allocate one after another, never beyond what is owed.
    item = (
        await session.execute(
            select(receivables)
            .where(
                receivables.c.payment_type == command.payment_type,
                receivables.c.item_reference == command.item_reference,
                receivables.c.account_number == command.account_number,
            )
            .with_for_update()
        )
    ).first()
    if item is None:
        raise NotFound(
            "unknown_item",
            f"no {command.payment_type} {command.item_reference} on this account",
            field="item_reference",
        )
    currency = item.currency
    amount = quantize(command.amount, currency)
    allocation = domain.allocate(item.outstanding, amount, overpayment_threshold)
    change = domain.change_given(amount, command.cash_received)
    analysis = domain.Analysis(due=item.outstanding, paid=amount)

    now = datetime.now(UTC)
    year = command.payment_date.year
    payment_id = await _next_number(session, payment_id_seq, "payment_id", year)
    transaction_id = await _next_number(session, transaction_id_seq, "transaction_id", year)
    receipt_number = await _next_number(session, receipt_number_seq, "receipt_number", year)

    await session.execute(
        update(receivables)
        .where(receivables.c.payment_type == item.payment_type, receivables.c.item_reference == item.item_reference)
        .values(outstanding=allocation.outstanding_after)
    )
    await session.execute(
        payments.insert().values(
            payment_id=payment_id,
            transaction_id=transaction_id,
            receipt_number=receipt_number,
            account_number=command.account_number,
            payment_type=command.payment_type,
            item_reference=command.item_reference,
            channel=command.channel,
            method=command.method,
            amount=amount,
            currency=currency,
            payment_date=command.payment_date,
            status="Posted",
            verification="Verified",
            received_by=received_by,
            due=analysis.due,
            applied=allocation.applied,
            outcome=analysis.outcome,
            cash_received=command.cash_received,
            change_given=change,
            notes=command.notes,
            posted_at=now,
        )
    )
    await session.execute(
        update(idempotency_keys).where(idempotency_keys.c.key == idempotency_key).values(payment_id=payment_id)
    )
    await session.execute(
        audit_log.insert().values(
            id=str(uuid.uuid4()),
            actor=received_by,
            action="payment.posted",
            subject=payment_id,
            details={"amount": str(amount), "item": command.item_reference, "receipt_number": receipt_number},
        )
    )

    consumer = ConsumerSnapshot(
        account_number=account.account_number,
        name=account.name,
        service_address=account.service_address,
        phone=account.phone,
        email=account.email,
    )
    posted = PaymentPosted(
        payment_id=payment_id,
        transaction_id=transaction_id,
        receipt_number=receipt_number,
        consumer=consumer,
        item=ItemSnapshot(
            payment_type=command.payment_type,
            item_reference=command.item_reference,
            description=item.description,
            period_or_date=item.period_or_date,
            issued_on=item.issued_on,
            due=Money(amount=analysis.due, currency=currency),
        ),
        channel=command.channel,
        method=command.method,
        amount=Money(amount=amount, currency=currency),
        payment_date=command.payment_date,
        posted_at=now,
        received_by=received_by,
        status="Posted",
        verification="Verified",
        difference=Money(amount=analysis.difference, currency=currency),
        outcome=analysis.outcome,
        cash_received=Money(amount=command.cash_received, currency=currency) if command.cash_received else None,
        change_given=Money(amount=change, currency=currency) if change is not None else None,
        notes=command.notes,
    )
    await stage(
        session,
        Topic.PAYMENTS_EVENTS,
        new_envelope("payment.posted", source=SOURCE, subject=command.account_number, data=posted),
    )
    if analysis.outcome is domain.Outcome.OVER:
        overpaid = PaymentOverpaid(
            payment_id=payment_id,
            receipt_number=receipt_number,
            consumer=consumer,
            payment_amount=Money(amount=amount, currency=currency),
            overpaid=Money(amount=analysis.overpaid, currency=currency),
            posted_at=now,
        )
        await stage(
            session,
            Topic.PAYMENTS_EVENTS,
            new_envelope("payment.overpaid", source=SOURCE, subject=command.account_number, data=overpaid),
        )
    return payment_id


async def find_payment(session: AsyncSession, payment_id_or_receipt: str) -> dict[str, Any]:
    """A payment by payment id or receipt number."""
    row = (
        (
            await session.execute(
                select(payments, accounts.c.name.label("consumer_name"))
                .join(accounts, accounts.c.account_number == payments.c.account_number)
                .where(
                    (payments.c.payment_id == payment_id_or_receipt)
                    | (payments.c.receipt_number == payment_id_or_receipt)
                )
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        raise NotFound("payment_not_found", f"no payment {payment_id_or_receipt}")
    return dict(row)
