"""An event consumer waits for records in aiokafka's poll alone: an idle consumer turns seldom, and a record
arriving is never held back by a sleep after an empty poll (`messaging.wait_in_the_poll`)."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import anyio
import pytest
from faststream.kafka import KafkaBroker

from shared.messaging import EventConsumer


class FakeKafkaConsumer:
    """What the subscriber's poll asks of aiokafka: `getmany`, answered from a script of fetch results."""

    def __init__(self, *answers: dict[str, list[str]]) -> None:
        self.answers = list(answers)
        self.calls: list[dict[str, Any]] = []

    async def getmany(self, *, timeout_ms: int, max_records: int | None) -> dict[str, list[str]]:
        self.calls.append({"timeout_ms": timeout_ms, "max_records": max_records})
        return self.answers.pop(0)


def registered(batch_wait_ms: int = 500, max_batch: int = 200) -> Any:
    unused: Any = None
    consumer = EventConsumer(
        service="kpi",
        name="payments",
        topic="payments.events.v1",
        handlers={},
        session_factory=unused,
        inbox=unused,
        batch_wait_ms=batch_wait_ms,
        max_batch=max_batch,
    )
    consumer.register(KafkaBroker("127.0.0.1:9"))  # never connected: registering only builds the subscriber
    return consumer.subscriber


@pytest.fixture
def no_sleeping(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the poll slept")

    monkeypatch.setattr(anyio, "sleep", refuse)
    monkeypatch.setattr(asyncio, "sleep", refuse)


@pytest.mark.usefixtures("no_sleeping")
async def test_an_empty_poll_waits_in_aiokafka_only_and_returns_nothing() -> None:
    subscriber = registered(batch_wait_ms=750, max_batch=120)
    kafka = FakeKafkaConsumer({})

    assert await subscriber.get_msg(kafka) == ()
    assert kafka.calls == [{"timeout_ms": 750, "max_records": 120}]


@pytest.mark.usefixtures("no_sleeping")
async def test_records_of_every_partition_come_back_as_one_batch_in_partition_order() -> None:
    subscriber = registered()
    kafka = FakeKafkaConsumer({"p0": ["a", "b"], "p3": ["c"]})

    assert await subscriber.get_msg(kafka) == ("a", "b", "c")
    assert kafka.calls == [{"timeout_ms": 500, "max_records": 200}]


def test_faststreams_consume_loop_still_asks_the_subscribers_get_msg() -> None:
    # The replacement takes effect only while FastStream's loop polls through `self.get_msg`; after an upgrade that
    # stops doing so, consumers would fall back to FastStream's own 20 ms wait and sleep (slower when idle, never late).
    loop = inspect.getsource(type(registered())._run_consume_loop)
    assert "await self.get_msg(" in loop
