"""Kafka wiring: the FastStream broker, topic provisioning, and exactly-once consumers with a DLQ.

A consumer records the event id in its inbox in the same transaction as the effect; the Kafka offset is
committed only after that transaction commits (FastStream acks after the handler returns). A message that
can never be processed goes to `<topic>.dlq` with the reason in the `x-dlq-reason` header and its offset is
committed, so it never blocks its partition. If the database itself is unreachable the message is not
acknowledged and comes back once it is.

Records arrive in batches (whatever is waiting, up to `consumer_max_batch`). A batch is applied in one
transaction with one inbox claim and one offset commit, which is what lets a consumer keep up with
hundreds of events a second. If anything in the batch fails, that transaction rolls back and the batch is
applied again one event at a time, with retries and the DLQ, so one bad event never holds back the others
and the order within each partition is kept either way.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.message import StreamMessage
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from prometheus_client import Counter
from pydantic import ValidationError
from sqlalchemy import Table, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from shared.contracts import peek_type
from shared.contracts.envelope import Envelope, EnvelopeError, decode_envelope, describe_validation_error
from shared.contracts.topics import dlq
from shared.db import is_infrastructure_down
from shared.errors import Rejected
from shared.inbox import claim, claim_many

# The client wiring moved to shared.kafka_clients; these names are still imported from here across the code.
from shared.kafka_clients import ObservedConsumer, ServiceBroker
from shared.kafka_clients import OncePerKind as OncePerKind
from shared.kafka_clients import create_broker as create_broker
from shared.kafka_clients import provision_topics as provision_topics
from shared.telemetry import business_ids

if TYPE_CHECKING:
    from aiokafka import ConsumerRecord

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

EventHandler = Callable[[AsyncSession, Envelope], Awaitable[None]]
# Called with the reason when a message is refused, in its own transaction, e.g. to emit a rejection event.
RejectionHandler = Callable[[AsyncSession, Envelope, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Applying:
    """A fresh event handed to a batch handler, with its own trace for the events its effect stages."""

    envelope: Envelope
    context: Context


# Applies a whole batch of fresh events (inbox already claimed, in partition order) in the batch's transaction.
# If it raises, the batch rolls back and each event is applied alone by its per-event handler (retries, DLQ).
BatchHandler = Callable[[AsyncSession, Sequence[Applying]], Awaitable[None]]


@dataclass(frozen=True)
class Subscription:
    """What one event consumer of a service applies: its name (the consumer group's last part), the topic,
    and a handler per event type. The one way a service binds handlers: `service.subscribe(*subscriptions)`."""

    name: str
    topic: str
    handlers: Mapping[str, EventHandler]
    on_rejected: RejectionHandler | None = None
    # Optional: applies all of a batch's handled events at once (fewer statements); `handlers` stay the fallback.
    batch_handler: BatchHandler | None = None
    # Most records in one batch, where not the service's `consumer_max_batch`.
    max_batch: int | None = None


async def apply_in_runs(
    session: AsyncSession,
    batch: Sequence[Applying],
    together: Collection[str],
    apply_run: BatchHandler,
    handlers: Mapping[str, EventHandler],
) -> None:
    """The usual shape of a batch handler: each run of consecutive events of the `together` types is applied at once
    by `apply_run`, every other event by its own handler in its place and under its own trace, so the order within
    a partition holds."""
    run: list[Applying] = []
    for applying in batch:
        if applying.envelope.type in together:
            run.append(applying)
            continue
        if run:
            await apply_run(session, run)
            run = []
        token = otel_context.attach(applying.context)
        try:
            await handlers[applying.envelope.type](session, applying.envelope)
        finally:
            otel_context.detach(token)
    if run:
        await apply_run(session, run)


PROCESSED = Counter("paydesk_events_processed_total", "Events applied", ["service", "consumer", "type"])
DUPLICATES = Counter(
    "paydesk_events_duplicate_total", "Redelivered events ignored by the inbox", ["service", "consumer"]
)
IGNORED = Counter(
    "paydesk_events_ignored_total", "Events of types this consumer does not handle", ["service", "consumer"]
)
DEAD_LETTERED = Counter("paydesk_events_dead_lettered_total", "Messages sent to a DLQ", ["service", "consumer"])

DLQ_REASON_HEADER = "x-dlq-reason"


async def _raw_body(message: StreamMessage[Any]) -> bytes:
    # Envelopes are decoded by `decode_envelope`, which accepts both CloudEvents modes and reports errors.
    return message.body


BATCH_RETRIED = Counter(
    "paydesk_batches_retried_total",
    "Batch transactions tried together again after a deadlock or serialization failure",
    ["service", "consumer"],
)
BATCH_ONE_BY_ONE = Counter(
    "paydesk_batches_one_by_one_total", "Batches rolled back and applied one event at a time", ["service", "consumer"]
)
# Tries of a batch transaction that met a deadlock or serialization failure, and the pause bound (s) per try.
BATCH_ATTEMPTS = 3
BATCH_RETRY_PAUSE = 0.05
# SQLSTATE 40P01 deadlock detected, 40001 serialization failure: Postgres aborted one of two conflicting transactions.
LOCK_CONFLICT_SQLSTATES = frozenset({"40P01", "40001"})


def _is_lock_conflict(exc: BaseException) -> bool:
    return isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) in LOCK_CONFLICT_SQLSTATES


def _is_transient(exc: BaseException) -> bool:
    return not isinstance(exc, Rejected | ValidationError)


@dataclass(frozen=True, slots=True)
class ConsumerHealth:
    """One consumer group's progress as its service sees it."""

    consumer: str
    seconds_since_progress: float
    #: Why it cannot make progress; None while it does.
    stalled: str | None


class _RecordHeaders(Getter[Mapping[str, "bytes | str"]]):
    """Reads a trace context straight from a record's headers (Kafka gives bytes), without copying them first."""

    def get(self, carrier: Mapping[str, bytes | str], key: str) -> list[str] | None:
        value = carrier.get(key)
        if value is None:
            return None
        return [value.decode(errors="replace") if isinstance(value, bytes) else value]

    def keys(self, carrier: Mapping[str, bytes | str]) -> list[str]:
        return list(carrier)


RECORD_HEADERS = _RecordHeaders()


@dataclass(frozen=True, slots=True)
class Delivery:
    """One Kafka record as a consumer sees it."""

    value: bytes | None
    headers: Mapping[str, bytes | str]
    key: bytes | None

    def text_headers(self) -> dict[str, str]:
        return {k: v.decode(errors="replace") if isinstance(v, bytes) else v for k, v in self.headers.items()}

    def trace_context(self) -> Context:
        """The trace this record continues (W3C traceparent and baggage headers); empty if it carries none."""
        return propagate.extract(self.headers, getter=RECORD_HEADERS)


class Handled(NamedTuple):
    """A record of a batch that this consumer handles: where it is in the batch, its event, handler and trace."""

    at: int
    envelope: Envelope
    handler: EventHandler
    parent: Context


def wait_in_the_poll(subscriber: Any, wait_ms: int) -> None:
    """Have a FastStream batch subscriber wait for records in aiokafka's poll alone, never sleep after it.

    FastStream's batch subscriber asks aiokafka for records with `batch_timeout_ms` and, when none came, sleeps as
    long again before asking anew: at 20 ms every idle consumer turned 25 times a second (futures, timers, a fetcher
    pass each time), and a longer wait would have added the sleep to a record arriving meanwhile. aiokafka's
    `getmany` returns as soon as a fetch brings a record, so a long wait there costs no latency: an idle consumer
    turns twice a second at 500 ms. Replaces the subscriber's one `get_msg` (FastStream pinned in the lock file);
    tests/unit/test_event_consumer_poll.py holds both facts."""

    async def get_msg(consumer: Any) -> tuple[ConsumerRecord[bytes, bytes], ...]:
        records = await consumer.getmany(timeout_ms=wait_ms, max_records=subscriber.max_records)
        return tuple(chain.from_iterable(records.values()))

    subscriber.get_msg = get_msg


class EventConsumer:
    """One consumer group on one topic: decodes envelopes and applies each handled event exactly once."""

    def __init__(
        self,
        *,
        service: str,
        name: str,
        topic: str,
        handlers: Mapping[str, EventHandler],
        session_factory: async_sessionmaker[AsyncSession],
        inbox: Table,
        after_commit: Callable[[], None] = lambda: None,
        max_attempts: int = 5,
        max_batch: int = 200,
        batch_wait_ms: int = 500,
        fetch_max_wait_ms: int = 500,
        session_timeout_ms: int = 10000,
        on_rejected: RejectionHandler | None = None,
        batch_handler: BatchHandler | None = None,
    ) -> None:
        self.service = service
        self.name = name
        self.topic = topic
        self.handlers = dict(handlers)
        self.session_factory = session_factory
        self.inbox = inbox
        self.after_commit = after_commit
        self.max_attempts = max_attempts
        self.max_batch = max_batch
        self.batch_wait_ms = batch_wait_ms
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.session_timeout_ms = session_timeout_ms
        self.on_rejected = on_rejected
        self.batch_handler = batch_handler
        self.broker: KafkaBroker | None = None
        self.subscriber: Any = None
        # Monotonic times: first looked at, last batch applied, since when the topic is missing from metadata.
        self._watched_since: float | None = None
        self._applied_at: float | None = None
        self._topic_missing_since: float | None = None
        # The metric children, looked up once rather than per event.
        self._ignored = IGNORED.labels(service, name)
        self._duplicates = DUPLICATES.labels(service, name)
        self._processed: dict[str, Any] = {}
        # What every span of this consumer says, built once rather than per event.
        self._span_name = f"process {topic}"
        self._span_attributes: dict[str, str] = {
            "messaging.system": "kafka",
            "messaging.destination.name": topic,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.consumer.group.name": self.group_id,
        }

    @property
    def group_id(self) -> str:
        return f"paydesk.{self.service}.{self.name}"

    def register(self, broker: KafkaBroker) -> None:
        """Subscribe on the broker; offsets are committed only after `deliver` returns."""
        self.broker = broker

        subscriber = broker.subscriber(
            self.topic,
            group_id=self.group_id,
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.NACK_ON_ERROR,
            batch=True,
            max_records=self.max_batch,
            # FastStream's own wait, used only if its loop ever stopped calling `get_msg`: then it would poll as
            # before (20 ms and a 20 ms sleep) rather than sleep `batch_wait_ms` with a record waiting.
            batch_timeout_ms=20,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=max(self.session_timeout_ms // 3, 100),
            decoder=_raw_body,
            title=f"{self.service}.{self.name}",
            description=f"{self.service} applies {', '.join(sorted(self.handlers))} from {self.topic}.",
        )
        self.subscriber = subscriber
        wait_in_the_poll(subscriber, self.batch_wait_ms)

        @subscriber
        async def on_batch(bodies: list[bytes], message: KafkaMessage) -> None:
            records = cast("tuple[ConsumerRecord[bytes, bytes], ...]", message.raw_message)
            await self.deliver([Delivery(r.value, dict(r.headers or ()), r.key) for r in records])
            self._applied_at = time.monotonic()

    def health(self, stall_after: float) -> ConsumerHealth:
        """Whether this consumer makes progress: it hears from the broker (a fetch answer on a partition it holds,
        an offset commit) or applies a batch. Stalled, with the reason, when a commit has been pending, its topic
        missing, or the broker silent on its partitions for longer than `stall_after` seconds."""
        now = time.monotonic()
        consumer = getattr(self.subscriber, "consumer", None)
        if not isinstance(consumer, ObservedConsumer):
            return ConsumerHealth(self.group_id, 0.0, None)  # not started
        if self._watched_since is None:
            self._watched_since = now
        heard = [self._watched_since, self._applied_at or 0.0, consumer.committed_at or 0.0]
        wall_now = time.time()
        assigned = consumer.assignment()
        for tp in assigned:
            polled = consumer.last_poll_timestamp(tp)  # wall-clock ms of the partition's last fetch answer
            if polled:
                heard.append(now - (wall_now - polled / 1000))
        since = max(now - max(heard), 0.0)
        if consumer.partitions_for_topic(self.topic) is None:
            self._topic_missing_since = self._topic_missing_since or now
        else:
            self._topic_missing_since = None
        reason = None
        if consumer.commit_since is not None and now - consumer.commit_since > stall_after:
            reason = f"offset commit pending for {now - consumer.commit_since:.0f} s"
        elif self._topic_missing_since is not None and now - self._topic_missing_since > stall_after:
            reason = f"topic {self.topic} missing for {now - self._topic_missing_since:.0f} s"
        elif assigned and since > stall_after:
            reason = f"no answer from the broker for {since:.0f} s"
        return ConsumerHealth(self.group_id, since, reason)

    async def deliver(self, deliveries: Sequence[Delivery]) -> list[str]:
        """Apply records in order; returns `applied`, `duplicate`, `ignored` or `dead_lettered` for each."""
        outcomes = [""] * len(deliveries)
        handled: list[Handled] = []
        for index, delivery in enumerate(deliveries):
            headers = delivery.headers
            if (kind := peek_type(delivery.value, headers)) is not None and kind not in self.handlers:
                # Another consumer's event (most of a shared topic's traffic for some): skipped undecoded. Whether
                # it is valid is for the consumers that handle it to say (they dead-letter it if it is not).
                self._ignored.inc()
                outcomes[index] = "ignored"
                continue
            try:
                envelope = decode_envelope(delivery.value, headers)
            except EnvelopeError as exc:
                with self._event_span(delivery):
                    await self.dead_letter(delivery, f"invalid envelope: {exc}")
                outcomes[index] = "dead_lettered"
                continue
            handler = self.handlers.get(envelope.type)
            if handler is None:
                self._ignored.inc()
                outcomes[index] = "ignored"
                continue
            handled.append(Handled(index, envelope, handler, delivery.trace_context()))
        together = await self._apply_together(deliveries, handled) if len(handled) > 1 else None
        for event in handled:
            index, envelope = event.at, event.envelope
            if together is not None:
                outcomes[index], span_context = together[index]
                self._count(envelope, outcomes[index], span_context)
            else:
                with self._event_span(deliveries[index], envelope, event.parent):
                    outcomes[index] = await self._deliver_one(deliveries[index], envelope, event.handler)
        return outcomes

    async def _apply_together(
        self, deliveries: Sequence[Delivery], handled: Sequence[Handled], attempt: int = 1
    ) -> dict[int, tuple[str, trace.SpanContext]] | None:
        """The common case: every event in one transaction. None if anything failed (and nothing was applied).

        Each event's span is started and ended here without becoming the current span: attaching and detaching a
        context per event was a visible share of a light consumer's CPU, and a batch handler is handed each event's
        context (`Applying.context`) for what it stages. Only a per-event handler runs with its span current.

        A deadlock or serialization failure says nothing about the events: the batch is tried together again
        (bounded, after a random pause so the two transactions do not meet again) before going one by one."""
        outcomes: dict[int, tuple[str, trace.SpanContext]] = {}
        try:
            async with self.session_factory() as session, session.begin():
                fresh = await claim_many(
                    session, self.inbox, self.name, [(event.envelope.id, event.envelope.type) for event in handled]
                )
                batch: list[Applying] = []
                for index, envelope, handler, parent in handled:
                    span = self._start_event_span(deliveries[index], envelope, parent)
                    try:
                        if envelope.id in fresh:
                            fresh.discard(envelope.id)  # the same event twice in one batch is applied once
                            if self.batch_handler is None:
                                with trace.use_span(span):  # what the handler stages continues the event's trace
                                    await handler(session, envelope)
                            else:
                                batch.append(Applying(envelope, trace.set_span_in_context(span, parent)))
                            outcomes[index] = ("applied", span.get_span_context())
                        else:
                            outcomes[index] = ("duplicate", span.get_span_context())
                    finally:
                        span.end()
                if batch and self.batch_handler is not None:
                    await self.batch_handler(session, batch)
        except Exception as exc:
            if attempt < BATCH_ATTEMPTS and _is_lock_conflict(exc):
                BATCH_RETRIED.labels(self.service, self.name).inc()
                await asyncio.sleep(random.uniform(0, BATCH_RETRY_PAUSE * attempt))
                return await self._apply_together(deliveries, handled, attempt + 1)
            BATCH_ONE_BY_ONE.labels(self.service, self.name).inc()
            log.warning(
                "batch rolled back, applying its events one by one",
                extra={"consumer": self.group_id, "events": len(handled), "reason": repr(exc)[:500]},
            )
            return None
        self.after_commit()
        return outcomes

    async def _deliver_one(self, delivery: Delivery, envelope: Envelope, handler: EventHandler) -> str:
        """One event in its own transaction, with retries; a refused or failing event goes to the DLQ."""
        try:
            outcome = await self._apply_with_retries(handler, envelope)
        except Rejected as exc:
            reason = f"{exc.code}: {exc.field + ': ' if exc.field else ''}{exc.detail}"
            await self.dead_letter(delivery, reason)
            await self._reject(envelope, reason)
            return "dead_lettered"
        except ValidationError as exc:
            reason = f"invalid {envelope.type} data: {describe_validation_error(exc)}"
            await self.dead_letter(delivery, reason)
            await self._reject(envelope, reason)
            return "dead_lettered"
        except Exception as exc:
            if is_infrastructure_down(exc) or not await self._database_reachable():
                raise  # not the message's fault: leave it unacknowledged so it comes back
            await self.dead_letter(delivery, f"failed after {self.max_attempts} attempts: {exc!r}")
            return "dead_lettered"
        self._count(envelope, outcome)
        return outcome

    def _count(self, envelope: Envelope, outcome: str, span_context: trace.SpanContext | None = None) -> None:
        """Count an outcome; at DEBUG, log it under the event's span (`span_context`, where it is not current)."""
        if outcome != "applied":
            self._duplicates.inc()
            return
        if (processed := self._processed.get(envelope.type)) is None:
            processed = self._processed[envelope.type] = PROCESSED.labels(self.service, self.name, envelope.type)
        processed.inc()
        if not log.isEnabledFor(logging.DEBUG):
            return  # a JSON line per event was a tenth of a light consumer's CPU; the spans and counters tell it
        span = trace.NonRecordingSpan(span_context) if span_context is not None else trace.get_current_span()
        with trace.use_span(span):
            log.debug(
                "event applied",
                extra={
                    "consumer": self.group_id,
                    "event_type": envelope.type,
                    "event_id": str(envelope.id),
                    "account": envelope.subject,
                },
            )

    @contextmanager
    def _event_span(
        self, delivery: Delivery, envelope: Envelope | None = None, parent: Context | None = None
    ) -> Iterator[trace.Span]:
        """The event's span (`_start_event_span`) as the current span, ended on leaving: what runs inside it (a
        handler staging events, a DLQ write) continues the event's trace."""
        span = self._start_event_span(delivery, envelope, parent)
        with trace.use_span(span, end_on_exit=True):
            yield span

    def _start_event_span(
        self, delivery: Delivery, envelope: Envelope | None, parent: Context | None = None
    ) -> trace.Span:
        """Continue the trace the record carries, so each event (not the batch) is one step of its payment's trace;
        `parent` is that trace when the record's headers were read already. Started, not made current.

        Named and tagged by OpenTelemetry's messaging conventions, plus the event's business ids for `paydesk trace`.
        Tagged only when recorded: an unsampled trace gets a non-recording span (its ids still reach the logs and the
        events this one stages) and no attributes built for nothing.
        """
        if parent is None:
            parent = delivery.trace_context()
        span = tracer.start_span(self._span_name, context=parent, kind=trace.SpanKind.CONSUMER)
        if span.is_recording():
            attributes = dict(self._span_attributes)
            if delivery.key:
                attributes["messaging.kafka.message.key"] = delivery.key.decode(errors="replace")
            if envelope is not None:
                attributes["messaging.message.id"] = str(envelope.id)
                attributes["paydesk.account"] = envelope.subject
                attributes["paydesk.event_type"] = envelope.type
                attributes.update(business_ids(envelope.data))
            span.set_attributes(attributes)  # once: each call takes the span's lock and checks every value
        return span

    async def _apply_with_retries(self, handler: EventHandler, envelope: Envelope) -> str:
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=wait_exponential(multiplier=0.05, max=2.0),
            retry=retry_if_exception(_is_transient),
            reraise=True,
        ):
            with attempt:
                return await self.apply(handler, envelope)
        raise AssertionError("unreachable")  # pragma: no cover

    async def apply(self, handler: EventHandler, envelope: Envelope) -> str:
        """One transaction: inbox claim plus the handler's effect (and any outbox events it stages)."""
        async with self.session_factory() as session, session.begin():
            if not await claim(session, self.inbox, self.name, envelope.id, envelope.type):
                return "duplicate"
            await handler(session, envelope)
        self.after_commit()
        return "applied"

    async def _reject(self, envelope: Envelope, reason: str) -> None:
        """Let the sender know, once per event, whatever is redelivered or replayed.

        Claimed under its own inbox name, not the consumer's: the event itself was not applied, so replaying it
        from the DLQ after a fix (`paydesk dlq replay`) must still apply it, exactly once."""
        if self.on_rejected is None:
            return
        async with self.session_factory() as session, session.begin():
            if await claim(session, self.inbox, f"{self.name}:rejected", envelope.id, envelope.type):
                await self.on_rejected(session, envelope, reason)

    async def _database_reachable(self) -> bool:
        try:
            async with self.session_factory() as session:
                await session.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Publish the original record to `<topic>.dlq` with the reason; raises if the DLQ cannot be reached."""
        assert self.broker is not None, "register() the consumer before it delivers"
        headers = delivery.text_headers()
        headers.update({DLQ_REASON_HEADER: reason[:2000], "x-dlq-consumer": self.group_id})
        assert isinstance(self.broker, ServiceBroker), "a consumer's broker comes from create_broker()"
        await self.broker.publish_dead_letter(
            delivery.value or b"", topic=dlq(self.topic), key=delivery.key, headers=headers
        )
        trace.get_current_span().set_status(trace.Status(trace.StatusCode.ERROR, f"dead-lettered: {reason[:300]}"))
        DEAD_LETTERED.labels(self.service, self.name).inc()
        log.warning("message sent to DLQ", extra={"topic": self.topic, "consumer": self.group_id, "reason": reason})
