"""An offset commit left pending when the broker died must not land on the new, empty cluster that replaces it.

What chaos seed 15 found: 9 commands were in the new cluster's topic, yet no consumer applied them. A commit of
offsets read on the old cluster had kept retrying (its topic was gone) until the consumer had joined the new
cluster's group; aiokafka builds every retry with the generation of that moment, so the stale commit went through
and the new group started past records it had never read.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError

from shared.kafka_clients import ObservedConsumer
from shared.messaging import provision_topics
from tests.conftest import PARTITIONS, Infra
from tests.support.brokers import new_broker
from tests.support.helpers import eventually

pytestmark = pytest.mark.kafka
TOPIC = "payments.commands.v1"
GROUP = "paydesk.test.wiped-commit"


async def _send(bootstrap: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(TOPIC, value, partition=0)
    finally:
        await producer.stop()


def _consumer(bootstrap: str) -> ObservedConsumer:
    return ObservedConsumer(
        TOPIC,
        bootstrap_servers=bootstrap,
        group_id=GROUP,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        metadata_max_age_ms=500,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
        retry_backoff_ms=100,
    )


async def _read(consumer: ObservedConsumer, count: int) -> list[bytes]:
    seen: list[bytes] = []

    async def enough() -> bool:
        batches = await consumer.getmany(timeout_ms=200)
        seen.extend(r.value for records in batches.values() for r in records if r.partition == 0)
        return len(seen) >= count

    await eventually(enough, within=180)
    return seen


async def test_a_commit_pending_across_a_wiped_broker_does_not_skip_the_new_clusters_records(infra: Infra) -> None:
    """INVARIANT: a wiped broker never makes a consumer group skip a record of the new cluster."""
    broker = new_broker(infra.workdir, "wiped-commit")
    bootstrap = await asyncio.to_thread(broker.start)
    first = _consumer(bootstrap)
    try:
        await provision_topics(bootstrap, partitions=PARTITIONS)
        await _send(bootstrap, [f"old-{n}".encode() for n in range(5)])
        await first.start()
        assert len(await _read(first, 5)) == 5  # consumed up to offset 5 of the old cluster, not committed yet
        old_member = first._coordinator.member_id

        broker.kill()
        commit = asyncio.create_task(first.commit())  # offset 5 for partition 0: pending, the broker is gone
        broker.wipe()
        await asyncio.to_thread(broker.start)

        async def rejoined() -> bool:  # the consumer joined the new cluster's group (its topic still missing)
            member = first._coordinator.member_id
            return bool(member) and member != old_member and first._coordinator.generation > 0

        await eventually(rejoined, within=180)
        await provision_topics(bootstrap, partitions=PARTITIONS)
        await _send(bootstrap, [f"new-{n}".encode() for n in range(8)])  # offsets 0-7 of the new cluster

        with pytest.raises(CommitFailedError):
            await asyncio.wait_for(commit, timeout=180)
        await first.stop()

        second = _consumer(bootstrap)  # whoever holds the partition next starts from the group's offset
        await second.start()
        try:
            assert await second.committed(TopicPartition(TOPIC, 0)) is None
            assert sorted(await _read(second, 8)) == sorted(f"new-{n}".encode() for n in range(8))
        finally:
            await second.stop()
    finally:
        with contextlib.suppress(Exception):
            await first.stop()
        await asyncio.to_thread(broker.stop)
