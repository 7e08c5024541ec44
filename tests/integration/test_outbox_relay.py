"""The outbox relay on the real database and broker: it publishes on its own connection, never queueing for one."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime

import pytest
from sqlalchemy.pool import QueuePool

from shared.contracts import Topic, new_envelope
from shared.contracts.events import UsageTracked
from shared.outbox import stage
from tests.conftest import Infra
from tests.support.helpers import eventually, read_topic
from tests.support.payments import Api, payments_api

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
async def api(infra: Infra) -> AsyncIterator[Api]:
    async for running_api in payments_api(infra):
        yield running_api


async def test_an_event_leaves_while_requests_hold_every_pooled_connection(api: Api) -> None:
    """Under load every pooled connection is a request's: the relay, which used to check one out per batch, waited
    behind them after each commit (or until the pool's 30 s timeout). It publishes on the connection that holds
    its leader lock, so an event leaves while the pool stays exhausted."""
    engine = api.service.engine
    pool = engine.sync_engine.pool
    assert isinstance(pool, QueuePool)
    envelope = new_envelope(
        "usage.tracked",
        source="test",
        subject="RELAY-OWN-CONNECTION",
        data=UsageTracked(event="relay_test", user_id="u", properties={}, occurred_at=datetime.now(UTC)),
    )
    capacity = pool.size() + pool._max_overflow
    async with AsyncExitStack() as held:
        # Every connection the pool can give but the one the leader relay holds; the last of them stages the event,
        # and the test keeps it, so the commit returns nothing to the pool.
        connections = [await held.enter_async_context(engine.connect()) for _ in range(capacity - 1)]
        assert pool.checkedout() == capacity
        staging = await held.enter_async_context(api.service.sessions(bind=connections[-1]))
        async with staging.begin():
            await stage(staging, Topic.ANALYTICS_EVENTS, envelope)

        async def published() -> bool:
            records = await read_topic(api.bootstrap, Topic.ANALYTICS_EVENTS)
            return any(json.loads(record.value)["id"] == str(envelope.id) for record in records)

        # The pool stays exhausted throughout, so a relay that queues for a pooled connection never publishes (its
        # checkouts time out and are tried again): a generous bound cannot hide it.
        assert await eventually(published, within=180)
        assert pool.checkedout() == capacity, "the pool stayed exhausted while the event was published"
