"""Approvals (maker-checker): a change above its limit waits until someone other than its requester decides.

Each service keeps its own `approvals` table (`approvals_table(metadata)`, like the inbox) and applies what was
approved itself, in the transaction that records the decision: the decision takes the row lock, so two managers
approving at once apply it exactly once (the second gets a 409). `approval.requested` and `approval.decided` are
staged on the service's events topic in the same transactions.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, DateTime, Index, MetaData, Numeric, String, Table, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from shared.contracts import new_envelope
from shared.contracts.events import ApprovalDecided, ApprovalRequested, Money
from shared.errors import Conflict, Forbidden, NotFound
from shared.outbox import stage


class ApprovalStatus(StrEnum):
    PENDING = "Pending approval"
    APPROVED = "Approved"
    REJECTED = "Rejected"


def approvals_table(metadata: MetaData) -> Table:
    """The `approvals` table of a service: one row per request, with what to apply once approved."""
    return Table(
        "approvals",
        metadata,
        Column("approval_id", String(40), primary_key=True),
        Column("kind", String(40), nullable=False),
        Column("subject", String(100), nullable=False),
        Column("account_number", String(50)),
        Column("amount", Numeric(14, 2)),
        Column("currency", String(3)),
        Column("payload", JSONB, nullable=False),
        Column("reason", String(500), nullable=False),
        Column("requested_by", String(200), nullable=False),
        Column("requested_at", DateTime(timezone=True), nullable=False),
        Column("status", String(20), nullable=False),
        Column("decided_by", String(200)),
        Column("decided_at", DateTime(timezone=True)),
        Column("decision_reason", String(500)),
        Index(None, "status", "requested_at"),
        Index(None, "subject"),
    )


def needs_approval(amount: Decimal, limit: Decimal) -> bool:
    """At or under the limit a change applies at once; above it, it waits for a second person."""
    return amount > limit


@dataclass(frozen=True, slots=True)
class Approval:
    approval_id: str
    kind: str
    subject: str
    account_number: str | None
    amount: Decimal | None
    currency: str | None
    payload: dict[str, Any]
    reason: str
    requested_by: str
    requested_at: datetime
    status: ApprovalStatus
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision_reason: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "approval_id": self.approval_id,
            "kind": self.kind,
            "subject": self.subject,
            "account_number": self.account_number,
            "amount": f"{self.amount:.2f}" if self.amount is not None else None,
            "currency": self.currency,
            "payload": self.payload,
            "reason": self.reason,
            "requested_by": self.requested_by,
            "requested_at": self.requested_at.isoformat(),
            "status": self.status.value,
            "decided_by": self.decided_by,
            "decided_at": self.decided_at.isoformat() if self.decided_at else None,
            "decision_reason": self.decision_reason,
        }


def check_decision(approval: Approval, approver: str) -> None:
    """The rules of deciding: only a pending request, and never by the person who asked for it."""
    if approval.status is not ApprovalStatus.PENDING:
        raise Conflict("already_decided", f"approval {approval.approval_id} is already {approval.status.value}")
    if approver == approval.requested_by:
        raise Forbidden("own_request", "the requester cannot approve or reject their own request", field="approver")


def _approval(row: Any) -> Approval:
    return Approval(
        approval_id=row.approval_id,
        kind=row.kind,
        subject=row.subject,
        account_number=row.account_number,
        amount=row.amount,
        currency=row.currency,
        payload=dict(row.payload),
        reason=row.reason,
        requested_by=row.requested_by,
        requested_at=row.requested_at,
        status=ApprovalStatus(row.status),
        decided_by=row.decided_by,
        decided_at=row.decided_at,
        decision_reason=row.decision_reason,
    )


async def request_approval(
    session: AsyncSession,
    table: Table,
    *,
    topic: str,
    source: str,
    kind: str,
    subject: str,
    payload: dict[str, Any],
    requested_by: str,
    reason: str,
    amount: Decimal | None = None,
    currency: str | None = None,
    account_number: str | None = None,
    now: datetime | None = None,
) -> Approval:
    """Record a pending request and stage `approval.requested`, in the caller's transaction."""
    approval = Approval(
        approval_id=f"APR-{uuid.uuid4().hex[:12]}",
        kind=kind,
        subject=subject,
        account_number=account_number,
        amount=amount,
        currency=currency,
        payload=payload,
        reason=reason,
        requested_by=requested_by,
        requested_at=now or datetime.now(UTC),
        status=ApprovalStatus.PENDING,
    )
    await session.execute(
        table.insert().values(
            approval_id=approval.approval_id,
            kind=kind,
            subject=subject,
            account_number=account_number,
            amount=amount,
            currency=currency,
            payload=payload,
            reason=reason,
            requested_by=requested_by,
            requested_at=approval.requested_at,
            status=approval.status.value,
        )
    )
    money = Money(amount=amount, currency=currency or "USD") if amount is not None else None
    data = ApprovalRequested(
        approval_id=approval.approval_id,
        kind=kind,
        subject=subject,
        amount=money,
        requested_by=requested_by,
        reason=reason,
        requested_at=approval.requested_at,
    )
    await stage(
        session, topic, new_envelope("approval.requested", source=source, subject=account_number or subject, data=data)
    )
    return approval


async def decide(
    session: AsyncSession,
    table: Table,
    approval_id: str,
    *,
    topic: str,
    source: str,
    approver: str,
    approve: bool,
    reason: str | None = None,
    now: datetime | None = None,
) -> Approval:
    """Approve or reject under the row lock and stage `approval.decided`; the caller applies an approval in the
    same transaction, so it happens exactly once however many people press the button."""
    row = (
        await session.execute(select(table).where(table.c.approval_id == approval_id).with_for_update())
    ).one_or_none()
    if row is None:
        raise NotFound("unknown_approval", f"no approval {approval_id}", field="approval_id")
    pending = _approval(row)
    check_decision(pending, approver)
    decided_at = now or datetime.now(UTC)
    status = ApprovalStatus.APPROVED if approve else ApprovalStatus.REJECTED
    await session.execute(
        update(table)
        .where(table.c.approval_id == approval_id)
        .values(status=status.value, decided_by=approver, decided_at=decided_at, decision_reason=reason)
    )
    data = ApprovalDecided(
        approval_id=approval_id,
        kind=pending.kind,
        subject=pending.subject,
        approved=approve,
        decided_by=approver,
        reason=reason,
        decided_at=decided_at,
    )
    subject = pending.account_number or pending.subject
    await stage(session, topic, new_envelope("approval.decided", source=source, subject=subject, data=data))
    return dataclasses.replace(
        pending, status=status, decided_by=approver, decided_at=decided_at, decision_reason=reason
    )


async def pending_approvals(session: AsyncSession, table: Table, *, limit: int = 100) -> list[Approval]:
    """Requests waiting for a decision, oldest first."""
    rows = await session.execute(
        select(table)
        .where(table.c.status == ApprovalStatus.PENDING.value)
        .order_by(table.c.requested_at, table.c.approval_id)
        .limit(limit)
    )
    return [_approval(r) for r in rows]
