"""`shared.direct` on the real database and broker: one transaction on the pooled connection's driver, whose outbox
rows the relay publishes as it publishes a session's."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from opentelemetry import trace
from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import DBAPIError

from services.payments.storage import idempotency_keys, plumbing
from shared.contracts import Topic, new_envelope
from shared.contracts.envelope import CONTENT_TYPE
from shared.contracts.events import UsageTracked
from shared.db import is_infrastructure_down
from shared.direct import DirectTransaction, prepare
from shared.outbox import Outgoing
from tests.conftest import Infra
from tests.support.helpers import eventually, read_topic
from tests.support.payments import Api, payments_api

pytestmark = pytest.mark.kafka

_CLAIM = prepare(
    idempotency_keys.insert()
    .values(operation=bindparam("operation"), key=bindparam("key"), request_hash=bindparam("request_hash"))
    .returning(idempotency_keys.c.key)
)


@pytest.fixture(scope="module")
async def api(infra: Infra) -> AsyncIterator[Api]:
    async for running_api in payments_api(infra):
        yield running_api


def usage(subject: str) -> Outgoing:
    data = UsageTracked(event="direct_test", user_id="u", properties={}, occurred_at=datetime.now(UTC))
    return Outgoing(Topic.ANALYTICS_EVENTS, new_envelope("usage.tracked", source="test", subject=subject, data=data))


def direct(api: Api, woken: list[bool] | None = None) -> DirectTransaction:
    service = api.service
    after_commit = (lambda: woken.append(True)) if woken is not None else service.relay.wake
    return DirectTransaction(service.engine, service.tables.outbox, after_commit=after_commit)


async def count_staged(api: Api, event: Outgoing) -> int:
    async with api.service.sessions() as session:
        staged = select(func.count()).where(plumbing.outbox.c.event_id == event.envelope.id)
        return int((await session.execute(staged)).scalar_one())


async def test_a_rolled_back_transaction_leaves_nothing_written_and_wakes_no_relay(api: Api) -> None:
    """INVARIANT: what a failed request wrote (its key's claim, its events) is never committed or published."""
    key = f"direct-{uuid.uuid4()}"
    event = usage(key)
    woken: list[bool] = []
    with pytest.raises(RuntimeError, match="refused after writing"):
        async with direct(api, woken) as tx:
            await tx.fetchrow(_CLAIM, {"operation": "direct.test", "key": key, "request_hash": "h"})
            await tx.stage_all([event])
            raise RuntimeError("refused after writing")
    async with api.service.sessions() as session:
        claimed = await session.execute(select(idempotency_keys).where(idempotency_keys.c.key == key))
        assert claimed.first() is None
    assert await count_staged(api, event) == 0
    assert woken == []


async def test_a_committed_transaction_wakes_the_relay_only_when_it_staged_events(api: Api) -> None:
    woken: list[bool] = []
    async with direct(api, woken) as tx:
        await tx.fetchrow(_CLAIM, {"operation": "direct.test", "key": f"direct-{uuid.uuid4()}", "request_hash": "h"})
    assert woken == []
    event = usage(f"direct-{uuid.uuid4()}")
    async with direct(api, woken) as tx:
        await tx.stage_all([event])
    assert woken == [True] and await count_staged(api, event) == 1


async def test_a_refused_statement_is_sqlalchemys_error_and_the_connection_serves_again(api: Api) -> None:
    """The service's error handlers (a 409, a 503 when Postgres is down) know SQLAlchemy's errors, not the driver's."""
    key = {"operation": "direct.test", "key": f"direct-{uuid.uuid4()}", "request_hash": "h"}
    async with direct(api) as tx:
        await tx.fetchrow(_CLAIM, key)
    with pytest.raises(DBAPIError) as refused:
        async with direct(api) as tx:
            await tx.fetchrow(_CLAIM, key)
    assert getattr(refused.value.orig, "sqlstate", None) == "23505"  # unique violation
    async with direct(api) as tx:
        assert await tx.fetchrow(prepare(select(func.count())), {}) is not None


async def test_staged_events_are_published_by_the_relay_with_the_requests_trace_id(api: Api) -> None:
    """One trace spans the request, Kafka and the consumers: the rows carry the trace context, like a session's."""
    account = f"direct-{uuid.uuid4()}"  # one key: one partition, where their order shows
    first, second = usage(account), usage(account)
    with trace.get_tracer("test").start_as_current_span("request") as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
        async with direct(api) as tx:
            await tx.stage_all([first, second])

    async def published() -> list[tuple[str, str]] | None:
        records = await read_topic(api.bootstrap, Topic.ANALYTICS_EVENTS)
        wanted = {str(first.envelope.id), str(second.envelope.id)}
        found = [
            (json.loads(r.value)["id"], dict(r.headers)["traceparent"].decode())
            for r in records
            if json.loads(r.value)["id"] in wanted
        ]
        return found if len(found) == 2 else None

    found = await eventually(published, within=180)
    assert [event_id for event_id, _ in found] == [str(first.envelope.id), str(second.envelope.id)], "in order"
    assert all(traceparent.split("-")[1] == trace_id for _, traceparent in found), found
    async with api.service.sessions() as session:
        staged = select(plumbing.outbox.c.headers).where(plumbing.outbox.c.event_id == first.envelope.id)
        headers = (await session.execute(staged)).scalar_one()
    assert headers["content-type"] == CONTENT_TYPE and headers["traceparent"].split("-")[1] == trace_id


async def test_a_connection_lost_mid_transaction_is_an_outage_and_never_serves_again(api: Api) -> None:
    """A restarted Postgres: the request is a 503 (retried with its key), and the broken connection leaves the pool
    instead of failing the next requests one by one."""
    backend = prepare(select(func.pg_backend_pid()))
    with pytest.raises((DBAPIError, OSError)) as lost:  # the driver's message or a reset socket: both a 503
        async with direct(api) as tx:
            row = await tx.fetchrow(backend, {})
            assert row is not None
            async with api.service.engine.connect() as other:
                # Waits until the backend is gone (up to 60 s): else the next statement may still be answered.
                await other.execute(select(func.pg_terminate_backend(row[0], 60_000)))
            await tx.fetchrow(backend, {})
    assert is_infrastructure_down(lost.value)
    for _ in range(api.service.settings.database_pool_size + 1):
        async with direct(api) as tx:
            assert await tx.fetchrow(backend, {}) is not None
