"""The render worker yields the CPU to the event consumers while they are behind, for a bounded time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from aiokafka.errors import IllegalStateError
from aiokafka.structs import TopicPartition

from services.receipts.app import unapplied_events
from services.receipts.commands import RenderWorker
from shared.messaging import EventConsumer
from tests.support.helpers import at_least, eventually


class CountingWorker(RenderWorker):
    """A render worker whose passes only count (no database), behind a backlog the test sets."""

    def __init__(self, *, yield_seconds: float, behind: int) -> None:
        super().__init__(
            cast(Any, None),
            cast(Any, None),
            batch=32,
            idle_seconds=0.01,
            backlog=self._backlog,
            yield_seconds=yield_seconds,
            check_seconds=0.01,
        )
        self.behind = behind
        self.checks = 0
        self.passes = 0

    async def _backlog(self) -> int:
        self.checks += 1
        return self.behind

    async def run_once(self) -> int:
        self.passes += 1
        return 0


class TestRenderWorkerYieldsToConsumers:
    async def test_renders_wait_while_the_consumers_are_behind_and_follow_once_they_caught_up(self) -> None:
        worker = CountingWorker(yield_seconds=600, behind=5)
        worker.start()
        try:
            await eventually(lambda: at_least(lambda: worker.checks, 5), within=60)
            assert worker.passes == 0  # checked five times, still behind, far from the bound: no render yet
            worker.behind = 0
            await eventually(lambda: at_least(lambda: worker.passes, 1), within=60)
        finally:
            await worker.stop()

    async def test_renders_anyway_once_the_consumers_stay_behind_for_the_bound(self) -> None:
        worker = CountingWorker(yield_seconds=0.05, behind=5)
        worker.start()
        try:
            # Rendering never starves: a pass after each bound, however long the consumers stay behind.
            await eventually(lambda: at_least(lambda: worker.passes, 3), within=60)
            assert worker.behind == 5
        finally:
            await worker.stop()

    async def test_without_a_bound_the_worker_never_asks(self) -> None:
        worker = CountingWorker(yield_seconds=0, behind=5)
        worker.start()
        try:
            await eventually(lambda: at_least(lambda: worker.passes, 3), within=60)
            assert worker.checks == 0
        finally:
            await worker.stop()


@dataclass
class FakeKafkaConsumer:
    """What `unapplied_events` reads of aiokafka's consumer: its partitions, their highwater and positions."""

    highwaters: dict[TopicPartition, int | None]
    positions: dict[TopicPartition, int]
    revoked: set[TopicPartition] = field(default_factory=set)

    def assignment(self) -> set[TopicPartition]:
        return set(self.highwaters)

    def highwater(self, partition: TopicPartition) -> int | None:
        return self.highwaters[partition]

    async def position(self, partition: TopicPartition) -> int:
        if partition in self.revoked:
            raise IllegalStateError(f"Partition {partition} is not assigned")
        return self.positions[partition]


@dataclass
class FakeSubscriber:
    consumer: FakeKafkaConsumer


@dataclass
class FakeEventConsumer:
    subscriber: FakeSubscriber | None


async def test_unapplied_events_count_what_the_fetches_saw_and_the_consumers_did_not_take_yet() -> None:
    a, b, c, d = (TopicPartition("payments.events.v1", n) for n in range(4))
    kafka = FakeKafkaConsumer(
        highwaters={a: 120, b: 40, c: None, d: 90},  # c: not fetched yet
        positions={a: 100, b: 40, c: 0, d: 10},
        revoked={d},  # taken away by a rebalance after assignment() was read
    )
    consumers = [FakeEventConsumer(FakeSubscriber(kafka)), FakeEventConsumer(None)]  # the second not started
    assert await unapplied_events(cast(list[EventConsumer], consumers)) == 20
