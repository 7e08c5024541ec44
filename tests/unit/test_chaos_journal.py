"""The chaos harness's "other systems" send again everything a wiped broker had acknowledged, whenever it was
acknowledged: the bookkeeping alone, and the driver's publish racing a wipe with a producer whose answers the test
gives by hand (no broker)."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any, cast

from hypothesis import given
from hypothesis import strategies as st

from tests.chaos.journal import Journal
from tests.chaos.system import ChaosSystem
from tests.chaos.workload import Driver, Published


def test_a_record_acknowledged_before_a_wipe_is_sent_again_and_one_acknowledged_after_is_not() -> None:
    journal: Journal[str] = Journal()
    before, after = journal.new_send(), journal.new_send()
    journal.acknowledged(before, "before")
    assert journal.broker_wiped() == [(before, "before")]
    journal.acknowledged(after, "after")
    journal.acknowledged(before, "before")  # the resend, acknowledged by the new broker
    assert journal.broker_wiped() == [(before, "before"), (after, "after")]
    assert journal.generation == 2


def test_a_resend_not_acknowledged_yet_is_sent_again_at_the_next_wipe() -> None:
    journal: Journal[str] = Journal()
    serial = journal.new_send()
    journal.acknowledged(serial, "record")
    assert journal.broker_wiped() == [(serial, "record")]
    assert journal.lost_if_wiped_now() == 1
    assert journal.broker_wiped() == [(serial, "record")]


# A history: each step acknowledges a fresh send, acknowledges the resend of an old one, or wipes the broker.
steps = st.lists(st.one_of(st.just("send"), st.just("wipe"), st.integers(min_value=0, max_value=50)), max_size=60)


@given(steps)
def test_after_every_wipe_each_acknowledged_record_is_on_the_new_broker_or_being_sent_again(history: list[Any]) -> None:
    """INVARIANT: no record the broker ever acknowledged is left only on a wiped broker."""
    journal: Journal[int] = Journal()
    on_broker: set[int] = set()  # what the current broker holds
    ever: set[int] = set()
    for step in history:
        if step == "send":
            serial = journal.new_send()
            journal.acknowledged(serial, serial)
            on_broker.add(serial)
            ever.add(serial)
        elif step == "wipe":
            on_broker = set()
            again = journal.broker_wiped()
            assert {serial for serial, _ in again} == ever
            for serial, record in again[::2]:  # only some resends get through before the next step
                journal.acknowledged(serial, record)
                on_broker.add(serial)
        elif step in ever:
            journal.acknowledged(step, step)
            on_broker.add(step)
    assert journal.lost_if_wiped_now() == len(ever - on_broker)


class HandAnsweredProducer:
    """Stands for aiokafka's producer: `send` hands back a future the test resolves, as the broker would."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, asyncio.Future[None]]] = []
        self._more = asyncio.Condition()

    async def send(self, topic: str, value: bytes, *, key: bytes, headers: list[tuple[str, bytes]]) -> Any:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        async with self._more:
            self.sent.append((value, future))
            self._more.notify_all()
        return future

    async def sent_at_least(self, count: int) -> None:
        async with self._more:
            await self._more.wait_for(lambda: len(self.sent) >= count)

    def answer(self, value: bytes, error: Exception | None = None) -> None:
        future = next(f for v, f in self.sent if v == value and not f.done())
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


def record(name: str) -> Published:
    return Published("payments.commands.v1", b"WU-1", name.encode(), [])


async def test_a_record_acknowledged_while_its_burst_still_retries_is_sent_again_after_a_wipe() -> None:
    """INVARIANT: a command the broker acknowledged is never lost with a wiped broker (seed 15 lost two this way:
    the journal took a burst's records only once all of them were acknowledged, after the wipe's resend)."""
    system = cast(ChaosSystem, type("System", (), {"jwt_secret": "s" * 32})())
    driver = Driver(system, [], date(2025, 4, 20), say=lambda line: None)
    producer = HandAnsweredProducer()
    driver._producer = producer
    burst = asyncio.create_task(driver.publish([record("early"), record("late")]))
    await producer.sent_at_least(2)
    producer.answer(b"early")  # the broker took it; "late" is still waiting for an answer
    await asyncio.sleep(0)

    resend = asyncio.create_task(driver.resend_journal())  # the broker was wiped and is up again, empty
    await producer.sent_at_least(3)
    assert producer.sent[2][0] == b"early"
    producer.answer(b"early")
    producer.answer(b"late")
    assert await resend == "1 records sent again (generation 1), 1 of them acknowledged while their burst still retried"
    assert await burst == 0
    assert driver.journal.lost_if_wiped_now() == 0
    assert len(driver.journal) == 2
