"""Recompute every KPI aggregate from the topics, from offset 0: `paydesk kpi-rebuild`.

The service owns its aggregates and they are derived only from events, so they can always be recomputed:
after a bug fix in a handler, a change of the utility's time zone, or to check the live figures. The replay
goes through the same handlers as the live event consumers, with the same inbox (so a duplicate in a topic is
skipped exactly as live), and without an outbox: replaying history raises no alert.

It runs in one transaction that first locks the aggregate tables and the inbox, then reads how far each
partition goes. A live kpi service may keep running: its event consumers wait for the lock; whatever they had
applied before is below those end offsets and so is replayed; whatever comes after they apply once the
rebuild commits (the inbox skips what the rebuild already applied). Either the whole rebuild is committed or
nothing changes.

A topic holds only what its retention keeps (the embedded broker keeps what the producers' outboxes
re-published since it started, `PAYDESK_OUTBOX_RETENTION_DAYS`); a rebuild reflects what the topics hold.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from pydantic import ValidationError
from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.kpi import arrangements, projections
from services.kpi.alerts import Alerts
from services.kpi.settings import KpiSettings
from services.kpi.storage import AGGREGATES, SCHEMA, plumbing
from shared.contracts import EnvelopeError, decode_envelope
from shared.db import create_engine, session_factory
from shared.errors import Rejected
from shared.inbox import claim
from shared.messaging import Subscription

log = logging.getLogger(__name__)


async def rebuild(settings: KpiSettings) -> dict[str, int]:
    """Replace every aggregate with one recomputed from the topics; returns counts of what was read."""
    engine = create_engine(settings.database_url, pool_size=1)
    sessions = session_factory(engine)
    alerts = Alerts(settings.currency)
    subscriptions = [
        *projections.subscriptions(settings, alerts, replaying=True),
        *arrangements.subscriptions(alerts, replaying=True),
    ]
    outcome: Counter[str] = Counter()
    try:
        async with sessions() as session, session.begin():
            tables = ", ".join(f'{SCHEMA}."{t.name}"' for t in (*AGGREGATES, plumbing.inbox))
            await session.execute(text(f"LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE"))
            await session.execute(text(f"TRUNCATE {', '.join(f'{SCHEMA}.{t.name}' for t in AGGREGATES)}"))
            names = [subscription.name for subscription in subscriptions]
            await session.execute(delete(plumbing.inbox).where(plumbing.inbox.c.consumer.in_(names)))
            for subscription in subscriptions:
                await _replay(session, settings.kafka_bootstrap_servers, subscription, outcome)
    finally:
        await engine.dispose()
    log.info("kpi aggregates rebuilt", extra=dict(outcome))
    return dict(outcome)


async def _replay(session: AsyncSession, bootstrap: str, subscription: Subscription, outcome: Counter[str]) -> None:
    topic = subscription.topic
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await reader.start()
    try:
        partitions = [TopicPartition(topic, p) for p in (reader.partitions_for_topic(topic) or set())]
        if not partitions:
            await reader._client.force_metadata_update()
            partitions = [TopicPartition(topic, p) for p in (reader.partitions_for_topic(topic) or set())]
        if not partitions:
            return
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        ends = await reader.end_offsets(partitions)
        remaining = {tp for tp in partitions if await reader.position(tp) < ends[tp]}
        while remaining:
            batch = await reader.getmany(*remaining, timeout_ms=1000, max_records=5000)
            for tp, records in batch.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        break  # arrived after the snapshot: the live event consumer applies it
                    outcome["read"] += 1
                    outcome[await _apply(session, subscription, record)] += 1
            remaining = {tp for tp in remaining if await reader.position(tp) < ends[tp]}
    finally:
        await reader.stop()


async def _apply(session: AsyncSession, subscription: Subscription, record: Any) -> str:
    name = subscription.name
    try:
        envelope = decode_envelope(record.value, {k: v for k, v in (record.headers or ())})
    except EnvelopeError:
        return "skipped"  # the live event consumer sent it to the DLQ
    handler = subscription.handlers.get(envelope.type)
    if handler is None:
        return "ignored"
    if not await claim(session, plumbing.inbox, name, envelope.id, envelope.type):
        return "duplicate"
    try:
        await handler(session, envelope)
    except (Rejected, ValidationError):
        # Live, this event went to the DLQ and its inbox claim rolled back; handlers reject before writing.
        await session.execute(
            delete(plumbing.inbox).where(plumbing.inbox.c.consumer == name, plumbing.inbox.c.event_id == envelope.id)
        )
        return "skipped"
    return "applied"
