"""Scheduled payout runs: a periodic check, on the service's clock, that makes each schedule's run for the current
pay period (weekly: from Monday; monthly: from the 1st) from the lines its payees earned before that period.

Once per period, whatever restarts: the run is created in the same transaction as its `scheduled_runs` row
(primary key schedule + period start), inserted first. A second instance checking at the same moment waits on that
key and then finds it taken; a check after a restart finds the row and does nothing; a crash before the commit
leaves neither, and the next check makes the run. A run is made for the period the clock is in, so a period whose
first day passed while the service was down still gets its run at the next check.

A scheduled run is created like a manual one (maker `scheduler`) and waits for a billing manager's approval.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.payouts import domain, runs
from services.payouts.settings import PayoutsSettings
from services.payouts.storage import scheduled_runs
from shared.errors import Rejected
from shared.scheduling import Clock, Periodic

log = logging.getLogger(__name__)

# The maker of scheduled runs; any billing manager may approve them.
SCHEDULER = "scheduler"


@dataclass(frozen=True)
class ScheduledRun:
    """What one check did for one schedule and period."""

    schedule: str
    period_start: date
    outcome: str  # "created" or "nothing_to_pay"
    run_id: str | None = None
    detail: str | None = None


def filters_for(schedule: domain.Schedule, start: date, today: date) -> runs.RunFilters:
    """A scheduled run pays the schedule's payees every open line earned before its period, at today's rates."""
    return runs.RunFilters(as_of=today, period_to=start - timedelta(days=1), schedules=(schedule.value,))


async def make_period_run(
    session: AsyncSession, schedule: domain.Schedule, start: date, settings: PayoutsSettings, clock: Clock
) -> ScheduledRun | None:
    """Make the run of one schedule and period unless it was made already (None), in the caller's transaction."""
    now = clock.now()
    claimed = (
        await session.execute(
            pg_insert(scheduled_runs)
            .values(schedule=schedule.value, period_start=start, outcome="checking", checked_at=now)
            .on_conflict_do_nothing()
            .returning(scheduled_runs.c.schedule)
        )
    ).first()
    if claimed is None:
        return None
    filters = filters_for(schedule, start, clock.today())
    try:
        async with session.begin_nested():
            run_id = await runs.create_run(
                session,
                filters,
                settings,
                actor=SCHEDULER,
                idempotency_key=f"scheduled/{schedule.value}/{start.isoformat()}",
            )
        done = ScheduledRun(schedule.value, start, "created", run_id=run_id)
    except Rejected as exc:
        if exc.code != "nothing_to_pay":
            raise
        done = ScheduledRun(schedule.value, start, "nothing_to_pay", detail=exc.detail)
    await session.execute(
        scheduled_runs.update()
        .where(scheduled_runs.c.schedule == schedule.value, scheduled_runs.c.period_start == start)
        .values(run_id=done.run_id, outcome=done.outcome, detail=done.detail)
    )
    return done


async def make_due_runs(
    sessions: async_sessionmaker[AsyncSession], settings: PayoutsSettings, clock: Clock
) -> list[ScheduledRun]:
    """One check: each schedule's run for the clock's current period, if it does not exist yet."""
    made: list[ScheduledRun] = []
    for schedule, start in domain.due_periods(clock.today()):
        async with sessions() as session, session.begin():
            done = await make_period_run(session, schedule, start, settings, clock)
        if done is not None:
            made.append(done)
    return made


class RunScheduler(Periodic[list[ScheduledRun]]):
    """Checks every `every_seconds` while the service runs (0: never; runs are then made by `run_once`)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: PayoutsSettings,
        clock: Clock,
        *,
        every_seconds: float,
    ) -> None:
        # The next check retries a failed one: nothing of a failed check was committed.
        super().__init__(
            every_seconds=every_seconds, name="payouts-scheduler", failure="payout schedule check failed", log=log
        )
        self.sessions = sessions
        self.settings = settings
        self.clock = clock

    async def check(self, now: datetime | None) -> list[ScheduledRun]:
        """One check now (or at `now`, which also sets the clock)."""
        if now is not None:
            self.clock.set(now)
        made = await make_due_runs(self.sessions, self.settings, self.clock)
        for done in made:
            log.info("scheduled payout run", extra={"schedule": done.schedule, "outcome": done.outcome})
        return made
