"""The expiry of credit notes: an active note past its expiry date becomes Expired, on a schedule in the service
and on demand from the `paydesk expire-credit-notes` command."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.credit_notes import domain
from services.credit_notes.commands import SOURCE, credit_note
from services.credit_notes.storage import audit_log, credit_notes
from shared import audit
from shared.contracts import Topic, new_envelope
from shared.contracts.events import CreditNoteExpired, Money
from shared.outbox import stage
from shared.scheduling import Periodic

log = logging.getLogger(__name__)


async def expire_due(session: AsyncSession, *, now: datetime, limit: int = 500) -> int:
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
        expired = credit_note(note).expire(now)
        await session.execute(
            update(credit_notes)
            .where(credit_notes.c.credit_note_number == note.credit_note_number)
            .values(status=expired.status.value, expired_at=now)
        )
        await audit.record(
            session,
            audit_log,
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
    sessions: async_sessionmaker[AsyncSession], *, now: datetime | None = None, batch: int = 500
) -> int:
    """Expire every credit note due by `now`, in batches of one transaction each; returns how many."""
    now = now or datetime.now(UTC)
    total = 0
    while True:
        async with sessions() as session, session.begin():
            count = await expire_due(session, now=now, limit=batch)
        total += count
        if count < batch:
            return total


class ExpirySchedule(Periodic[int]):
    """Runs an expiry pass every `every_seconds` while the service runs."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, every_seconds: float) -> None:
        # The next pass retries a failed one; nothing was half-done, each batch is one transaction.
        super().__init__(
            every_seconds=every_seconds, name="credit_notes-expiry", failure="credit-note expiry pass failed", log=log
        )
        self.sessions = sessions

    async def check(self, now: datetime | None) -> int:
        """One expiry pass (at the wall clock's now, or at `now`); returns how many credit notes expired."""
        count = await run_expiry_pass(self.sessions, now=now)
        if count:
            log.info("credit notes expired", extra={"count": count})
        return count
