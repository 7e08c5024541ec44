"""Credit notes' commands, event handlers and queries. Each runs inside the caller's transaction."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Row, and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.credit_notes import domain
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
from shared.contracts import Envelope, Topic, new_envelope, parse_data
from shared.contracts.events import (
    BillIssued,
    CreditNoteApplied,
    CreditNoteExpired,
    CreditNoteIssued,
    InstallmentPlanCreated,
    Money,
    PaymentCancelled,
    PaymentOverpaid,
    PaymentPosted,
    PaymentStatusChanged,
    PaymentType,
    ServiceChargeIssued,
)
from shared.errors import Conflict, NotFound, Rejected
from shared.messaging import EventHandler
from shared.outbox import Stage

SOURCE = "credit_notes"
POLICY = "credit_notes"


def _json(value: Any) -> Any:
    """Audit values as JSON: money and times as strings."""
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat()
    return value


async def _audit(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    subject: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    at: datetime,
) -> None:
    await session.execute(
        audit_log.insert().values(
            id=str(uuid.uuid4()),
            at=at,
            actor=actor,
            action=action,
            subject=subject,
            before=_json(before) if before is not None else None,
            after=_json(after) if after is not None else None,
        )
    )


# --- settings an admin can change ---


async def load_policy(session: AsyncSession) -> domain.Policy:
    value = (await session.execute(select(settings.c.value).where(settings.c.name == POLICY))).scalar_one_or_none()
    return domain.Policy.from_json(value) if value is not None else domain.Policy()


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
    await _audit(
        session,
        actor=actor,
        action="settings.changed",
        subject=POLICY,
        before=before.to_json(),
        after=policy.to_json(),
        at=now,
    )
    return policy


# --- billing.receivables.v1: what a credit note can be applied to ---


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


async def on_bill_issued(session: AsyncSession, envelope: Envelope) -> None:
    bill = parse_data(envelope, BillIssued)
    await _upsert_item(
        session,
        {
            "payment_type": PaymentType.BILL,
            "item_reference": bill.invoice_number,
            "account_number": bill.account_number,
            "description": f"Bill {bill.billing_period}",
            "due_date": bill.due_date,
            "amount": bill.amount.amount,
            "currency": bill.amount.currency,
        },
    )


async def on_service_charge_issued(session: AsyncSession, envelope: Envelope) -> None:
    charge = parse_data(envelope, ServiceChargeIssued)
    await _upsert_item(
        session,
        {
            "payment_type": PaymentType.SERVICE,
            "item_reference": charge.service_charge_id,
            "account_number": charge.account_number,
            "description": charge.description,
            "due_date": charge.due_date,
            "amount": charge.amount.amount,
            "currency": charge.amount.currency,
        },
    )


async def on_installment_plan_created(session: AsyncSession, envelope: Envelope) -> None:
    plan = parse_data(envelope, InstallmentPlanCreated)
    for installment in plan.installments:
        await _upsert_item(
            session,
            {
                "payment_type": PaymentType.INSTALLMENT,
                "item_reference": f"{plan.plan_id}/{installment.number}",
                "account_number": plan.account_number,
                "description": f"Plan {plan.plan_id} installment {installment.number}",
                "due_date": installment.due_date,
                "amount": installment.amount.amount,
                "currency": installment.amount.currency,
            },
        )


BILLING_HANDLERS = {
    "bill.issued": on_bill_issued,
    "service_charge.issued": on_service_charge_issued,
    "installment_plan.created": on_installment_plan_created,
}

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
        status="Posted",
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
    payment = await _locked_payment(session, cancelled.receipt_number)
    if payment is None:
        raise Rejected("unknown_payment", f"payment {cancelled.receipt_number} was never posted")
    if payment.status == domain.CANCELLED:
        return
    await _close_payment(session, payment, domain.CANCELLED, cancelled_at=cancelled.cancelled_at)


async def on_payment_status_changed(session: AsyncSession, envelope: Envelope) -> None:
    """A refunded payment (its money went back through the gateway) gets no new credit notes."""
    changed = parse_data(envelope, PaymentStatusChanged)
    if changed.status != domain.REFUNDED:
        return
    payment = await _locked_payment(session, changed.receipt_number)
    # Never posted (a refund of a payment that never counted) or already closed: nothing to take back.
    if payment is None or payment.status != domain.POSTED:
        return
    await _close_payment(session, payment, domain.REFUNDED)


async def _locked_payment(session: AsyncSession, receipt_number: str) -> Row[Any] | None:
    query = select(payments).where(payments.c.receipt_number == receipt_number).with_for_update()
    return (await session.execute(query)).first()


async def _close_payment(session: AsyncSession, payment: Row[Any], status: str, **values: Any) -> None:
    await session.execute(
        update(payments).where(payments.c.receipt_number == payment.receipt_number).values(status=status, **values)
    )
    if payment.payment_type is not None:
        # Payments reversed the allocation, so the item is owed again.
        await _add_to_item(
            session, payment.payment_type, payment.item_reference, payment.account_number, -payment.allocated
        )


async def on_payment_overpaid(
    session: AsyncSession, envelope: Envelope, *, stage: Stage, number_format: domain.NumberFormat
) -> None:
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
            status="Posted",
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
        stage,
        payment,
        amount=overpaid.overpaid.amount,
        reason=domain.OVERPAYMENT,
        remarks=None,
        created_by=domain.SYSTEM,
        automatic=True,
        number_format=number_format,
    )


def payment_handlers(stage: Stage, number_format: domain.NumberFormat) -> dict[str, EventHandler]:
    """The handlers of payments' events, given the service's outbox and credit-note number format."""

    async def overpaid(session: AsyncSession, envelope: Envelope) -> None:
        await on_payment_overpaid(session, envelope, stage=stage, number_format=number_format)

    return {
        "payment.posted": on_payment_posted,
        "payment.overpaid": overpaid,
        "payment.cancelled": on_payment_cancelled,
        "payment.status_changed": on_payment_status_changed,
    }


# --- issuing ---


async def _lock_payment(session: AsyncSession, receipt_number: str) -> Row[Any]:
    # Row lock: credit notes on one payment are issued one after another, never beyond its amount.
    payment = await _locked_payment(session, receipt_number)
    if payment is None:
        raise NotFound("unknown_receipt", f"no payment with receipt number {receipt_number}", field="receipt_number")
    return payment


async def _issue(
    session: AsyncSession,
    stage: Stage,
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
    await _audit(session, actor=created_by, action="credit_note.issued", subject=number, before=None, after=row, at=now)
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


def _fingerprint(command: IssueCreditNote | ApplyCreditNote) -> str:
    return hashlib.sha256(json.dumps(asdict(command), default=str, sort_keys=True).encode()).hexdigest()


async def _claim_key(session: AsyncSession, operation: str, key: str, fingerprint: str) -> str | None:
    """None if the key is new (claimed now); else the first request's result. A different body is a 409."""
    claimed = (
        await session.execute(
            pg_insert(idempotency_keys)
            .values(operation=operation, key=key, request_hash=fingerprint)
            .on_conflict_do_nothing()
            .returning(idempotency_keys.c.key)
        )
    ).first()
    if claimed is not None:
        return None
    earlier = (
        await session.execute(
            select(idempotency_keys).where(idempotency_keys.c.operation == operation, idempotency_keys.c.key == key)
        )
    ).one()
    if earlier.request_hash != fingerprint:
        raise Conflict("idempotency_key_reused", "this Idempotency-Key was used with a different request")
    return str(earlier.result)


