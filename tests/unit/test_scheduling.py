"""The services' shared clock and periodic pass (`shared.scheduling`), without I/O: the timer is stepped by a sleep
the test controls, so nothing here waits on the machine's speed."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.scheduling import Clock, Periodic

log = logging.getLogger("tests.scheduling")
ZONES = ["UTC", "America/New_York", "Europe/Berlin", "Asia/Kolkata", "Pacific/Kiritimati", "Pacific/Pago_Pago"]


class TestClock:
    def test_an_unset_clock_follows_the_wall_clock_in_utc(self) -> None:
        before = datetime.now(UTC)
        now = Clock(ZoneInfo("UTC")).now()
        assert before <= now <= datetime.now(UTC)
        assert now.utcoffset() == timedelta(0)

    def test_a_set_clock_stays_at_its_moment_until_set_back_to_the_wall_clock(self) -> None:
        clock = Clock(ZoneInfo("UTC"))
        moment = datetime(2020, 6, 1, 9, 30, tzinfo=UTC)
        clock.set(moment)
        assert clock.now() == moment and clock.today() == date(2020, 6, 1)
        clock.set(None)
        assert clock.now() > moment

    def test_a_naive_moment_is_refused_and_the_clock_keeps_its_own(self) -> None:
        moment = datetime(2020, 6, 1, tzinfo=UTC)
        clock = Clock(ZoneInfo("UTC"), fixed=moment)
        with pytest.raises(ValueError, match="aware"):
            clock.set(datetime(2021, 1, 1))
        assert clock.now() == moment

    def test_today_is_the_utilitys_calendar_day_not_utcs(self) -> None:
        late_in_new_york = datetime(2025, 3, 1, 3, 0, tzinfo=UTC)
        assert Clock(ZoneInfo("America/New_York"), fixed=late_in_new_york).today() == date(2025, 2, 28)
        assert Clock(ZoneInfo("UTC"), fixed=late_in_new_york).today() == date(2025, 3, 1)

    @given(
        moment=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)),
        zone=st.sampled_from(ZONES),
    )
    def test_today_is_the_set_moment_seen_in_the_zone(self, moment: datetime, zone: str) -> None:
        clock = Clock(ZoneInfo(zone), fixed=moment)
        assert clock.today() == moment.astimezone(ZoneInfo(zone)).date()
        assert abs((clock.today() - moment.date()).days) <= 1  # never more than a day from UTC's


class Steps:
    """A sleep the test steps: each call records its interval, says so, and waits until the test lets it go."""

    def __init__(self) -> None:
        self.intervals: list[float] = []
        self.asleep: asyncio.Queue[float] = asyncio.Queue()
        self.wake: asyncio.Queue[None] = asyncio.Queue()

    async def __call__(self, seconds: float) -> None:
        self.intervals.append(seconds)
        self.asleep.put_nowait(seconds)
        await self.wake.get()

    async def next_sleep(self) -> float:
        return await asyncio.wait_for(self.asleep.get(), timeout=60)

    def go_on(self) -> None:
        self.wake.put_nowait(None)


class Counting(Periodic[int]):
    """A pass that counts itself, remembers the moment it was given and fails when told to."""

    def __init__(self, steps: Steps | None = None, *, every_seconds: float = 300.0) -> None:
        kwargs = {"sleep": steps} if steps is not None else {}
        super().__init__(every_seconds=every_seconds, name="test-pass", failure="test pass failed", log=log, **kwargs)
        self.passes = 0
        self.given: list[datetime | None] = []
        self.fail_next = 0
        self.running = 0
        self.most_at_once = 0
        self.hold: asyncio.Event | None = None

    async def check(self, now: datetime | None) -> int:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            if self.hold is not None:
                await self.hold.wait()
            self.given.append(now)
            if self.fail_next:
                self.fail_next -= 1
                raise RuntimeError("the database went away")
            self.passes += 1
            return self.passes
        finally:
            self.running -= 1


class TestPeriodic:
    async def test_the_timer_runs_a_pass_at_start_then_one_per_interval(self) -> None:
        steps = Steps()
        timer = Counting(steps, every_seconds=42.5)
        timer.start()
        try:
            assert await steps.next_sleep() == 42.5
            assert timer.passes == 1
            steps.go_on()
            assert await steps.next_sleep() == 42.5
            assert timer.passes == 2 and timer.given == [None, None]  # the timer's passes use the clock's now
        finally:
            await timer.stop()

    async def test_a_failed_pass_is_logged_and_the_next_one_retries_after_the_same_interval(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        steps = Steps()
        timer = Counting(steps, every_seconds=7)
        timer.fail_next = 1
        with caplog.at_level(logging.ERROR, logger=log.name):
            timer.start()
            try:
                assert await steps.next_sleep() == 7
                assert timer.passes == 0
                [record] = [r for r in caplog.records if r.name == log.name]
                assert record.getMessage() == "test pass failed"
                assert record.exc_info is not None and "database went away" in str(record.exc_info[1])
                steps.go_on()
                assert await steps.next_sleep() == 7
                assert timer.passes == 1
            finally:
                await timer.stop()

    async def test_no_interval_means_no_timer_and_passes_only_on_demand(self) -> None:
        steps = Steps()
        timer = Counting(steps, every_seconds=0)
        timer.start()
        assert await timer.run_once() == 1
        await asyncio.sleep(0)  # a timer, had one started, would have had its turn
        assert timer.passes == 1 and steps.intervals == []
        await timer.stop()

    async def test_an_on_demand_pass_gets_its_moment_and_returns_its_result(self) -> None:
        timer = Counting()
        moment = datetime(2020, 6, 8, 6, 0, tzinfo=UTC)
        assert await timer.run_once(moment) == 1
        assert await timer.run_once() == 2
        assert timer.given == [moment, None]

    async def test_an_on_demand_pass_that_fails_raises_to_its_caller(self) -> None:
        timer = Counting()
        timer.fail_next = 1
        with pytest.raises(RuntimeError, match="database went away"):
            await timer.run_once()
        assert await timer.run_once() == 1  # the lock was released

    async def test_the_timers_pass_and_on_demand_ones_never_overlap(self) -> None:
        steps = Steps()
        timer = Counting(steps)
        timer.hold = asyncio.Event()
        timer.start()
        demanded = [asyncio.create_task(timer.run_once()) for _ in range(3)]
        for _ in range(5):
            await asyncio.sleep(0)  # let every pass reach the lock or the held check
        assert timer.running == 1
        timer.hold.set()
        assert sorted(await asyncio.gather(*demanded)) == [2, 3, 4]  # the timer took the lock first
        await steps.next_sleep()
        assert timer.passes == 4 and timer.most_at_once == 1
        await timer.stop()

    async def test_stop_ends_the_timer_while_it_waits_and_no_pass_follows(self) -> None:
        steps = Steps()
        timer = Counting(steps)
        timer.start()
        await steps.next_sleep()
        await timer.stop()
        steps.go_on()
        await asyncio.sleep(0)
        assert timer.passes == 1
        await timer.stop()  # a second stop is harmless

    async def test_stop_during_a_pass_cancels_it_rather_than_logging_a_failure(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        timer = Counting(Steps())
        timer.hold = asyncio.Event()
        with caplog.at_level(logging.ERROR, logger=log.name):
            timer.start()
            for _ in range(3):
                await asyncio.sleep(0)
            assert timer.running == 1
            await timer.stop()
        assert timer.passes == 0 and timer.running == 0
        assert [r for r in caplog.records if r.name == log.name] == []
