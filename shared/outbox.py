"""Transactional outbox and its relay to Kafka.

Events are written to the service's `outbox` table in the same transaction as the state change and
relayed to Kafka after commit, in id order, by one relay per service (a Postgres advisory lock elects it),
so everything about one account keeps its order.

Why not `faststream-outbox` (evaluated first): it deletes a row once relayed and claims rows with leases
across workers. We must keep published rows for a retention period and replay them when the broker comes
back empty (a wiped Kafka, or the Tansu fallback, which keeps messages in memory only), and keep strict
per-account order; both would have to be built around it, which is more code than this relay.

A new broker incarnation is detected by its cluster id (Kafka metadata): Tansu gets a fresh one at every
start; Apache Kafka keeps its own for as long as its data lives, so there the replay happens only after the
data was wiped (docs/architecture.md, Broker).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.protocol.metadata import MetadataRequest
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from prometheus_client import Counter, Gauge
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    event,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID, Insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from shared.bulk_insert import column_arrays, insert_from_arrays
from shared.contracts.envelope import CONTENT_TYPE, Envelope
from shared.telemetry import tag_business_ids

log = logging.getLogger(__name__)
tracer = trace.get_tracer("paydesk.outbox")
TRACEPARENT = "traceparent"


class RepeatedFailureLog:
    """The first failure of each kind logged with its stack, then one line per kind per window with a count."""

    def __init__(self, logger: logging.Logger, message: str, every: float = 30.0) -> None:
        self.logger = logger
        self.message = message
        self.every = every
        self.last: dict[str, float] = {}
        self.suppressed: dict[str, int] = {}

    def failed(self, exc: BaseException, **extra: object) -> None:
        kind = type(exc).__name__
        now = time.monotonic()
        if now - self.last.get(kind, -self.every) < self.every:
            self.suppressed[kind] = self.suppressed.get(kind, 0) + 1
            return
        first = kind not in self.last
        self.last[kind] = now
        self.logger.error(
            self.message,
            exc_info=exc if first else None,
            extra={
                **extra,
                "kind": kind,
                "reason": str(exc)[:300],
                "suppressed_since_last": self.suppressed.pop(kind, 0),
            },
        )


RELAYED = Counter("paydesk_outbox_relayed_total", "Outbox events published to Kafka", ["service"])
REPLAYED = Counter("paydesk_outbox_replayed_total", "Outbox events re-published after broker data loss", ["service"])
PENDING = Gauge("paydesk_outbox_pending", "Outbox events not yet published", ["service"])


def outbox_tables(metadata: MetaData) -> tuple[Table, Table]:
    """The outbox and the relay's memory of which broker incarnation it last published to."""
    outbox = Table(
        "outbox",
        metadata,
        Column("id", BigInteger, Identity(), primary_key=True),
        Column("event_id", UUID(as_uuid=True), nullable=False, unique=True),
        Column("topic", String(200), nullable=False),
        Column("key", String(200), nullable=False),
        Column("headers", JSONB, nullable=False),
        Column("value", LargeBinary, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("published_at", DateTime(timezone=True)),
        Column("partition", Integer),
        Column("offset", BigInteger),
        Index(None, "id", postgresql_where=text("published_at IS NULL")),
        Index(None, "published_at"),
    )
    relay_state = Table(
        "outbox_relay_state",
        metadata,
        Column("name", String(100), primary_key=True),
        Column("cluster_id", Text, nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
    return outbox, relay_state


# Set on a session that staged an event, so the relay is woken after its commit and only then.
STAGED = "paydesk_outbox_staged"
# The service's outbox table, put in every session's `info` by the service's session factory.
OUTBOX_TABLE = "paydesk_outbox_table"

# The one way to stage an event: `stage(session, topic, envelope)`, in the caller's transaction.
Stage = Callable[[AsyncSession, str, Envelope], Awaitable[None]]


async def stage(
    session: AsyncSession,
    topic: str,
    envelope: Envelope,
    *,
    extra_headers: Mapping[str, str] | None = None,
    value: bytes | None = None,
) -> None:
    """Stage an event in the session's transaction; the relay publishes it after commit.

    `extra_headers` and `value` are for dead letters: a reason header, and a copy with sensitive parts masked."""
    outbox = session.info.get(OUTBOX_TABLE)
    if outbox is None:
        raise RuntimeError("this session has no outbox: use the sessions of a Service")
    await add_event(session, outbox, topic, envelope, extra_headers=extra_headers, value=value)


async def stage_many(session: AsyncSession, topic: str, envelopes: Sequence[Envelope]) -> None:
    """`stage` for many events at once (one batched insert): for handlers that announce thousands of changes."""
    outbox = session.info.get(OUTBOX_TABLE)
    if outbox is None:
        raise RuntimeError("this session has no outbox: use the sessions of a Service")
    if not envelopes:
        return
    carrier: dict[str, str] = {"content-type": CONTENT_TYPE}
    propagate.inject(carrier)
    session.info[STAGED] = True
    await session.execute(
        outbox.insert(),
        [
            {"event_id": e.id, "topic": topic, "key": e.subject, "headers": carrier, "value": e.to_bytes()}
            for e in envelopes
        ],
    )


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One event to stage with others (`stage_all`): its topic, and the trace it continues (None: the current one)."""

    topic: str
    envelope: Envelope
    context: Context | None = None


async def stage_all(session: AsyncSession, events: Sequence[Outgoing]) -> None:
    """`stage` for several events, of any topics, in one multi-row insert, in the order given.

    For a handler posting a batch: each event keeps the trace of what caused it (`context`), as `stage` would."""
    outbox = session.info.get(OUTBOX_TABLE)
    if outbox is None:
        raise RuntimeError("this session has no outbox: use the sessions of a Service")
    if not events:
        return
    rows = staged_rows(events)
    session.info[STAGED] = True
    # One INSERT from arrays with the rows in the given order, so the identity ids (the relay's order) follow it.
    await session.execute(_stage_statement(outbox), column_arrays(rows, _STAGED_COLUMNS))


def staged_rows(events: Sequence[Outgoing]) -> list[dict[str, Any]]:
    """The outbox rows of `events`, in order: each carries its trace context in its headers, and its business ids go
    on its span. Every way of staging (`stage_all`, `shared.direct`) writes these, so the relay reads one shape."""
    # The trace headers are worked out once per context: a command's events (its posting, an overpayment, its
    # usage) share its context and so its headers.
    carriers: dict[int, dict[str, str]] = {}
    rows = []
    for outgoing in events:
        carrier = carriers.get(id(outgoing.context))
        if carrier is None:
            carrier = {"content-type": CONTENT_TYPE}
            propagate.inject(carrier, context=outgoing.context)
            carriers[id(outgoing.context)] = carrier
        tag_business_ids(outgoing.envelope.data, trace.get_current_span(outgoing.context))
        rows.append(
            {
                "event_id": outgoing.envelope.id,
                "topic": outgoing.topic,
                "key": outgoing.envelope.subject,
                "headers": carrier,
                "value": outgoing.envelope.to_bytes(),
            }
        )
    return rows


_STAGED_COLUMNS = ("event_id", "topic", "key", "headers", "value")


@functools.cache
def _stage_statement(outbox: Table) -> Insert:
    return insert_from_arrays(outbox, _STAGED_COLUMNS)


def wake_relay_after_commit(sessions: async_sessionmaker[AsyncSession], relay: OutboxRelay) -> None:
    """Wake `relay` after each commit of these sessions that staged an event (and never after a rollback)."""
    session_class = sessions.kw["sync_session_class"]

    def after_commit(session: Session) -> None:
        if session.info.pop(STAGED, False):
            relay.wake()

    def after_rollback(session: Session) -> None:
        session.info.pop(STAGED, None)

    event.listen(session_class, "after_commit", after_commit)
    event.listen(session_class, "after_rollback", after_rollback)


async def add_event(
    session: AsyncSession,
    outbox: Table,
    topic: str,
    envelope: Envelope,
    *,
    extra_headers: Mapping[str, str] | None = None,
    value: bytes | None = None,
) -> None:
    """Stage an event in the caller's transaction, with the current trace context for the consumers."""
    carrier: dict[str, str] = {"content-type": CONTENT_TYPE, **(extra_headers or {})}
    propagate.inject(carrier)
    tag_business_ids(envelope.data)  # the request or event span that caused it is found by its payment id
    session.info[STAGED] = True
    await session.execute(
        outbox.insert().values(
            event_id=envelope.id,
            topic=topic,
            key=envelope.subject,
            headers=carrier,
            value=envelope.to_bytes() if value is None else value,
        )
    )


async def fetch_cluster_id(producer: AIOKafkaProducer) -> str:
    """The broker's cluster id: it changes only when the broker is a new, empty incarnation."""
    client = producer.client
    node_id = client.get_random_node()
    if node_id is None:
        await client.force_metadata_update()
        node_id = client.get_random_node()
    response: Any = await client.send(node_id, MetadataRequest([]))
    return str(response.cluster_id)


class OutboxRelay:
    """Publishes outbox rows in id order, marks them published, and replays them after broker data loss."""

    def __init__(
        self,
        *,
        service: str,
        engine: AsyncEngine,
        outbox: Table,
        relay_state: Table,
        producer: AIOKafkaProducer | None = None,
        new_producer: Callable[[], Awaitable[AIOKafkaProducer]] | None = None,
        provision_topics: Callable[[], Awaitable[object]] | None = None,
        poll_seconds: float = 0.05,
        retention: timedelta = timedelta(days=7),
        batch_size: int = 2000,
        send_timeout_seconds: float = 30.0,
    ) -> None:
        self.service = service
        self.engine = engine
        self.outbox = outbox
        self.relay_state = relay_state
        self.producer = producer
        self.poll_seconds = poll_seconds
        self.retention = retention
        self.batch_size = batch_size
        self.new_producer = new_producer
        self.provision_topics = provision_topics
        self.send_timeout_seconds = send_timeout_seconds
        # The cluster the producer got its producer id from, and the last one whose topics were made sure of.
        self._producer_cluster: str | None = None
        self._seen_cluster: str | None = None
        self._renew_producer = False
        self._failures = RepeatedFailureLog(log, "outbox relay failed; retrying")
        self._wake = asyncio.Event()
        self._stopping = False
        self._cluster_checked_at = 0.0
        sent = (
            select(
                func.unnest(bindparam("ids", type_=ARRAY(BigInteger))).label("id"),
                func.unnest(bindparam("partitions", type_=ARRAY(Integer))).label("partition"),
                func.unnest(bindparam("offsets", type_=ARRAY(BigInteger))).label("offset"),
            )
        ).subquery("sent")
        self._mark_published = (
            update(outbox)
            .where(outbox.c.id == sent.c.id)
            .values(published_at=bindparam("now"), partition=sent.c.partition, offset=sent.c.offset)
        )

    def _producer(self) -> AIOKafkaProducer:
        assert self.producer is not None, "attach a started producer before relaying"
        return self.producer

    def wake(self) -> None:
        """Called after a commit that staged events, so they leave without waiting for the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Relay until stopped; only the instance holding the advisory lock relays for this service.

        The leader publishes on the connection that holds the lock, not on one from the pool: the pool is the
        requests' and consumers', and under load the relay queued there behind them (hundreds of ms after each
        commit). And rows are only marked published on the session that still holds the lock."""
        lock_key = f"paydesk.outbox.{self.service}"
        while not self._stopping:
            try:
                async with self.engine.connect() as lock_conn:
                    leader = (
                        await lock_conn.execute(select(func.pg_try_advisory_lock(func.hashtext(lock_key))))
                    ).scalar_one()
                    await lock_conn.commit()
                    if not leader:
                        await self._sleep(1.0)
                        continue
                    try:
                        await self._relay_while_leader(lock_conn)
                    finally:
                        await lock_conn.rollback()  # a send that failed may have left the batch's transaction open
                        await lock_conn.execute(select(func.pg_advisory_unlock(func.hashtext(lock_key))))
                        await lock_conn.commit()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A send that failed or hung (e.g. an idempotent producer's sequence refused by a broker that
                # no longer knows its producer id) is retried with a new producer, never the same one forever.
                self._renew_producer = True
                self._failures.failed(exc, service=self.service)
                await self._sleep(1.0)

    async def _relay_while_leader(self, conn: AsyncConnection) -> None:
        if self._renew_producer:
            await self.renew_producer()
        await self.check_incarnation()
        last_housekeeping = 0.0
        loop = asyncio.get_running_loop()
        while True:
            published = await self.publish_pending(conn)
            if self._stopping and published == 0:
                return  # drained: everything staged before shutdown has left
            now = loop.time()
            if now - self._cluster_checked_at > 2.0:
                await self.check_incarnation()
            if now - last_housekeeping > 60.0:
                await self.delete_expired()
                last_housekeeping = now
            if published < self.batch_size:
                await self._sleep(self.poll_seconds)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        self._wake.clear()

    async def check_incarnation(self) -> bool:
        """If the broker is not the one we last published to, mark retained rows for re-publishing."""
        self._cluster_checked_at = asyncio.get_running_loop().time()
        cluster_id = await fetch_cluster_id(self._producer())
        if cluster_id != self._seen_cluster:
            await self._adopt_cluster(cluster_id)
        async with self.engine.begin() as conn:
            known = (
                await conn.execute(
                    select(self.relay_state.c.cluster_id)
                    .where(self.relay_state.c.name == self.service)
                    .with_for_update()
                )
            ).scalar_one_or_none()
            if known == cluster_id:
                return False
            replayed = 0
            if known is not None:
                result = await conn.execute(
                    update(self.outbox)
                    .where(self.outbox.c.published_at.is_not(None))
                    .values(published_at=None, partition=None, offset=None)
                )
                replayed = result.rowcount or 0
                REPLAYED.labels(self.service).inc(replayed)
                log.warning(
                    "broker is a new incarnation; replaying retained outbox events",
                    extra={"service": self.service, "replayed": replayed, "cluster_id": cluster_id},
                )
            statement = text(
                f'INSERT INTO "{self.relay_state.schema}".outbox_relay_state (name, cluster_id) '
                "VALUES (:name, :cluster_id) ON CONFLICT (name) DO UPDATE "
                "SET cluster_id = excluded.cluster_id, updated_at = now()"
            )
            await conn.execute(statement, {"name": self.service, "cluster_id": cluster_id})
            return replayed > 0

    async def publish_pending(self, conn: AsyncConnection | None = None) -> int:
        """Publish one batch of unpublished rows in id order; returns how many were published.

        On `conn` (the leader's own connection) when given, else on one from the pool."""
        if conn is None:
            async with self.engine.connect() as pooled:
                return await self._publish_batch(pooled)
        return await self._publish_batch(conn)

    async def _publish_batch(self, conn: AsyncConnection) -> int:
        rows = await self._pending(conn)
        PENDING.labels(self.service).set(len(rows))
        if not rows:
            await conn.commit()  # no transaction left open on the leader's connection between polls
            return 0
        results = await self._produce(rows)
        await self._mark_sent(conn, rows, results)
        RELAYED.labels(self.service).inc(len(rows))
        return len(rows)

    async def _pending(self, conn: AsyncConnection) -> Sequence[Any]:
        """The next batch of unpublished rows, in id order."""
        return (
            await conn.execute(
                select(
                    self.outbox.c.id,
                    self.outbox.c.event_id,
                    self.outbox.c.topic,
                    self.outbox.c.key,
                    self.outbox.c.headers,
                    self.outbox.c.value,
                )
                .where(self.outbox.c.published_at.is_(None))
                .order_by(self.outbox.c.id)
                .limit(self.batch_size)
            )
        ).all()

    async def _produce(self, rows: Sequence[Any]) -> list[Any]:
        """Send the rows in order and wait until Kafka has acknowledged every one; their record metadata."""
        futures = []
        for row in rows:
            futures.append(await self._send(row.topic, row.key, row.headers, row.value, str(row.event_id)))
        # Bounded: an idempotent producer retries a send forever (e.g. to a topic a wiped broker lost), and a
        # relay stuck here would never look at the broker again to find out why.
        return list(await asyncio.wait_for(asyncio.gather(*futures), timeout=self.send_timeout_seconds))

    async def _mark_sent(self, conn: AsyncConnection, rows: Sequence[Any], results: Sequence[Any]) -> None:
        """Mark the batch published, with where each row landed, and commit."""
        published_at = datetime.now(UTC)  # one for the batch: rows sharing it were one relay batch (bench/e2e.py)
        # One statement for the batch (arrays unnested), where an UPDATE per row made Postgres run 500 of them.
        await conn.execute(
            self._mark_published,
            {
                "now": published_at,
                "ids": [row.id for row in rows],
                "partitions": [md.partition for md in results],
                "offsets": [md.offset for md in results],
            },
        )
        await conn.commit()

    async def _send(
        self, topic: str, key: str, headers: Mapping[str, str], value: bytes, event_id: str
    ) -> asyncio.Future[Any]:
        # Continue the trace of the request that staged the event, so one trace spans HTTP -> Kafka -> consumers.
        # The span is never made the current one: nothing in the send reads it, and attaching and detaching a
        # context per row was a measurable part of a relay batch (bench/span_cost.py).
        parent = propagate.extract(headers)
        span = tracer.start_span(f"send {topic}", context=parent, kind=trace.SpanKind.PRODUCER)
        try:
            recording = span.is_recording()
            if recording:
                span.set_attributes(
                    {
                        "messaging.system": "kafka",
                        "messaging.destination.name": topic,
                        "messaging.operation.type": "send",
                        "messaging.operation.name": "send",
                        "messaging.message.id": event_id,
                        "messaging.kafka.message.key": key,
                    }
                )
            carrier = headers  # an unsampled trace: its staged traceparent carries its id on to the consumers as it is
            if recording or TRACEPARENT not in headers:
                carrier = dict(headers)
                propagate.inject(carrier, context=trace.set_span_in_context(span))
            kafka_headers = [(k, v.encode()) for k, v in carrier.items()]
            future: asyncio.Future[Any] = await self._producer().send(
                topic, value=value, key=key.encode(), headers=kafka_headers
            )
            return future
        except BaseException as exc:
            if span.is_recording():
                span.record_exception(exc)
                span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            span.end()

    async def delete_expired(self) -> int:
        """Forget published rows older than the retention period."""
        cutoff = datetime.now(UTC) - self.retention
        async with self.engine.begin() as conn:
            result = await conn.execute(self.outbox.delete().where(self.outbox.c.published_at < cutoff))
            return result.rowcount or 0

    async def _adopt_cluster(self, cluster_id: str) -> None:
        """Make the relay fit for a broker it has not published to: its topics exist, its producer id is its own.

        Why a wiped broker stalled the services (issue 15): it comes back with no topics, and only `paydesk run`
        created them, once, at start-up; sends to a missing topic retry forever, commits of consumed offsets on
        it too. And an idempotent producer keeps the producer id the old cluster gave it, while the new cluster
        hands the same small ids out again to producers that start later: two producers sharing an id and its
        sequence numbers get OutOfOrderSequenceNumber (aiokafka never recovers from it) or have a send taken for
        a duplicate (aiokafka reports it written). So on a cluster id it has not seen, the relay creates the
        missing topics (idempotent; whichever service's relay is first does it) and gets a new producer.
        """
        if self.provision_topics is not None:
            await self.provision_topics()
        if self._producer_cluster != cluster_id:
            await self.renew_producer()
        self._seen_cluster = cluster_id

    async def renew_producer(self) -> None:
        """Start a producer (a new producer id from the broker as it is now) and stop the one it replaces."""
        self._renew_producer = False
        if self.new_producer is None:
            return
        producer = await self.new_producer()
        try:
            cluster_id = await fetch_cluster_id(producer)
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        old, self.producer, self._producer_cluster = self.producer, producer, cluster_id
        if old is not None:
            # What it still holds is either in Kafka already or still unpublished in the outbox: don't wait for it.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(old.stop(), timeout=5)

    def stop(self) -> None:
        """Ask the relay to publish what is staged and then end `run`."""
        self._stopping = True
        self._wake.set()
