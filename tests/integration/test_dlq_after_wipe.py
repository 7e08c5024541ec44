"""A malformed message still reaches its DLQ, with its reason, after the broker was wiped and came back empty.

FastStream makes the producer its broker publishes with (the DLQ writes) once, at start. An idempotent producer
keeps the producer id and sequence numbers the old cluster gave it; the new cluster refuses its next record on a
partition it had written before, once another producer got the same id there (OutOfOrderSequenceNumber, which
aiokafka never recovers from), or takes it for a duplicate. The service's broker asks the cluster id before each
DLQ write and takes a new producer when it changed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer

from services.kpi.app import create_service as create_kpi
from services.kpi.settings import KpiSettings
from shared.contracts import Topic, dlq
from shared.kafka_clients import ServiceBroker
from shared.messaging import DLQ_REASON_HEADER, provision_topics
from tests.conftest import PARTITIONS, Infra
from tests.support.brokers import IDEMPOTENT_PRODUCER, new_broker
from tests.support.helpers import eventually, publish_raw, read_topic, running

pytestmark = pytest.mark.kafka
KEY = b"ACC-DLQ-WIPE"  # one key: every malformed record and its dead letter go to the same partitions
MARKER = "x-test-marker"


async def _send_malformed(bootstrap: str, marker: str) -> None:
    headers = [("content-type", b"application/cloudevents+json"), (MARKER, marker.encode())]
    await publish_raw(bootstrap, Topic.PAYMENTS_EVENTS, b"{not json", KEY, headers)


async def _dead_letters(bootstrap: str) -> dict[str, str]:
    """marker -> reason, for what the DLQ of payments.events.v1 holds now."""
    try:
        records = await read_topic(bootstrap, dlq(Topic.PAYMENTS_EVENTS))
    except Exception:  # the topic may not exist yet on the new cluster: not yet
        return {}
    return {
        dict(r.headers)[MARKER].decode(): dict(r.headers)[DLQ_REASON_HEADER].decode()
        for r in records
        if MARKER in dict(r.headers)
    }


async def test_a_malformed_message_after_a_wiped_broker_lands_in_the_new_clusters_dlq_with_its_reason(
    infra: Infra,
) -> None:
    """INVARIANT: a poison message is never dropped silently, on a broker that lost everything included."""
    broker = new_broker(infra.workdir, "dlq-wipe")
    bootstrap = await asyncio.to_thread(broker.start)
    await provision_topics(bootstrap, partitions=PARTITIONS)
    settings = KpiSettings(
        database_url=infra.database_url,
        kafka_bootstrap_servers=bootstrap,
        kafka_idempotent_producer=IDEMPOTENT_PRODUCER,
        development=True,
    )
    try:
        # Ids taken first on the old cluster, so the service's is one the new cluster has not handed out yet
        # when the test asks for it (the relays take new ones at the wipe, in their own time).
        await _take_producer_ids(bootstrap, 10)
        async with running(create_kpi(settings)) as kpi:
            for marker in ("before-1", "before-2"):  # the DLQ producer's sequence on that partition moves on
                await _send_malformed(bootstrap, marker)
            await eventually(lambda: _has(bootstrap, {"before-1", "before-2"}), within=180)
            assert isinstance(kpi.broker, ServiceBroker)
            old_id = _producer_id(kpi.broker._aiokafka_producer())

            broker.kill()
            broker.wipe()
            await asyncio.to_thread(broker.start)
            await provision_topics(bootstrap, partitions=PARTITIONS)
            async with _another_producer_with_id(bootstrap, old_id) as other:
                if other is not None:  # another instance's producer writes that DLQ partition first
                    await other.send_and_wait(dlq(Topic.PAYMENTS_EVENTS), b"from another instance", key=KEY)
                await _send_malformed(bootstrap, "after-wipe")
                letters = await eventually(lambda: _has(bootstrap, {"after-wipe"}), within=180)

            assert letters["after-wipe"].startswith("invalid envelope: value is not JSON"), letters
            assert "before-1" not in letters, "the new cluster's DLQ holds only what came after the wipe"
    finally:
        await asyncio.to_thread(broker.stop)


def _producer_id(producer: AIOKafkaProducer) -> int | None:
    manager = producer._txn_manager
    return None if manager is None else int(manager.producer_id)


async def _take_producer_ids(bootstrap: str, count: int) -> None:
    if not IDEMPOTENT_PRODUCER:
        return
    for _ in range(count):
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
        await producer.start()
        await producer.stop()


@contextlib.asynccontextmanager
async def _another_producer_with_id(bootstrap: str, wanted: int | None) -> AsyncIterator[AIOKafkaProducer | None]:
    """An idempotent producer to which the new cluster gave the producer id the old one had given the service's
    DLQ producer (it hands ids out again from 0), as it would to another instance started after the wipe."""
    if wanted is None:  # Tansu: no idempotent producers, no producer ids
        yield None
        return
    started: list[AIOKafkaProducer] = []
    try:
        while True:
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
            await producer.start()
            started.append(producer)
            got = _producer_id(producer)
            assert got is not None and got <= wanted, f"the new cluster handed out {got}, past {wanted}"
            if got == wanted:
                yield producer
                return
    finally:
        for producer in started:
            await producer.stop()


async def _has(bootstrap: str, markers: set[str]) -> dict[str, str] | None:
    letters = await _dead_letters(bootstrap)
    return letters if markers <= set(letters) else None
