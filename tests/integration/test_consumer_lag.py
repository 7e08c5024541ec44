"""Consumer lag per group and partition: `shared.consumer_lag`, `paydesk lag` and kpi's gauges agree."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import OffsetAndMetadata, TopicPartition
from typer.testing import CliRunner

from paydesk.cli import app
from services.kpi.app import create_service as create_kpi
from services.kpi.settings import KpiSettings
from shared.consumer_lag import PartitionLag, consumer_lag
from shared.messaging import provision_topics
from tests.conftest import Infra
from tests.support.brokers import TEST_BROKER

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.skipif(TEST_BROKER == "tansu", reason="Tansu answers group admin calls in a form aiokafka cannot read"),
]


@pytest.fixture
async def lagging_group(infra: Infra) -> tuple[str, str]:
    """A topic of two partitions holding 3 and 2 records, and a group that committed 2 on the first only."""
    topic, group = f"lag-test-{uuid.uuid4().hex[:8]}", f"lag-group-{uuid.uuid4().hex[:8]}"
    await provision_topics(infra.bootstrap_servers, partitions=2, topics=(topic,))
    producer = AIOKafkaProducer(bootstrap_servers=infra.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for partition, count in ((0, 3), (1, 2)):
            for n in range(count):
                await producer.send_and_wait(topic, f"record {n}".encode(), partition=partition)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=infra.bootstrap_servers, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        first, second = TopicPartition(topic, 0), TopicPartition(topic, 1)
        consumer.assign([first, second])
        await consumer.commit({first: OffsetAndMetadata(2, "")})
    finally:
        await consumer.stop()
    return topic, group


async def test_lag_is_the_end_offset_less_the_committed_one_per_partition(
    infra: Infra, lagging_group: tuple[str, str]
) -> None:
    topic, group = lagging_group
    rows = await consumer_lag(infra.bootstrap_servers, groups=[group])
    assert rows == [
        PartitionLag(group=group, topic=topic, partition=0, committed=2, end=3),
        PartitionLag(group=group, topic=topic, partition=1, committed=None, end=2),
    ]
    assert [row.lag for row in rows] == [1, 2]
    by_prefix = await consumer_lag(infra.bootstrap_servers, group_prefix=group)
    assert by_prefix == rows


async def test_paydesk_lag_prints_committed_end_and_lag_per_group_and_partition(
    infra: Infra, lagging_group: tuple[str, str]
) -> None:
    topic, group = lagging_group
    result = await asyncio.to_thread(CliRunner().invoke, app, ["lag", "--group", group])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["group", "topic", "partition", "committed", "end", "lag"]
    assert [line.split() for line in lines[1:]] == [
        [group, topic, "0", "2", "3", "1"],
        [group, topic, "1", "-", "2", "2"],
    ]


async def test_kpi_exposes_the_lag_as_prometheus_gauges(infra: Infra, lagging_group: tuple[str, str]) -> None:
    topic, group = lagging_group
    kpi = create_kpi(KpiSettings(database_url=infra.database_url, kafka_bootstrap_servers=infra.bootstrap_servers))
    transport = httpx.ASGITransport(app=kpi.http)
    async with httpx.AsyncClient(transport=transport, base_url="http://kpi") as client:
        metrics = (await client.get("/metrics")).text
    await kpi.engine.dispose()
    labels = f'group="{group}",partition="0",topic="{topic}"'
    assert f"paydesk_consumer_committed_offset{{{labels}}} 2.0" in metrics
    assert f"paydesk_consumer_end_offset{{{labels}}} 3.0" in metrics
    assert f"paydesk_consumer_lag{{{labels}}} 1.0" in metrics
    unread = f'group="{group}",partition="1",topic="{topic}"'
    assert f"paydesk_consumer_lag{{{unread}}} 2.0" in metrics
