"""Disputes of a payment, Open -> Under review -> Won / Lost, whether Stripe reports them (`gateway.events.v1`) or
staff open one at the counter. Won: the payment is Posted again and counts as collected. Lost: it is Charged back,
reversed like a refund (its item is owed again; credit_notes gives back the credit made from it).

Each runs in the caller's transaction with the events it stages, like every command.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments import domain
from services.payments.commands import SYSTEM, allocate, announce_status, emit, find_for_update, lock_item
from services.payments.domain import DisputeOutcome, DisputeStatus
from services.payments.storage import audit_log, dispute_attachments, disputes, payments
from shared import audit
from shared.contracts import PaymentStatus
from shared.contracts.events import Money, PaymentDisputeClosed, PaymentDisputeOpened
from shared.errors import NotFound, Rejected

MAX_ATTACHMENT_BYTES = 5 * 1024 * 1024
MAX_ATTACHMENTS = 10


@dataclass(frozen=True)
class Attachment:
    """An evidence file as staff uploaded it."""

    filename: str
    content_type: str
    content: bytes

    @classmethod
    def from_base64(cls, filename: str, content_type: str, content_base64: str) -> Attachment:
        try:
            content = base64.b64decode(content_base64, validate=True)
        except (binascii.Error, ValueError):
            raise Rejected("attachment_not_base64", f"{filename} is not base64", field="attachments") from None
        if not content or len(content) > MAX_ATTACHMENT_BYTES:
            raise Rejected(
                "attachment_size", f"{filename} must have 1 byte to {MAX_ATTACHMENT_BYTES} bytes", field="attachments"
            )
        return cls(filename, content_type, content)


async def _store_attachments(session: AsyncSession, dispute_id: str, files: list[Attachment], by: str) -> None:
    if len(files) > MAX_ATTACHMENTS:
        raise Rejected("too_many_attachments", f"at most {MAX_ATTACHMENTS} files per request", field="attachments")
    now = datetime.now(UTC)
    for file in files:
        await session.execute(
            dispute_attachments.insert().values(
                attachment_id=f"ATT-{uuid.uuid4().hex[:12]}",
                dispute_id=dispute_id,
                filename=file.filename,
                content_type=file.content_type,
                size=len(file.content),
                sha256=hashlib.sha256(file.content).hexdigest(),
                content=file.content,
                uploaded_by=by,
                uploaded_at=now,
            )
        )


async def _payment_row(session: AsyncSession, payment_id: str) -> Row[Any]:
    return (await session.execute(select(payments).where(payments.c.payment_id == payment_id))).one()


async def open_dispute(
    session: AsyncSession,
    payment: Row[Any],
    *,
    reason: str,
    opened_by: str,
    source: str,
    evidence_notes: str | None = None,
    attachments: list[Attachment] | None = None,
    gateway_dispute_id: str | None = None,
    at: datetime | None = None,
) -> str:
    """Open a dispute on a posted payment (locked by the caller): the payment is Disputed until it closes."""
    domain.check_disputable(payment.status)
    if not reason.strip():
        raise Rejected("reason_required", "a dispute needs a reason", field="reason")
    now = at or datetime.now(UTC)
    dispute_id = f"DSP-{uuid.uuid4().hex[:12]}"
    await session.execute(
        disputes.insert().values(
            dispute_id=dispute_id,
            payment_id=payment.payment_id,
            account_number=payment.account_number,
            gateway_dispute_id=gateway_dispute_id,
            source=source,
            status=DisputeStatus.OPEN,
            amount=payment.amount,
            currency=payment.currency,
            reason=reason,
            evidence_notes=evidence_notes,
            opened_by=opened_by,
            opened_at=now,
            updated_at=now,
        )
    )
    await _store_attachments(session, dispute_id, attachments or [], opened_by)
    await session.execute(
        update(payments).where(payments.c.payment_id == payment.payment_id).values(status=PaymentStatus.DISPUTED)
    )
    await audit.record(
        session,
        audit_log,
        actor=opened_by,
        action="payment.dispute_opened",
        subject=payment.payment_id,
        before={"status": payment.status},
        after={"status": PaymentStatus.DISPUTED, "dispute_id": dispute_id, "source": source},
        reason=reason,
    )
    opened = PaymentDisputeOpened(
        dispute_id=dispute_id,
        payment_id=payment.payment_id,
        receipt_number=payment.receipt_number,
        account_number=payment.account_number,
        amount=Money(amount=payment.amount, currency=payment.currency),
        reason=reason,
        source=source,
        opened_by=opened_by,
        opened_at=now,
    )
    await emit(session, "payment.dispute_opened", payment.account_number, opened)
    await announce_status(
        session, await _payment_row(session, payment.payment_id), payment.status, at=now, actor=opened_by
    )
    return dispute_id


async def locked_dispute(session: AsyncSession, dispute_id: str) -> Row[Any]:
    row = (await session.execute(select(disputes).where(disputes.c.dispute_id == dispute_id).with_for_update())).first()
    if row is None:
        raise NotFound("dispute_not_found", f"no dispute {dispute_id}")
    return row


async def review_dispute(
    session: AsyncSession,
    dispute: Row[Any],
    *,
    actor: str,
    evidence_notes: str | None = None,
    attachments: list[Attachment] | None = None,
) -> None:
    """Evidence submitted: the dispute is Under review until the bank (or the utility) decides."""
    domain.check_dispute_move(dispute.status, DisputeStatus.UNDER_REVIEW)
    notes = "\n".join(n for n in (dispute.evidence_notes, evidence_notes) if n) or None
    await session.execute(
        update(disputes)
        .where(disputes.c.dispute_id == dispute.dispute_id)
        .values(status=DisputeStatus.UNDER_REVIEW, evidence_notes=notes, updated_at=datetime.now(UTC))
    )
    await _store_attachments(session, dispute.dispute_id, attachments or [], actor)
    await audit.record(
        session,
        audit_log,
        actor=actor,
        action="payment.dispute_under_review",
        subject=dispute.payment_id,
        before={"dispute_status": dispute.status},
        after={"dispute_status": DisputeStatus.UNDER_REVIEW, "dispute_id": dispute.dispute_id},
    )


async def close_dispute(
    session: AsyncSession, dispute: Row[Any], *, outcome: DisputeOutcome, actor: str, at: datetime | None = None
) -> None:
    """Won: the payment is Posted again. Lost: Charged back, its allocation reversed (the item is owed again)."""
    target = DisputeStatus.WON if outcome is DisputeOutcome.WON else DisputeStatus.LOST
    domain.check_dispute_move(dispute.status, target)
    payment = await find_for_update(session, dispute.payment_id)
    now = at or datetime.now(UTC)
    status = domain.status_after_dispute(outcome)
    values: dict[str, Any] = {"status": status}
    if payment.status == PaymentStatus.DISPUTED and status is PaymentStatus.CHARGED_BACK:
        item = await lock_item(session, payment.account_number, payment.payment_type, payment.item_reference)
        await allocate(session, payment.account_number, item, -payment.applied)
        values["settlement_status"] = domain.NOT_SETTLED
    elif payment.status != PaymentStatus.DISPUTED:
        values = {}  # a refund or cancellation already took the payment elsewhere: the dispute closes on its own
    await session.execute(
        update(disputes)
        .where(disputes.c.dispute_id == dispute.dispute_id)
        .values(status=target, outcome=outcome.value, closed_by=actor, closed_at=now, updated_at=now)
    )
    if values:
        await session.execute(update(payments).where(payments.c.payment_id == payment.payment_id).values(**values))
    await audit.record(
        session,
        audit_log,
        actor=actor,
        action="payment.dispute_closed",
        subject=payment.payment_id,
        before={"status": payment.status, "dispute_status": dispute.status},
        after={"status": values.get("status", payment.status), "dispute_status": target, "outcome": outcome.value},
    )
    closed = PaymentDisputeClosed(
        dispute_id=dispute.dispute_id,
        payment_id=payment.payment_id,
        receipt_number=payment.receipt_number,
        account_number=payment.account_number,
        amount=Money(amount=payment.amount, currency=payment.currency),
        outcome=outcome.value,
        closed_by=actor,
        closed_at=now,
    )
    await emit(session, "payment.dispute_closed", payment.account_number, closed)
    if values:
        await announce_status(session, await _payment_row(session, payment.payment_id), payment.status, at=now)


# --- Stripe's disputes, as the gateway bridge normalised them ---

GATEWAY_OUTCOMES = {"dispute_won": DisputeOutcome.WON, "dispute_lost": DisputeOutcome.LOST}


async def on_gateway_dispute(
    session: AsyncSession,
    payment: Row[Any],
    gateway_status: str,
    *,
    gateway_dispute_id: str,
    reason: str | None,
    at: datetime,
) -> str:
    """Apply a Stripe dispute event to a (locked) payment; returns what happened, for the audit trail.

    Stripe sends them out of order too: a dispute first heard of when it closes is opened and closed at once; an
    event for a dispute already past it changes nothing."""
    found = (
        await session.execute(
            select(disputes).where(disputes.c.gateway_dispute_id == gateway_dispute_id).with_for_update()
        )
    ).first()
    if found is None:
        if payment.status != PaymentStatus.POSTED:
            return "ignored"
        await open_dispute(
            session,
            payment,
            reason=reason or "Cardholder dispute",
            opened_by=SYSTEM,
            source="stripe",
            gateway_dispute_id=gateway_dispute_id,
            at=at,
        )
        found = await locked_dispute(
            session,
            (
                await session.execute(
                    select(disputes.c.dispute_id).where(disputes.c.gateway_dispute_id == gateway_dispute_id)
                )
            ).scalar_one(),
        )
    if gateway_status == "disputed":
        return "opened"
    if gateway_status == "dispute_under_review":
        if not domain.dispute_moves(found.status, DisputeStatus.UNDER_REVIEW):
            return "ignored"
        await review_dispute(session, found, actor=SYSTEM)
        return "under_review"
    outcome = GATEWAY_OUTCOMES[gateway_status]
    if not domain.dispute_moves(found.status, DisputeStatus.WON):
        return "ignored"
    await close_dispute(session, found, outcome=outcome, actor=SYSTEM, at=at)
    return outcome.value
