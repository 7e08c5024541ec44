"""A second instance of a consumer service started after the broker was wiped joins the first one's consumer
groups on the new cluster, and the pair applies every event exactly once (kpi's daily totals show any event lost
or counted twice)."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from datetime import date
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from services.kpi.app import create_service as create_kpi
from services.kpi.settings import KpiSettings
from services.kpi.storage import daily_collections
from shared.contracts import Topic
from shared.messaging import provision_topics
from shared.service import Service
from tests.conftest import PARTITIONS, Infra
from tests.support.brokers import IDEMPOTENT_PRODUCER, new_broker
from tests.support.helpers import equals, eventually, payment_posted, publish, running, settled, unique_day

pytestmark = pytest.mark.kafka


async def _day_totals(service: Service, day: date) -> tuple[int, Decimal]:
    async with service.sessions() as session:
        row = (
            await session.execute(
                select(
                    func.coalesce(func.sum(daily_collections.c.payments), 0),
                    func.coalesce(func.sum(daily_collections.c.collected), 0),
                ).where(daily_collections.c.day == day)
            )
        ).one()
    return int(row[0]), Decimal(row[1])


def _holds_partitions(service: Service) -> bool:
    consumer = next(c for c in service.event_consumers if c.topic == Topic.PAYMENTS_EVENTS)
    return bool(consumer.subscriber.consumer.assignment())


async def test_an_instance_started_after_a_wipe_shares_the_partitions_and_every_event_counts_once(
    infra: Infra,
) -> None:
    """INVARIANT: no payment event is lost or counted twice when a wiped broker comes back and the group grows."""
    broker = new_broker(infra.workdir, "wiped-second")
    bootstrap = await asyncio.to_thread(broker.start)
    await provision_topics(bootstrap, partitions=PARTITIONS)

    def kpi() -> Service:
        settings = KpiSettings(
            database_url=infra.database_url,
            kafka_bootstrap_servers=bootstrap,
            kafka_idempotent_producer=IDEMPOTENT_PRODUCER,
            development=True,
        )
        return create_kpi(settings)

    day = unique_day()
    before = [payment_posted(f"ACC-W{n % 7}", "10.00", day, number=n) for n in range(12)]
    after = [payment_posted(f"ACC-W{n % 7}", "1.00", day, number=100 + n) for n in range(30)]
    try:
        async with AsyncExitStack() as stack:
            first = await stack.enter_async_context(running(kpi()))
            await publish(bootstrap, Topic.PAYMENTS_EVENTS, before)
            await eventually(lambda: equals(_day_totals(first, day), (12, Decimal("120.00"))), within=180)

            broker.kill()
            broker.wipe()
            await asyncio.to_thread(broker.start)
            await provision_topics(bootstrap, partitions=PARTITIONS)
            second = await stack.enter_async_context(running(kpi()))
            # New events, and the old ones again (what a sender resends after the loss): the inbox drops those.
            await publish(bootstrap, Topic.PAYMENTS_EVENTS, [*after, *before])

            await eventually(lambda: equals(_day_totals(first, day), (42, Decimal("150.00"))), within=240)
            await eventually(lambda: _all(_holds_partitions(first), _holds_partitions(second)), within=240)
            await settled(first, second)
            assert await _day_totals(first, day) == (42, Decimal("150.00"))
    finally:
        await asyncio.to_thread(broker.stop)


async def _all(*values: bool) -> bool:
    return all(values)
