"""The audit trail: who did what to which subject, when, what it was before and after, and why."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from sqlalchemy import Column, DateTime, Insert, MetaData, String, Table, Text, func, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession


def audit_table(metadata: MetaData) -> Table:
    """The `audit_log` table of a service."""
    return Table(
        "audit_log",
        metadata,
        Column("id", String(40), primary_key=True),
        Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("actor", Text, nullable=False),
        Column("action", String(50), nullable=False),
        Column("subject", String(100), nullable=False, index=True),
        Column("before", JSONB),
        Column("after", JSONB),
        Column("reason", Text),
    )


def as_json(value: Any) -> Any:
    """A value as the audit trail keeps it: money, times and ids as exact strings, never floats."""
    if isinstance(value, dict):
        return {str(k): as_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [as_json(v) for v in value]
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, date):  # datetime too
        return value.isoformat()
    if isinstance(value, Enum):
        return as_json(value.value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, float):
        raise TypeError("the audit trail keeps no floats: pass money as Decimal")
    return value


@dataclass(frozen=True)
class AuditEntry:
    """One line of the trail."""

    id: str
    at: datetime
    actor: str
    action: str
    subject: str
    before: Any
    after: Any
    reason: str | None

    def as_json(self) -> dict[str, Any]:
        """The entry as an API shows it."""
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "subject": self.subject,
            "before": self.before,
            "after": self.after,
            "reason": self.reason,
        }


def entry(
    *,
    actor: str,
    action: str,
    subject: str,
    before: Any = None,
    after: Any = None,
    reason: str | None = None,
    at: datetime | None = None,
) -> AuditEntry:
    """An entry as `record` writes it; for a caller that writes it inside a larger statement (a CTE)."""
    if at is not None and at.tzinfo is None:
        raise ValueError("audit times are timezone-aware")
    return AuditEntry(
        id=str(uuid.uuid4()),
        at=(at or datetime.now(UTC)).astimezone(UTC),
        actor=actor,
        action=action,
        subject=subject,
        before=as_json(before),
        after=as_json(after),
        reason=reason,
    )


def insert(table: Table, written: AuditEntry) -> Insert:
    """The insert of one entry into a service's audit table."""
    return table.insert().values(
        id=written.id,
        at=written.at,
        actor=written.actor,
        action=written.action,
        subject=written.subject,
        before=written.before,
        after=written.after,
        reason=written.reason,
    )


async def record(
    session: AsyncSession,
    table: Table,
    *,
    actor: str,
    action: str,
    subject: str,
    before: Any = None,
    after: Any = None,
    reason: str | None = None,
    at: datetime | None = None,
) -> AuditEntry:
    """Add an entry in the caller's transaction, so it stands or falls with the change it describes."""
    written = entry(actor=actor, action=action, subject=subject, before=before, after=after, reason=reason, at=at)
    await session.execute(insert(table, written))
    return written


async def history(session: AsyncSession, table: Table, subject: str) -> list[AuditEntry]:
    """Every entry about `subject`, oldest first."""
    rows = await session.execute(select(table).where(table.c.subject == subject).order_by(table.c.at, table.c.id))
    return [
        AuditEntry(
            id=r.id,
            at=r.at.astimezone(UTC),
            actor=r.actor,
            action=r.action,
            subject=r.subject,
            before=r.before,
            after=r.after,
            reason=r.reason,
        )
        for r in rows
    ]
