"""The Kafka clients a service runs: FastStream's broker, aiokafka's consumers and producers, their logs.

Kept apart from `shared.messaging` (what a consumer does with a record) because this is about the clients
themselves: joining every consumer group at once, telling a consumer stuck in an offset commit, saying a retry
loop's error once rather than ten times a second, creating topics, and renewing FastStream's own producer (the
one that writes to the DLQs) when the broker turns out to be a new, empty cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any, cast

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    KafkaError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from faststream._internal.parser import DefaultCodec
from faststream.kafka import KafkaBroker
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from faststream.kafka.publisher.producer import AioKafkaFastProducerImpl
from faststream.opentelemetry.middleware import BaseTelemetryMiddleware
from prometheus_client import REGISTRY

from shared.contracts.topics import ALL_TOPICS
from shared.outbox import fetch_cluster_id
from shared.settings import ServiceSettings

log = logging.getLogger(__name__)


class GenerationBoundCoordinator(GroupCoordinator):  # type: ignore[misc]  # aiokafka is untyped
    """aiokafka's group coordinator, except that a commit never outlives the group generation it started in.

    aiokafka retries a commit for as long as its error is retriable, and builds each retry with the generation and
    member id of that moment. After a wiped broker, a commit of offsets read on the old cluster kept retrying (its
    topics were gone) until the consumer had joined the new cluster's group; then it went through, and the new
    group jumped to the old cluster's position, so the records the new cluster had below it were never read (chaos
    seed 15 lost 9 commands that way, in the broker but skipped). Kafka refuses a commit from an older generation
    (ILLEGAL_GENERATION, CommitFailedError); a retry now does the same, and the records come again (inbox)."""

    async def commit_offsets(self, assignment: Any, offsets: Any, started_in: Any = None) -> None:
        """`started_in`: the (generation, member id) the offsets were read in, when not now (a commit behind)."""
        started_in = started_in or (self.generation, self.member_id)
        while True:
            await self.ensure_coordinator_known()
            try:
                async with self._commit_lock:
                    await asyncio.shield(self._do_commit_offsets(assignment, offsets, started_in))
            except (UnknownMemberIdError, IllegalGenerationError, RebalanceInProgressError) as exc:
                raise CommitFailedError("the group rebalanced before the commit went through") from exc
            except KafkaError as err:
                if not err.retriable:
                    raise
                await asyncio.sleep(self._retry_backoff_ms / 1000)
            else:
                return

    async def _do_commit_offsets(self, assignment: Any, offsets: Any, started_in: Any = None) -> Any:
        # Checked in the same step as the request is built from self.generation (no await in between).
        if started_in is not None and (self.generation, self.member_id) != started_in:
            raise CommitFailedError(
                f"offsets of generation {started_in[0]} not committed in generation {self.generation} "
                "(the group rebalanced, or the broker is a new cluster)"
            )
        return await super()._do_commit_offsets(assignment, offsets)


class ObservedConsumer(AIOKafkaConsumer):  # type: ignore[misc]  # aiokafka is untyped
    """aiokafka's consumer, telling when its offset commit started and last succeeded, and committing only in the
    group generation the commit started in (`GenerationBoundCoordinator`).

    aiokafka retries a commit for as long as the error is retriable, e.g. for ever on partitions a wiped broker no
    longer has, and FastStream's ack waits for it: from outside, a consumer stuck there looks idle.

    With `commit_behind`, `commit()` (FastStream's ack of a batch) takes the positions consumed so far and commits
    them in the background while the next batch is fetched and applied: the commit was a broker round trip in front
    of every batch (8-14 ms quiet, 97 ms p50 and 856 ms p99 at load 11 for payments' commands consumer). A later
    batch's positions replace ones still waiting, so at most one commit is in flight. Nothing is lost by it: a batch
    is applied with its inbox claims before its offsets are committed, so records whose commit never happened (a
    crash, a rebalance) come again and the inbox drops them. Explicit `commit(offsets)` still waits."""

    commit_since: float | None = None
    committed_at: float | None = None

    def __init__(self, *topics: Any, commit_behind: bool = False, **kwargs: Any) -> None:
        super().__init__(*topics, **kwargs)
        self.commit_behind = commit_behind
        # (assignment, (generation, member id), offsets) waiting for the commit in flight, and that commit's task.
        self._wanted: tuple[Any, Any, Any] | None = None
        self._committer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await super().start()
        if type(self._coordinator) is GroupCoordinator:
            self._coordinator.__class__ = GenerationBoundCoordinator

    async def commit(self, offsets: Any = None) -> None:
        if offsets is None and self.commit_behind:
            self._commit_behind()
            return
        self.commit_since = time.monotonic()
        try:
            await super().commit(offsets)
            self.committed_at = time.monotonic()
        finally:
            self.commit_since = None

    def _commit_behind(self) -> None:
        subscription = self._subscription.subscription
        assignment = subscription.assignment if subscription is not None else None
        if assignment is None:
            return  # nothing assigned any more: whoever holds the partitions now reads them from the last commit
        coordinator = self._coordinator
        self._wanted = (assignment, (coordinator.generation, coordinator.member_id), assignment.all_consumed_offsets())
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_wanted(), name=f"commit {self._group_id}")

    async def _commit_wanted(self) -> None:
        while self._wanted is not None:
            (assignment, started_in, offsets), self._wanted = self._wanted, None
            if not assignment.active:
                continue  # the group rebalanced since: these positions are no longer ours to commit
            self.commit_since = time.monotonic()
            try:
                await self._coordinator.commit_offsets(assignment, offsets, started_in)
                self.committed_at = time.monotonic()
            except Exception as exc:
                # The records come again (the inbox drops them); the next batch's commit covers them otherwise.
                log.warning("offset commit failed", extra={"consumer": self._group_id, "reason": repr(exc)[:300]})
            finally:
                self.commit_since = None

    async def stop(self) -> None:
        # The last batch's commit is let through first, so a clean stop leaves nothing to deliver again.
        if self._committer is not None and not self._committer.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._committer), timeout=10)
            self._committer.cancel()
        await super().stop()


class OncePerKind(logging.Filter):
    """Lets one record per (logger, message, exception kind) through per window: a client library retrying in a
    loop (aiokafka logs every failed commit or connection attempt, ten a second) says so once, not thousands of
    times. The next line that gets through says how many were held back."""

    def __init__(self, every: float = 30.0) -> None:
        super().__init__()
        self.every = every
        self.last: dict[tuple[str, str, str], float] = {}
        self.held: dict[tuple[str, str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        kind = type(record.exc_info[1]).__name__ if record.exc_info and record.exc_info[1] else ""
        key = (record.name, str(record.msg), kind)
        now = time.monotonic()
        if now - self.last.get(key, -self.every) < self.every:
            self.held[key] = self.held.get(key, 0) + 1
            return False
        self.last[key] = now
        record.suppressed_since_last = self.held.pop(key, 0)
        return True


# The loggers of the client code that loops on a broker that is gone or changed.
CLIENT_LOGGERS = (
    "aiokafka",
    "aiokafka.client",
    "aiokafka.cluster",
    "aiokafka.conn",
    "aiokafka.consumer.consumer",
    "aiokafka.consumer.fetcher",
    "aiokafka.consumer.group_coordinator",
    "aiokafka.producer.producer",
    "aiokafka.producer.sender",
)


def quiet_repeated_client_errors(*extra_loggers: str) -> None:
    """Install `OncePerKind` on the Kafka client's loggers (once per logger)."""
    for name in (*CLIENT_LOGGERS, *extra_loggers):
        logger = logging.getLogger(name)
        if not any(isinstance(f, OncePerKind) for f in logger.filters):
            logger.addFilter(OncePerKind())


class ServiceBroker(KafkaBroker):
    """FastStream's Kafka broker, joining all of a service's consumer groups at once, and writing to the DLQs
    with a producer that belongs to the cluster it writes to.

    A group join takes seconds (on Tansu, half the session timeout, whatever else happens), and FastStream
    joins one group after another, so a service with three consumers took three times as long to start.
    """

    def __init__(self, *args: Any, dead_letter_timeout: float = 30.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dead_letter_timeout = dead_letter_timeout
        # The cluster FastStream's producer took its producer id from; None: renew it before the next write.
        self._producer_cluster: str | None = None
        self._producer_lock = asyncio.Lock()

    async def start(self) -> None:
        await self.connect()
        with contextlib.suppress(KafkaError, OSError, TimeoutError):
            self._producer_cluster = await asyncio.wait_for(fetch_cluster_id(self._aiokafka_producer()), 10)
        await asyncio.gather(*(subscriber.start() for subscriber in self.subscribers))
        for publisher in self.publishers:
            await publisher.start()
        self.running = True

    async def _connect(self) -> Callable[..., AIOKafkaConsumer]:
        builder = await super()._connect()
        # Every subscriber's consumer is built from this: made an ObservedConsumer, so stalls can be told.
        assert isinstance(builder, partial) and builder.func is AIOKafkaConsumer, builder
        observed = partial(ObservedConsumer, *builder.args, **builder.keywords, commit_behind=True)
        self.config.broker_config.builder = observed
        return observed

    async def publish_dead_letter(
        self, value: bytes, *, topic: str, key: bytes | None, headers: dict[str, str]
    ) -> None:
        """Write to a DLQ; raises (the record is then not acknowledged and comes back) if the write fails.

        FastStream makes its producer once, at start. After a wiped broker (a new cluster id) that idempotent
        producer still has the old cluster's producer id and sequence numbers: the new cluster refuses its next
        record on a partition it wrote before (OutOfOrderSequenceNumber, which aiokafka never recovers from), or
        takes it for a duplicate and drops it while aiokafka reports it written. So each write first asks the
        broker its cluster id (DLQ writes are rare) and, if it is not the producer's, replaces the producer."""
        async with self._producer_lock:
            producer = self._aiokafka_producer()
            cluster = await asyncio.wait_for(fetch_cluster_id(producer), self.dead_letter_timeout)
            if cluster != self._producer_cluster:
                await self._renew_producer()
            try:
                # Bounded: a send to a topic the new cluster does not have yet waits for its metadata.
                await asyncio.wait_for(
                    self.publish(value, topic=topic, key=key, headers=headers), self.dead_letter_timeout
                )
            except BaseException:
                self._producer_cluster = None  # whatever went wrong, the next write starts with a new producer
                raise

    def _aiokafka_producer(self) -> AIOKafkaProducer:
        faststream_producer = cast("AioKafkaFastProducerImpl", self.config.broker_config.producer)
        return faststream_producer._producer.producer

    async def _renew_producer(self) -> None:
        config = self.config.broker_config
        old = self._aiokafka_producer()
        with contextlib.suppress(Exception):
            # What it still holds is lost with the old cluster or still unacknowledged upstream: don't wait for it.
            await asyncio.wait_for(old.stop(), timeout=5)
        fresh = AIOKafkaProducer(**self._connection_kwargs)
        await config.producer.connect(fresh, serializer=config.fd_config._serializer, codec=DefaultCodec())
        self._producer_cluster = await asyncio.wait_for(fetch_cluster_id(fresh), self.dead_letter_timeout)
        log.warning("renewed the DLQ producer for a new broker cluster", extra={"cluster_id": self._producer_cluster})


class _PublishTelemetry(BaseTelemetryMiddleware[Any]):
    """FastStream's telemetry on what it publishes; a consumed batch passes straight through."""

    async def consume_scope(self, call_next: Any, msg: Any) -> Any:
        return await call_next(msg)


class KafkaPublishTelemetryMiddleware(KafkaTelemetryMiddleware):
    """FastStream's telemetry for what it publishes (the DLQ writes), in the trace of the event that caused it.

    Not for what it consumes: on a batch it started a new trace of its own (a `create` and a `process` span with
    a link per record) around the handler, every batch, in every consumer. Our consumers give each event its own
    span in its payment's trace (`shared.messaging`), so those spans only cost CPU."""

    def __call__(self, msg: Any | None, /, *, context: Any) -> BaseTelemetryMiddleware[Any]:
        return _PublishTelemetry(
            msg,
            tracer=self._tracer,
            metrics_container=self._metrics,
            settings_provider_factory=self._settings_provider_factory,
            context=context,
        )


def create_broker(settings: ServiceSettings) -> KafkaBroker:
    """The service's FastStream broker; nothing connects until it is started."""
    quiet_repeated_client_errors(f"paydesk.{settings.service_name}.broker")
    return ServiceBroker(
        settings.kafka_bootstrap_servers,
        client_id=f"paydesk-{settings.service_name}",
        metadata_max_age_ms=settings.kafka_metadata_max_age_ms,
        acks="all",
        enable_idempotence=settings.kafka_idempotent_producer,
        middlewares=[
            KafkaPublishTelemetryMiddleware(),
            KafkaPrometheusMiddleware(registry=REGISTRY, app_name=f"paydesk_{settings.service_name}"),
        ],
        logger=logging.getLogger(f"paydesk.{settings.service_name}.broker"),
    )


def outbox_producer(settings: ServiceSettings) -> AIOKafkaProducer:
    """The outbox relay's producer, not started (aiokafka binds it to the running loop: make it there).

    acks=all and, where the broker has it, idempotent: a send retried after a lost answer is written once and the
    order within a partition holds. Batches as large as a relay batch needs, so it leaves in one produce request."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=f"paydesk-{settings.service_name}-outbox",
        acks="all",
        enable_idempotence=settings.kafka_idempotent_producer,
        linger_ms=settings.kafka_producer_linger_ms,
        max_batch_size=settings.kafka_producer_batch_bytes,
        metadata_max_age_ms=settings.kafka_metadata_max_age_ms,
    )


async def provision_topics(
    bootstrap_servers: str, *, partitions: int, replication_factor: int = 1, topics: tuple[str, ...] = ALL_TOPICS
) -> list[str]:
    """Create the missing topics (and their DLQ twins); returns the ones created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="paydesk-provisioner")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            await admin.create_topics([NewTopic(t, partitions, replication_factor) for t in missing])
        return missing
    finally:
        await admin.close()
