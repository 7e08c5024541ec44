"""The service's clock and its periodic passes: one settable clock (the business day, and a moment tests or an
operator set) and one restart-safe timer that runs a pass every N seconds while the service runs.

Hand-written, about forty lines, rather than a library: APScheduler 3.x (4.x is a pre-release) brings job stores,
executors and triggers we do not use, and keeps its own runs of a job apart but knows nothing of a pass run on
demand (`paydesk check-collections`, a test walking the calendar), which must wait for the timer's. A pass here is
restart-safe because of what it does (one transaction at a time, claims keyed in the database), not because of the
timer: the timer only runs it again, so nothing of it needs persisting. freezegun and time-machine patch the
interpreter's clock for tests only; the service's clock is also set in a running process (`paydesk
check-collections --at`) and never moves the wall clock of anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from typing import Generic, TypeVar
from zoneinfo import ZoneInfo

T = TypeVar("T")


class Clock:
    """The service's idea of now: the wall clock, or a moment a test (or an operator) sets."""

    def __init__(self, zone: ZoneInfo, fixed: datetime | None = None) -> None:
        self.zone = zone
        self.fixed = fixed

    def now(self) -> datetime:
        return self.fixed or datetime.now(UTC)

    def today(self) -> date:
        """The utility's calendar day (due dates, windows and pay periods are counted in it)."""
        return self.now().astimezone(self.zone).date()

    def set(self, moment: datetime | None) -> None:
        """Freeze the clock at `moment` (None: back to the wall clock)."""
        if moment is not None and moment.tzinfo is None:
            raise ValueError("the clock is set to an aware datetime")
        self.fixed = moment


class Periodic(ABC, Generic[T]):
    """A pass (`check`) every `every_seconds` while the service runs (0 or less: never; passes are then only run
    on demand by `run_once`). A failed pass is logged with `failure` on the service's logger and the next one, after
    the same interval, retries: a pass must leave nothing half-done when it raises."""

    def __init__(
        self,
        *,
        every_seconds: float,
        name: str,
        failure: str,
        log: logging.Logger,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.every_seconds = every_seconds
        self.name = name
        self.failure = failure
        self.log = log
        self._sleep = sleep
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @abstractmethod
    async def check(self, now: datetime | None) -> T:
        """One pass, at the clock's now or at `now` (a moment a test or an operator gives)."""

    async def run_once(self, now: datetime | None = None) -> T:
        """One pass now (or at `now`); the timer's pass and an on-demand one never overlap within one process."""
        async with self._lock:
            return await self.check(now)

    def start(self) -> None:
        if self.every_seconds > 0:
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:
                self.log.exception(self.failure)
            await self._sleep(self.every_seconds)
