"""Credit notes' state changes: issue (by staff, or automatically on overpayment), apply, and change the settings.

Each runs inside the caller's transaction and stages its event there (`shared.outbox.stage`), so the change and
its announcement commit together or not at all.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.credit_notes import domain
from services.credit_notes.queries import POLICY, load_policy, locked_payment
from services.credit_notes.storage import (
    applications,
    audit_log,
    credit_note_number_seq,
    credit_notes,
    idempotency_keys,
    open_items,
    payments,
    settings,
)
from shared import audit, idempotency
from shared.contracts import Envelope, PaymentStatus, Topic, new_envelope, parse_data
from shared.contracts.events import CreditNoteApplied, CreditNoteIssued, Money, PaymentOverpaid, PaymentType
from shared.errors import NotFound, Rejected
from shared.outbox import stage

SOURCE = "credit_notes"


# --- settings an admin can change ---


async def update_policy(session: AsyncSession, policy: domain.Policy, *, actor: str) -> domain.Policy:
    """Replace the credit-note settings, with before and after in the audit trail."""
    # Serialise concurrent changes so the audit trail's "before" is always the value really replaced.
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtext("credit_notes.settings"))))
    before = await load_policy(session)
    now = datetime.now(UTC)
    values = {"name": POLICY, "value": policy.to_json(), "updated_by": actor, "updated_at": now}
    await session.execute(
        pg_insert(settings).values(**values).on_conflict_do_update(index_elements=["name"], set_=values)
    )
    await audit.record(
        session,
        audit_log,
        actor=actor,
        action="settings.changed",
        subject=POLICY,
        before=before.to_json(),
        after=policy.to_json(),
        at=now,
    )
    return policy


# --- issuing ---


async def _lock_payment(session: AsyncSession, receipt_number: str) -> Row[Any]:
    # Row lock: credit notes on one payment are issued one after another, never beyond its amount.
    payment = await locked_payment(session, receipt_number)
    if payment is None:
        raise NotFound("unknown_receipt", f"no payment with receipt number {receipt_number}", field="receipt_number")
    return payment


async def _issue(
    session: AsyncSession,
    payment: Row[Any],
    *,
    amount: Decimal,
    reason: str,
    remarks: str | None,
    created_by: str,
    automatic: bool,
    number_format: domain.NumberFormat,
) -> str:
    credit = domain.PaymentCredit(
        amount=payment.amount, credited=payment.credited, payment_status=payment.status
    ).issue(amount)
    policy = await load_policy(session)
    now = datetime.now(UTC)
    seq = int((await session.execute(select(credit_note_number_seq.next_value()))).scalar_one())
    number = number_format.render(seq)
    expires_at = policy.expiry.expires_at(now)
    row = {
        "credit_note_number": number,
        "seq": seq,
        "account_number": payment.account_number,
        "consumer_name": payment.consumer_name,
        "receipt_number": payment.receipt_number,
        "payment_id": payment.payment_id,
        "amount": amount,
        "applied": domain.ZERO,
        "remaining": amount,
        "currency": payment.currency,
        "reason": reason,
        "remarks": remarks,
        "created_by": created_by,
        "automatic": automatic,
        "status": domain.Status.ACTIVE.value,
        "created_at": now,
        "expires_at": expires_at,
    }
    await session.execute(credit_notes.insert().values(**row))
    await session.execute(
        update(payments).where(payments.c.receipt_number == payment.receipt_number).values(credited=credit.credited)
    )
    await audit.record(
        session, audit_log, actor=created_by, action="credit_note.issued", subject=number, after=row, at=now
    )
    issued = CreditNoteIssued(
        credit_note_number=number,
        account_number=payment.account_number,
        consumer_name=payment.consumer_name,
        receipt_number=payment.receipt_number,
        payment_id=payment.payment_id,
        amount=Money(amount=amount, currency=payment.currency),
        reason=reason,
        created_by=created_by,
        created_at=now,
        expires_at=expires_at,
        remarks=remarks,
    )
    await stage(
        session,
        Topic.CREDITNOTES_EVENTS,
        new_envelope("credit_note.issued", source=SOURCE, subject=payment.account_number, data=issued),
    )
    return number


@dataclass(frozen=True)
class IssueCreditNote:
    receipt_number: str
    reason: str
    amount: Decimal | None = None
    remarks: str | None = None


async def issue_credit_note(
    session: AsyncSession,
    command: IssueCreditNote,
    *,
    created_by: str,
    idempotency_key: str,
    number_format: domain.NumberFormat,
) -> str:
    """Issue a manual credit note against a payment, once per `idempotency_key`; returns its number."""
    return await idempotency.once(
        session,
        idempotency_keys,
        operation="issue",
        key=idempotency_key,
        request=command,
        run=lambda: _issue_manual(session, command, created_by=created_by, number_format=number_format),
    )


async def _issue_manual(
    session: AsyncSession, command: IssueCreditNote, *, created_by: str, number_format: domain.NumberFormat
) -> str:
    policy = await load_policy(session)
    reason = domain.validate_reason(command.reason, policy.reasons)
    remarks = domain.validate_remarks(command.remarks)
    payment = await _lock_payment(session, command.receipt_number)
    # The form defaults to the full payment amount; with credit already issued, to what is left of it.
    amount = command.amount if command.amount is not None else max(payment.amount - payment.credited, domain.ZERO)
    if not domain.has_two_decimals(amount):
        raise Rejected("amount_precision", "the credit amount has at most 2 decimal places", field="amount")
    return await _issue(
        session,
        payment,
        amount=amount,
        reason=reason,
        remarks=remarks,
        created_by=created_by,
        automatic=False,
        number_format=number_format,
    )


class AutomaticCreditNotes:
    """Issues the credit note of an overpaid payment, numbered in the service's credit-note number format."""

    def __init__(self, number_format: domain.NumberFormat) -> None:
        self.number_format = number_format

    async def on_payment_overpaid(self, session: AsyncSession, envelope: Envelope) -> None:
        """Issue the automatic credit note for the extra amount: exactly one per overpaid payment."""
        overpaid = parse_data(envelope, PaymentOverpaid)
        # `payment.posted` comes first on the same partition; this only guards a producer that sends them apart.
        await session.execute(
            pg_insert(payments)
            .values(
                receipt_number=overpaid.receipt_number,
                payment_id=overpaid.payment_id,
                account_number=overpaid.consumer.account_number,
                consumer_name=overpaid.consumer.name,
                amount=overpaid.payment_amount.amount,
                currency=overpaid.payment_amount.currency,
                payment_date=overpaid.posted_at.date(),
                status=PaymentStatus.POSTED,
                posted_at=overpaid.posted_at,
            )
            .on_conflict_do_nothing(index_elements=["receipt_number"])
        )
        payment = await _lock_payment(session, overpaid.receipt_number)
        # The inbox drops a redelivered event; this drops the same overpayment announced again under a new id.
        already = (
            await session.execute(
                select(credit_notes.c.credit_note_number).where(
                    credit_notes.c.receipt_number == overpaid.receipt_number, credit_notes.c.automatic
                )
            )
        ).first()
        if already is not None:
            return
        await _issue(
            session,
            payment,
            amount=overpaid.overpaid.amount,
            reason=domain.OVERPAYMENT,
            remarks=None,
            created_by=domain.SYSTEM,
            automatic=True,
            number_format=self.number_format,
        )


