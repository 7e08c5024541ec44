"""Credit notes' state changes: issue (by staff, or automatically on overpayment; above the approval limit a manual
note waits for a billing manager), apply (by staff, or by the auto-apply policy), and change the settings.

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
    approvals,
    audit_log,
    credit_note_number_seq,
    credit_notes,
    idempotency_keys,
    open_items,
    payments,
    settings,
)
from shared import audit, idempotency, ledger
from shared.approvals import Approval, decide, needs_approval, request_approval
from shared.contracts import Envelope, PaymentStatus, Topic, new_envelope, parse_data
from shared.contracts.events import CreditNoteApplied, CreditNoteIssued, Money, PaymentOverpaid, PaymentType
from shared.errors import NotFound, Rejected
from shared.outbox import stage

SOURCE = "credit_notes"
APPROVAL_KIND = "credit_note"


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


async def add_to_item(
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


async def credit_from_payment(session: AsyncSession, payment: Row[Any], amount: Decimal) -> None:
    """`amount` of the payment becomes credit: the part that settled nothing first, then its settlement (the item
    it paid is owed that again), by the ledger rule payments applies too."""
    credited = payment.credited + amount
    allocated = ledger.settled_after_credit(
        payment.allocated, payment.amount, refunded=payment.refunded, credited=credited
    )
    await session.execute(
        update(payments)
        .where(payments.c.receipt_number == payment.receipt_number)
        .values(credited=credited, allocated=allocated)
    )
    if allocated < payment.allocated and payment.payment_type is not None:
        await add_to_item(
            session, payment.payment_type, payment.item_reference, payment.account_number, allocated - payment.allocated
        )


def _issued_event(note: dict[str, Any]) -> Envelope:
    issued = CreditNoteIssued(
        credit_note_number=note["credit_note_number"],
        account_number=note["account_number"],
        consumer_name=note["consumer_name"],
        receipt_number=note["receipt_number"],
        payment_id=note["payment_id"],
        amount=Money(amount=note["amount"], currency=note["currency"]),
        reason=note["reason"],
        created_by=note["created_by"],
        created_at=note["created_at"],
        expires_at=note["expires_at"],
        remarks=note["remarks"],
    )
    return new_envelope("credit_note.issued", source=SOURCE, subject=note["account_number"], data=issued)


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
    domain.PaymentCredit(
        amount=payment.amount, credited=payment.credited, payment_status=payment.status, refunded=payment.refunded
    ).issue(amount)
    policy = await load_policy(session)
    now = datetime.now(UTC)
    seq = int((await session.execute(select(credit_note_number_seq.next_value()))).scalar_one())
    number = number_format.render(seq)
    expires_at = policy.expiry.expires_at(now)
    # A manual note above the limit holds no credit until a billing manager approves it; its amount is reserved
    # against the payment meanwhile, so two pending notes can never exceed it together.
    pending = not automatic and needs_approval(amount, policy.approval_limit)
    status = domain.Status.PENDING_APPROVAL if pending else domain.Status.ACTIVE
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
        "status": status.value,
        "created_at": now,
        "expires_at": expires_at,
    }
    await session.execute(credit_notes.insert().values(**row))
    action = "credit_note.approval_requested" if pending else "credit_note.issued"
    await audit.record(session, audit_log, actor=created_by, action=action, subject=number, after=row, at=now)
    if pending:
        await session.execute(
            update(payments)
            .where(payments.c.receipt_number == payment.receipt_number)
            .values(credited=payments.c.credited + amount)
        )
        await request_approval(
            session,
            approvals,
            topic=Topic.CREDITNOTES_EVENTS,
            source=SOURCE,
            kind=APPROVAL_KIND,
            subject=number,
            payload={"credit_note_number": number, "receipt_number": payment.receipt_number},
            requested_by=created_by,
            reason=reason,
            amount=amount,
            currency=payment.currency,
            account_number=payment.account_number,
            now=now,
        )
        return number
    await credit_from_payment(session, payment, amount)
    await stage(session, Topic.CREDITNOTES_EVENTS, _issued_event(row))
    return number


async def decide_credit_note(
    session: AsyncSession, approval_id: str, *, approver: str, approve: bool, reason: str | None = None
) -> Approval:
    """A billing manager approves (the note becomes Active and is announced) or rejects (Rejected, its amount
    released) a pending manual credit note; under the approval's row lock, so it happens exactly once."""
    decided = await decide(
        session,
        approvals,
        approval_id,
        topic=Topic.CREDITNOTES_EVENTS,
        source=SOURCE,
        approver=approver,
        approve=approve,
        reason=reason,
    )
    number = decided.subject
    note = (
        (
            await session.execute(
                select(credit_notes).where(credit_notes.c.credit_note_number == number).with_for_update()
            )
        )
        .mappings()
        .one()
    )
    payment = await _lock_payment(session, note["receipt_number"])
    status = domain.Status.ACTIVE if approve else domain.Status.REJECTED
    await session.execute(
        update(credit_notes).where(credit_notes.c.credit_note_number == number).values(status=status.value)
    )
    # The reservation made at the request is released; approving turns it into credit by the ledger rule.
    await session.execute(
        update(payments)
        .where(payments.c.receipt_number == payment.receipt_number)
        .values(credited=payments.c.credited - note["amount"])
    )
    if approve:
        await credit_from_payment(session, await _lock_payment(session, note["receipt_number"]), note["amount"])
        await stage(session, Topic.CREDITNOTES_EVENTS, _issued_event({**note, "status": status.value}))
    await audit.record(
        session,
        audit_log,
        actor=approver,
        action="credit_note.approved" if approve else "credit_note.rejected",
        subject=number,
        before={"status": note["status"]},
        after={"status": status.value, "approval_id": approval_id},
        reason=reason,
    )
    return decided


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
        run=lambda: apply_credit(session, command, applied_by=applied_by, now=now or datetime.now(UTC)),
    )


def credit_note(row: Any) -> domain.CreditNote:
    """A stored credit note's balances, for the domain's rules."""
    return domain.CreditNote(
        amount=row.amount,
        expires_at=row.expires_at,
        applied=row.applied,
        status=domain.Status(row.status),
        voided=row.voided,
        refunded=row.refunded,
    )


async def apply_credit(
    session: AsyncSession, command: ApplyCreditNote, *, applied_by: str, now: datetime, automatic: bool = False
) -> str:
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
    before = credit_note(note)
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
            automatic=automatic,
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
