"""The missing-items scheduler: a periodic pass, on the service's clock, that turns expected items past their
T+N window into `missing` with one `missing_deposit` exception per deposit or payout, on days no statement arrives
(an import or a payout runs the whole reconciliation, which does the same).

Restart-safe: a pass is one transaction under the reconciliation run's advisory lock, so a pass killed half-way
leaves nothing, two instances never interleave with each other or with a run, and an item already missing is not
picked again; an exception is raised once per open subject (`commands.raise_exception`), so a repeated pass stages
no second `reconciliation.exception_raised`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.reconciliation import commands, domain
from services.reconciliation.domain import ItemStatus
from services.reconciliation.storage import expected_items
from shared.scheduling import Clock, Periodic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MissingPass:
    items: int
    exceptions: int


async def mark_missing(session: AsyncSession, *, today: date, now: datetime) -> MissingPass:
    """Expected items past their window become missing, with their exceptions, in the caller's transaction."""
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtext("reconciliation.run"))))
    candidates = (
        await session.execute(
            select(expected_items)
            .where(expected_items.c.status == ItemStatus.EXPECTED, expected_items.c.origin_date < today)
            .order_by(expected_items.c.item_id)
        )
    ).all()
    late = [r for r in candidates if domain.past_window(r.origin_date, r.window_days, today)]
    if not late:
        return MissingPass(0, 0)
    await session.execute(
        expected_items.update()
        .where(expected_items.c.item_id.in_([r.item_id for r in late]))
        .values(status=ItemStatus.MISSING)
    )
    return MissingPass(len(late), await commands.raise_missing(session, late, now=now))


class MissingSchedule(Periodic[MissingPass]):
    """Runs a pass every `every_seconds` while the service runs; `run_once` runs one now (or at a set moment)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock, *, every_seconds: float) -> None:
        # The next pass retries a failed one: a failed pass changed nothing (one transaction).
        super().__init__(
            every_seconds=every_seconds, name="reconciliation-missing", failure="missing items pass failed", log=log
        )
        self.sessions = sessions
        self.clock = clock

    async def check(self, now: datetime | None) -> MissingPass:
        if now is not None:
            self.clock.set(now)
        async with self.sessions() as session, session.begin():
            result = await mark_missing(session, today=self.clock.today(), now=self.clock.now())
        if result.items:
            log.info("missing items pass", extra={"items": result.items, "exceptions": result.exceptions})
        return result