# --- applying ---


@dataclass(frozen=True)
class ApplyCreditNote:
    credit_note_number: str
    payment_type: PaymentType
    item_reference: str
    amount: Decimal | None = None


async def apply_credit_note(
    session: AsyncSession,
    command: ApplyCreditNote,
    *,
    applied_by: str,
    idempotency_key: str,
    now: datetime | None = None,
) -> str:
    """Apply remaining credit to an open item of the same account, once per `idempotency_key`."""
    return await idempotency.once(
        session,
        idempotency_keys,
        operation="apply",
        key=idempotency_key,
        request=command,
        run=lambda: _apply(session, command, applied_by=applied_by, now=now or datetime.now(UTC)),
    )


async def _apply(session: AsyncSession, command: ApplyCreditNote, *, applied_by: str, now: datetime) -> str:
    # Lock order, always the credit note first and then the item, so concurrent applications cannot deadlock;
    # the lock makes racing applications for the same credit see each other's result.
    note = (
        await session.execute(
            select(credit_notes)
            .where(credit_notes.c.credit_note_number == command.credit_note_number)
            .with_for_update()
        )
    ).first()
    if note is None:
        raise NotFound("credit_note_not_found", f"no credit note {command.credit_note_number}")
    item = (
        await session.execute(
            select(open_items)
            .where(
                open_items.c.payment_type == command.payment_type,
                open_items.c.item_reference == command.item_reference,
            )
            .with_for_update()
        )
    ).first()
    if item is None or item.amount is None:
        raise NotFound(
            "unknown_item", f"no {command.payment_type} {command.item_reference} is known", field="item_reference"
        )
    if item.account_number != note.account_number:
        raise Rejected(
            "item_of_another_account",
            f"{command.item_reference} belongs to another account than the credit note",
            field="item_reference",
        )
    if item.currency != note.currency:
        raise Rejected("currency_mismatch", "the item is billed in another currency", field="item_reference")
    outstanding = max(item.amount - item.paid - item.credited, domain.ZERO)
    before = domain.CreditNote(
        amount=note.amount, expires_at=note.expires_at, applied=note.applied, status=domain.Status(note.status)
    )
    if command.amount is not None and not domain.has_two_decimals(command.amount):
        raise Rejected("amount_precision", "the amount has at most 2 decimal places", field="amount")
    after, amount = before.apply(command.amount, item_outstanding=outstanding, now=now)
    await session.execute(
        update(credit_notes)
        .where(credit_notes.c.credit_note_number == note.credit_note_number)
        .values(applied=after.applied, remaining=after.remaining, status=after.status.value)
    )
    await session.execute(
        update(open_items)
        .where(open_items.c.payment_type == item.payment_type, open_items.c.item_reference == item.item_reference)
        .values(credited=open_items.c.credited + amount)
    )
    application_id = str(uuid.uuid4())
    await session.execute(
        applications.insert().values(
            id=application_id,
            credit_note_number=note.credit_note_number,
            account_number=note.account_number,
            payment_type=item.payment_type,
            item_reference=item.item_reference,
            amount=amount,
            applied_by=applied_by,
            applied_at=now,
        )
    )
    await audit.record(
        session,
        audit_log,
        actor=applied_by,
        action="credit_note.applied",
        subject=note.credit_note_number,
        before={"applied": before.applied, "remaining": before.remaining, "status": before.status.value},
        after={
            "applied": after.applied,
            "remaining": after.remaining,
            "status": after.status.value,
            "application_id": application_id,
            "amount": amount,
            "payment_type": item.payment_type,
            "item_reference": item.item_reference,
        },
        at=now,
    )
    applied = CreditNoteApplied(
        credit_note_number=note.credit_note_number,
        account_number=note.account_number,
        payment_type=PaymentType(item.payment_type),
        item_reference=item.item_reference,
        applied=Money(amount=amount, currency=note.currency),
        remaining=Money(amount=after.remaining, currency=note.currency),
        status=after.status.value,
        applied_by=applied_by,
        applied_at=now,
    )
    await stage(
        session,
        Topic.CREDITNOTES_EVENTS,
        new_envelope("credit_note.applied", source=SOURCE, subject=note.account_number, data=applied),
    )
    return application_id
