"""A consumer's batch commit goes on in the background (`ObservedConsumer(commit_behind=True)`), on the real broker.

The service's consumers no longer wait for the broker's answer to an offset commit before fetching the next batch.
What must still hold: the offsets land, a clean stop lets the last commit through, and a commit taken before the
group rebalanced never lands in the generation after it (whoever holds the partition then reads from the last
offset committed in its own generation, the inbox dropping what was applied already).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from shared.kafka_clients import ObservedConsumer, provision_topics
from tests.conftest import Infra
from tests.support.helpers import eventually

pytestmark = pytest.mark.kafka


async def _topic_with(bootstrap: str, count: int) -> str:
    topic = f"test.commit-behind.{uuid.uuid4().hex[:8]}"
    await provision_topics(bootstrap, partitions=1, topics=(topic,))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for n in range(count):
            await producer.send_and_wait(topic, f"record-{n}".encode(), partition=0)
    finally:
        await producer.stop()
    return topic


def _consumer(bootstrap: str, topic: str, group: str, *, commit_behind: bool = True) -> ObservedConsumer:
    return ObservedConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
        commit_behind=commit_behind,
    )


async def _read(consumer: ObservedConsumer, count: int) -> list[bytes]:
    seen: list[bytes] = []

    async def enough() -> bool:
        batches = await consumer.getmany(timeout_ms=200, max_records=count - len(seen))
        seen.extend(r.value for records in batches.values() for r in records)
        return len(seen) >= count

    await eventually(enough, within=180)
    return seen


async def test_a_batch_commit_lands_in_the_background_and_a_clean_stop_lets_the_last_one_through(infra: Infra) -> None:
    bootstrap = infra.bootstrap_servers
    topic = await _topic_with(bootstrap, 8)
    group = f"paydesk.test.commit-behind.{uuid.uuid4().hex[:8]}"
    partition = TopicPartition(topic, 0)
    consumer = _consumer(bootstrap, topic, group)
    await consumer.start()
    try:
        assert len(await _read(consumer, 5)) == 5
        await consumer.commit()  # returns at once; the commit goes on behind

        async def committed_five() -> bool:
            return bool(await consumer.committed(partition) == 5)

        await eventually(committed_five, within=180)
        assert consumer.committed_at is not None
        assert len(await _read(consumer, 3)) == 3
        await consumer.commit()
    finally:
        await consumer.stop()  # right after the commit was asked for: stop waits for it

    reader = _consumer(bootstrap, topic, group, commit_behind=False)
    await reader.start()
    try:
        assert await reader.committed(partition) == 8
    finally:
        await reader.stop()


async def test_a_commit_taken_before_a_rebalance_never_lands_after_it(infra: Infra) -> None:
    """INVARIANT: offsets read in one group generation are never committed in a later one."""
    bootstrap = infra.bootstrap_servers
    topic = await _topic_with(bootstrap, 5)
    group = f"paydesk.test.commit-behind.{uuid.uuid4().hex[:8]}"
    partition = TopicPartition(topic, 0)
    first = _consumer(bootstrap, topic, group)
    second = _consumer(bootstrap, topic, group)
    await first.start()
    try:
        assert len(await _read(first, 5)) == 5
        generation = first._coordinator.generation
        # One batch's commit is in flight (held back at the broker's door), the next batch's waits behind it, and
        # the group rebalances before either goes through.
        async with first._coordinator._commit_lock:
            await first.commit()
            for _ in range(20):
                await asyncio.sleep(0)  # the first commit is under way, waiting for the lock
            await first.commit()
            await second.start()

            async def rebalanced() -> bool:
                await first.getmany(timeout_ms=100)  # keeps the first member in the group's rounds
                return bool(first._coordinator.generation > generation)

            await eventually(rebalanced, within=180)
        if first._committer is not None:
            await asyncio.wait_for(first._committer, timeout=60)
        assert await second.committed(partition) is None, "offsets of the old generation were committed"
    finally:
        with contextlib.suppress(Exception):
            await second.stop()
        await first.stop()