async def _remember_result(session: AsyncSession, operation: str, key: str, result: str) -> None:
    await session.execute(
        update(idempotency_keys)
        .where(idempotency_keys.c.operation == operation, idempotency_keys.c.key == key)
        .values(result=result)
    )


@dataclass(frozen=True)
class IssueCreditNote:
    receipt_number: str
    reason: str
    amount: Decimal | None = None
    remarks: str | None = None


async def issue_credit_note(
    session: AsyncSession,
    stage: Stage,
    command: IssueCreditNote,
    *,
    created_by: str,
    idempotency_key: str,
    number_format: domain.NumberFormat,
) -> str:
    """Issue a manual credit note against a payment, once per `idempotency_key`; returns its number."""
    earlier = await _claim_key(session, "issue", idempotency_key, _fingerprint(command))
    if earlier is not None:
        return earlier
    policy = await load_policy(session)
    reason = domain.validate_reason(command.reason, policy.reasons)
    remarks = domain.validate_remarks(command.remarks)
    payment = await _lock_payment(session, command.receipt_number)
    # The form defaults to the full payment amount; with credit already issued, to what is left of it.
    amount = command.amount if command.amount is not None else max(payment.amount - payment.credited, domain.ZERO)
    if not domain.has_two_decimals(amount):
        raise Rejected("amount_precision", "the credit amount has at most 2 decimal places", field="amount")
    number = await _issue(
        session,
        stage,
        payment,
        amount=amount,
        reason=reason,
        remarks=remarks,
        created_by=created_by,
        automatic=False,
        number_format=number_format,
    )
    await _remember_result(session, "issue", idempotency_key, number)
    return number


# --- applying ---


@dataclass(frozen=True)
class ApplyCreditNote:
    credit_note_number: str
    payment_type: PaymentType
    item_reference: str
    amount: Decimal | None = None


