"""Credit given back when the money behind it goes back (cancellation, refund, lost dispute), unused credit paid
out to the customer (a credit refund), and the auto-apply policy that pays a newly issued bill from credit.

Each runs in the caller's transaction and stages its events there, like every command.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.credit_notes import domain
from services.credit_notes.commands import SOURCE, ApplyCreditNote, apply_credit, credit_note
from services.credit_notes.queries import load_policy
from services.credit_notes.storage import applications, audit_log, credit_notes, open_items, payments
from shared import audit
from shared.contracts import Topic, new_envelope
from shared.contracts.events import CreditNoteRefundRequested, CreditNoteVoided, Money, PaymentType, ReversedApplication
from shared.errors import NotFound
from shared.outbox import stage

# Notes that hold (or held) credit; a pending or rejected note never did.
HELD = (
    domain.Status.ACTIVE,
    domain.Status.APPLIED,
    domain.Status.EXPIRED,
    domain.Status.VOIDED,
    domain.Status.REFUNDED,
)


async def void_payment_credit(
    session: AsyncSession, receipt_number: str, *, most: Decimal | None, reason: str, actor: str = domain.SYSTEM
) -> Decimal:
    """Give back up to `most` (None: all) of the credit made from a payment: unused balances first, then credit
    already applied (those items are owed again). Stages `credit_note.voided` per note; returns the total."""
    now = datetime.now(UTC)
    notes = (
        await session.execute(
            select(credit_notes)
            .where(credit_notes.c.receipt_number == receipt_number, credit_notes.c.status.in_([s.value for s in HELD]))
            .order_by(credit_notes.c.seq)
            .with_for_update()
        )
    ).all()
    if not notes:
        return domain.ZERO
    rows = (
        await session.execute(
            select(applications)
            .where(applications.c.credit_note_number.in_([n.credit_note_number for n in notes]))
            .order_by(applications.c.applied_at)
            .with_for_update()
        )
    ).all()
    by_id = {a.id: a for a in rows}
    plan = domain.void_plan(
        [(n.credit_note_number, credit_note(n)) for n in notes],
        [domain.Application(a.id, a.credit_note_number, a.amount, a.applied_at, a.reversed) for a in rows],
        most,
    )
    before = {n.credit_note_number: n for n in notes}
    total = domain.ZERO
    for void in plan:
        note, after = before[void.credit_note_number], void.after
        await session.execute(
            update(credit_notes)
            .where(credit_notes.c.credit_note_number == void.credit_note_number)
            .values(applied=after.applied, remaining=after.remaining, voided=after.voided, status=after.status.value)
        )
        reversed_events = []
        for application_id, amount in void.reversed:
            application = by_id[application_id]
            await session.execute(
                update(applications)
                .where(applications.c.id == application_id)
                .values(reversed=applications.c.reversed + amount)
            )
            await session.execute(
                update(open_items)
                .where(
                    open_items.c.payment_type == application.payment_type,
                    open_items.c.item_reference == application.item_reference,
                )
                .values(credited=func.greatest(open_items.c.credited - amount, 0))
            )
            reversed_events.append(
                ReversedApplication(
                    application_id=application_id,
                    payment_type=PaymentType(application.payment_type),
                    item_reference=application.item_reference,
                    amount=Money(amount=amount, currency=note.currency),
                    applied_at=application.applied_at,
                )
            )
        given_back = void.voided + sum((amount for _, amount in void.reversed), domain.ZERO)
        total += given_back
        await audit.record(
            session,
            audit_log,
            actor=actor,
            action="credit_note.voided",
            subject=void.credit_note_number,
            before={"applied": note.applied, "remaining": note.remaining, "status": note.status},
            after={
                "applied": after.applied,
                "remaining": after.remaining,
                "voided": after.voided,
                "status": after.status.value,
                "reversed": [{"application_id": i, "amount": a} for i, a in void.reversed],
            },
            reason=reason,
            at=now,
        )
        voided = CreditNoteVoided(
            credit_note_number=void.credit_note_number,
            account_number=note.account_number,
            receipt_number=note.receipt_number,
            payment_id=note.payment_id,
            voided=Money(amount=void.voided, currency=note.currency),
            reversed=reversed_events,
            remaining=Money(amount=after.remaining, currency=note.currency),
            status=after.status.value,
            reason=reason,
            voided_by=actor,
            voided_at=now,
        )
        await stage(
            session,
            Topic.CREDITNOTES_EVENTS,
            new_envelope("credit_note.voided", source=SOURCE, subject=note.account_number, data=voided),
        )
    await session.execute(
        update(payments)
        .where(payments.c.receipt_number == receipt_number)
        .values(credited=func.greatest(payments.c.credited - total, 0))
    )
    return total


async def refund_credit_note(session: AsyncSession, number: str, *, reason: str, requested_by: str) -> None:
    """Pay a note's unused balance back to the customer: the note is Refunded and the outbound side is asked to
    send the money (`credit_note.refund_requested`)."""
    note = (
        await session.execute(select(credit_notes).where(credit_notes.c.credit_note_number == number).with_for_update())
    ).first()
    if note is None:
        raise NotFound("credit_note_not_found", f"no credit note {number}")
    after, amount = credit_note(note).refund()
    now = datetime.now(UTC)
    await session.execute(
        update(credit_notes)
        .where(credit_notes.c.credit_note_number == number)
        .values(remaining=after.remaining, refunded=after.refunded, status=after.status.value)
    )
    await audit.record(
        session,
        audit_log,
        actor=requested_by,
        action="credit_note.refund_requested",
        subject=number,
        before={"remaining": note.remaining, "status": note.status},
        after={"remaining": after.remaining, "refunded": after.refunded, "status": after.status.value},
        reason=reason,
        at=now,
    )
    requested = CreditNoteRefundRequested(
        credit_note_number=number,
        account_number=note.account_number,
        receipt_number=note.receipt_number,
        consumer_name=note.consumer_name,
        amount=Money(amount=amount, currency=note.currency),
        reason=reason,
        requested_by=requested_by,
        requested_at=now,
    )
    await stage(
        session,
        Topic.CREDITNOTES_EVENTS,
        new_envelope("credit_note.refund_requested", source=SOURCE, subject=note.account_number, data=requested),
    )


async def auto_apply(session: AsyncSession, account_number: str, payment_type: str, item_reference: str) -> int:
    """Under the `oldest_first` policy, pay a newly issued bill from the account's usable credit (the note expiring
    first used first). Once per bill: a re-issued or replayed bill finds its automatic applications and stops."""
    policy = await load_policy(session)
    if policy.auto_apply_credit is domain.AutoApply.OFF:
        return 0
    already = (
        await session.execute(
            select(applications.c.id)
            .where(
                applications.c.payment_type == payment_type,
                applications.c.item_reference == item_reference,
                applications.c.automatic,
            )
            .limit(1)
        )
    ).first()
    item = (
        await session.execute(
            select(open_items).where(
                open_items.c.payment_type == payment_type, open_items.c.item_reference == item_reference
            )
        )
    ).first()
    if already is not None or item is None or item.amount is None:
        return 0
    notes = (
        await session.execute(
            select(credit_notes)
            .where(
                credit_notes.c.account_number == account_number,
                credit_notes.c.status == domain.Status.ACTIVE.value,
                credit_notes.c.currency == item.currency,
            )
            .order_by(credit_notes.c.seq)
        )
    ).all()
    now = datetime.now(UTC)
    outstanding = max(item.amount - item.paid - item.credited, domain.ZERO)
    plan = domain.oldest_first([(n.credit_note_number, credit_note(n)) for n in notes], outstanding, now)
    for number, amount in plan:
        command = ApplyCreditNote(number, PaymentType(payment_type), item_reference, amount)
        await apply_credit(session, command, applied_by=domain.SYSTEM, now=now, automatic=True)
    return len(plan)