async def apply_credit_note(
    session: AsyncSession,
    stage: Stage,
    command: ApplyCreditNote,
    *,
    applied_by: str,
    idempotency_key: str,
    now: datetime | None = None,
) -> str:
    """Apply remaining credit to an open item of the same account, once per `idempotency_key`."""
    earlier = await _claim_key(session, "apply", idempotency_key, _fingerprint(command))
    if earlier is not None:
        return earlier
    now = now or datetime.now(UTC)
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
    await _audit(
        session,
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
    await _remember_result(session, "apply", idempotency_key, application_id)
    return application_id


# --- expiry ---


async def expire_due(session: AsyncSession, stage: Stage, *, now: datetime, limit: int = 500) -> int:
    """Expire up to `limit` active credit notes past their expiry date; returns how many."""
    # SKIP LOCKED: two service instances (or the CLI beside a running service) never expire the same note twice,
    # and a note being applied right now is left for the next pass.
    due = (
        await session.execute(
            select(credit_notes)
            .where(credit_notes.c.status == domain.Status.ACTIVE.value, credit_notes.c.expires_at <= now)
            .order_by(credit_notes.c.expires_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).all()
    for note in due:
        expired = domain.CreditNote(
            amount=note.amount, expires_at=note.expires_at, applied=note.applied, status=domain.Status(note.status)
        ).expire(now)
        await session.execute(
            update(credit_notes)
            .where(credit_notes.c.credit_note_number == note.credit_note_number)
            .values(status=expired.status.value, expired_at=now)
        )
        await _audit(
            session,
            actor=domain.SYSTEM,
            action="credit_note.expired",
            subject=note.credit_note_number,
            before={"status": note.status, "remaining": note.remaining},
            after={"status": expired.status.value, "remaining": note.remaining, "expired_at": now},
            at=now,
        )
        event = CreditNoteExpired(
            credit_note_number=note.credit_note_number,
            account_number=note.account_number,
            remaining=Money(amount=note.remaining, currency=note.currency),
            expired_at=now,
        )
        await stage(
            session,
            Topic.CREDITNOTES_EVENTS,
            new_envelope("credit_note.expired", source=SOURCE, subject=note.account_number, data=event),
        )
    return len(due)


async def run_expiry_pass(
    session_factory: async_sessionmaker[AsyncSession], stage: Stage, *, now: datetime | None = None, batch: int = 500
) -> int:
    """Expire every credit note due by `now`, in batches of one transaction each; returns how many."""
    now = now or datetime.now(UTC)
    total = 0
    while True:
        async with session_factory() as session, session.begin():
            count = await expire_due(session, stage, now=now, limit=batch)
        total += count
        if count < batch:
            return total


# --- queries ---


async def find_credit_note(session: AsyncSession, number: str) -> dict[str, Any]:
    row = (
        (await session.execute(select(credit_notes).where(credit_notes.c.credit_note_number == number)))
        .mappings()
        .first()
    )
    if row is None:
        raise NotFound("credit_note_not_found", f"no credit note {number}")
    return dict(row)


async def credit_note_details(session: AsyncSession, number: str) -> dict[str, Any]:
    """The credit note with its linked payment and the applications made from it."""
    note = await find_credit_note(session, number)
    payment = (
        (await session.execute(select(payments).where(payments.c.receipt_number == note["receipt_number"])))
        .mappings()
        .first()
    )
    used = (
        (
            await session.execute(
                select(applications)
                .where(applications.c.credit_note_number == number)
                .order_by(applications.c.applied_at)
            )
        )
        .mappings()
        .all()
    )
    return {**note, "payment": dict(payment) if payment else None, "applications": [dict(a) for a in used]}


async def creation_summary(session: AsyncSession, number: str) -> dict[str, Decimal]:
    """Original payment amount, this note's amount and what was left of the payment once it was issued."""
    note = await find_credit_note(session, number)
    payment_amount = (
        await session.execute(select(payments.c.amount).where(payments.c.receipt_number == note["receipt_number"]))
    ).scalar_one()
    credited_until_then = (
        await session.execute(
            select(func.coalesce(func.sum(credit_notes.c.amount), 0)).where(
                credit_notes.c.receipt_number == note["receipt_number"], credit_notes.c.seq <= note["seq"]
            )
        )
    ).scalar_one()
    credit = domain.PaymentCredit(amount=payment_amount, credited=Decimal(credited_until_then))
    return {
        "original_payment_amount": payment_amount,
        "credit_note_amount": note["amount"],
        "remaining_payment_value": credit.remaining_value,
    }


async def find_payment(session: AsyncSession, receipt_number: str) -> dict[str, Any]:
    """The payment a credit note would be made from, with the most it can still be credited."""
    row = (
        (await session.execute(select(payments).where(payments.c.receipt_number == receipt_number))).mappings().first()
    )
    if row is None:
        raise NotFound("unknown_receipt", f"no payment with receipt number {receipt_number}", field="receipt_number")
    credit = domain.PaymentCredit(amount=row["amount"], credited=row["credited"], payment_status=row["status"])
    return {**dict(row), "creditable": credit.creditable}


async def history(session: AsyncSession, subject: str) -> list[dict[str, Any]]:
    """The audit trail of one credit note (or of the settings, subject `credit_notes`), oldest first."""
    rows = (
        (await session.execute(select(audit_log).where(audit_log.c.subject == subject).order_by(audit_log.c.at)))
        .mappings()
        .all()
    )
    return [dict(r) for r in rows]


@dataclass(frozen=True)
class CreditNoteFilters:
    """The credit-notes tab's search and filters; every field optional."""

    text: str | None = None
    status: domain.Status | None = None
    created_from: datetime | None = None
    created_before: datetime | None = None
    reasons: tuple[str, ...] = ()
    consumer: str | None = None
    remaining: domain.RemainingFilter | None = None
    receipt_number: str | None = None
    amount_min: Decimal | None = None
    amount_max: Decimal | None = None
    newest_first: bool = True


def _contains(text: str) -> str:
    """An ILIKE pattern for a partial match of `text`, with LIKE's wildcards taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def search_conditions(filters: CreditNoteFilters) -> list[ColumnElement[bool]]:
    c = credit_notes.c
    clauses: list[ColumnElement[bool]] = []
    if filters.text:
        pattern = _contains(filters.text)
        clauses.append(
            or_(
                c.credit_note_number.ilike(pattern),
                c.consumer_name.ilike(pattern),
                c.account_number.ilike(pattern),
                c.receipt_number.ilike(pattern),
            )
        )
    if filters.status is not None:
        clauses.append(c.status == filters.status.value)
    if filters.created_from is not None:
        clauses.append(c.created_at >= filters.created_from)
    if filters.created_before is not None:
        clauses.append(c.created_at < filters.created_before)
    if filters.reasons:
        clauses.append(c.reason.in_(filters.reasons))
    if filters.consumer:
        pattern = _contains(filters.consumer)
        clauses.append(or_(c.consumer_name.ilike(pattern), c.account_number.ilike(pattern)))
    if filters.remaining is domain.RemainingFilter.FULLY_USED:
        clauses.append(c.remaining == 0)
    elif filters.remaining is domain.RemainingFilter.PARTIAL:
        clauses.append(and_(c.remaining > 0, c.remaining < c.amount))
    elif filters.remaining is domain.RemainingFilter.FULL:
        clauses.append(c.remaining == c.amount)
    if filters.receipt_number:
        clauses.append(c.receipt_number.ilike(_contains(filters.receipt_number)))
    if filters.amount_min is not None:
        clauses.append(c.amount >= filters.amount_min)
    if filters.amount_max is not None:
        clauses.append(c.amount <= filters.amount_max)
    return clauses


def encode_cursor(seq: int, *, newest_first: bool) -> str:
    return base64.urlsafe_b64encode(f"cn:{'new' if newest_first else 'old'}:{seq}".encode()).decode()


def decode_cursor(cursor: str, *, newest_first: bool) -> int:
    """The creation position a page ends at; a cursor made for the other sort order is refused."""
    try:
        kind, order, value = base64.urlsafe_b64decode(cursor.encode()).decode().split(":")
        if kind != "cn" or order != ("new" if newest_first else "old"):
            raise ValueError(kind)
        return int(value)
    except ValueError as exc:
        raise Rejected("invalid_cursor", "the cursor is not one this list gave out", field="cursor") from exc


async def search_credit_notes(
    session: AsyncSession, filters: CreditNoteFilters, *, limit: int = 50, cursor: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page and the cursor of the next (keyset on creation order, so deep pages stay as fast as the first)."""
    clauses = search_conditions(filters)
    newest_first = filters.newest_first
    seq = credit_notes.c.seq
    if cursor is not None:
        after = decode_cursor(cursor, newest_first=newest_first)
        clauses.append(seq < after if newest_first else seq > after)
    order = seq.desc() if newest_first else seq.asc()
    statement = select(credit_notes).where(*clauses).order_by(order).limit(limit + 1)
    rows = (await session.execute(statement)).mappings().all()
    page = [dict(r) for r in rows[:limit]]
    next_cursor = encode_cursor(page[-1]["seq"], newest_first=newest_first) if len(rows) > limit else None
    return page, next_cursor


async def iter_credit_notes(
    session_factory: async_sessionmaker[AsyncSession], filters: CreditNoteFilters, *, batch: int = 1000
) -> AsyncIterator[dict[str, Any]]:
    """Every credit note matching `filters`, in their order, fetched page by page for streaming exports."""
    cursor: str | None = None
    while True:
        async with session_factory() as session:
            page, cursor = await search_credit_notes(session, filters, limit=batch, cursor=cursor)
        for row in page:
            yield row
        if cursor is None:
            return
