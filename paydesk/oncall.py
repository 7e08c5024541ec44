"""What an on-call engineer reaches for first: a trace viewer over `telemetry.spans` and tools for the DLQs.

`paydesk trace` reads the spans the services' Postgres exporter stored (see shared/span_store.py);
`paydesk dlq` reads `<topic>.dlq` directly from Kafka with no consumer group, so looking never moves an offset.
A replay re-publishes a dead letter to its original topic: the consumers' inboxes make a repeat harmless.
"""

from __future__ import annotations

import contextlib
import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from shared.contracts.envelope import EnvelopeError, decode_envelope
from shared.masking import mask_card_numbers
from shared.messaging import DLQ_REASON_HEADER
from shared.span_store import SCHEMA, connect, ensure_schema

DLQ_SUFFIX = ".dlq"
DLQ_CONSUMER_HEADER = "x-dlq-consumer"
REPLAYED_FROM_HEADER = "x-replayed-from"
# Most traces `trace --payment` prints: a payment looked at a hundred times has a hundred GET traces.
MAX_TRACES = 20


# --- traces ---


@dataclass(frozen=True)
class SpanRecord:
    span_id: str
    parent_span_id: str | None
    service: str
    name: str
    kind: str
    start: datetime
    duration_ms: float
    status: str
    error: str | None
    attributes: dict[str, Any]


_SPAN_COLUMNS = "span_id, parent_span_id, service, name, kind, start_time, duration_ms, status, error, attributes"


def load_trace(database_url: str, trace_id: str) -> list[SpanRecord]:
    """Every stored span of one trace, oldest first."""
    with connect(database_url) as conn:
        ensure_schema(conn)
        rows = conn.execute(
            f"SELECT {_SPAN_COLUMNS} FROM {SCHEMA}.spans WHERE trace_id = %s ORDER BY start_time",
            (trace_id.strip().lower(),),
        ).fetchall()
    return [SpanRecord(*row) for row in rows]


def find_traces(database_url: str, business_id: str) -> list[str]:
    """Trace ids whose spans carry `business_id` (payment id, receipt number, ...), oldest first."""
    with connect(database_url) as conn:
        ensure_schema(conn)
        rows = conn.execute(
            f"SELECT trace_id FROM {SCHEMA}.spans WHERE business_ids @> ARRAY[%s]::text[] "
            "GROUP BY trace_id ORDER BY min(start_time) DESC LIMIT %s",
            (business_id.strip(), MAX_TRACES),
        ).fetchall()
    return [row[0] for row in reversed(rows)]


def render_trace(trace_id: str, spans: list[SpanRecord], *, verbose: bool = False) -> list[str]:
    """The span tree: one line per span, indented under its parent, with service, duration and errors."""
    if not spans:
        return [
            f"trace {trace_id}: no spans stored (are the services run with PAYDESK_OTEL_EXPORTER=postgres? "
            "With PAYDESK_TRACE_SAMPLE_RATIO below 1, a trace not sampled where it started is stored by no service.)"
        ]
    known = {span.span_id for span in spans}
    children: dict[str | None, list[SpanRecord]] = defaultdict(list)
    for span in spans:
        # A parent that was never stored (another tool's span, or one still in an exporter's batch) makes a root.
        children[span.parent_span_id if span.parent_span_id in known else None].append(span)
    first = min(span.start for span in spans)
    errors = sum(1 for span in spans if span.status == "ERROR")
    services = sorted({span.service for span in spans})
    lines = [
        f"trace {trace_id}  started {first.astimezone(UTC).isoformat(timespec='milliseconds')}  "
        f"{len(spans)} spans  services: {', '.join(services)}" + (f"  ERRORS: {errors}" if errors else "")
    ]

    def walk(parent: str | None, depth: int) -> Iterator[str]:
        for span in sorted(children.get(parent, []), key=lambda s: s.start):
            offset = (span.start - first).total_seconds() * 1000
            mark = f"  ERROR {span.error or ''}".rstrip() if span.status == "ERROR" else ""
            yield (f"{'  ' * depth}{span.name}  [{span.service}]  {span.duration_ms:.1f} ms  (+{offset:.1f} ms){mark}")
            if verbose:
                for key, value in sorted(span.attributes.items()):
                    yield f"{'  ' * (depth + 2)}{key} = {value}"
            yield from walk(span.span_id, depth + 1)

    lines.extend(walk(None, 1))
    return lines


# --- dead letters ---


def dlq_topic(topic: str) -> str:
    """`payments.commands.v1` or `payments.commands.v1.dlq` -> the DLQ's name."""
    return topic if topic.endswith(DLQ_SUFFIX) else f"{topic}{DLQ_SUFFIX}"


def original_topic(topic: str) -> str:
    """The topic a dead letter came from: its DLQ's name without `.dlq`."""
    return topic.removesuffix(DLQ_SUFFIX)


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    @property
    def id(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, tz=UTC)

    def header(self, name: str) -> str | None:
        value = next((v for k, v in self.headers if k == name), None)
        return value.decode(errors="replace") if value is not None else None

    def event(self) -> tuple[str, str] | None:
        """(type, id) of the envelope, if it decodes."""
        try:
            envelope = decode_envelope(self.value, dict(self.headers))
        except EnvelopeError:
            return None
        return envelope.type, str(envelope.id)


def parse_id(dead_letter_id: str) -> tuple[str, int, int]:
    """`<topic>:<partition>:<offset>` -> its parts; raises ValueError naming the expected shape."""
    parts = dead_letter_id.strip().rsplit(":", 2)
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or not parts[2].isdigit():
        raise ValueError(f"expected <topic>:<partition>:<offset>, got {dead_letter_id!r}")
    return dlq_topic(parts[0]), int(parts[1]), int(parts[2])


async def dlq_topics(bootstrap_servers: str) -> list[str]:
    """Every `*.dlq` topic on the broker."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        return sorted(t for t in await consumer.topics() if t.endswith(DLQ_SUFFIX))
    finally:
        await consumer.stop()


async def read_dead_letters(
    bootstrap_servers: str, topic: str, *, partition: int | None = None, offset: int | None = None
) -> list[DeadLetter]:
    """Every record of a DLQ topic (or the one at `partition`/`offset`), read without a consumer group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        numbers = consumer.partitions_for_topic(topic)
        if not numbers:
            await consumer._client.force_metadata_update()
            numbers = consumer.partitions_for_topic(topic) or set()
        partitions = [TopicPartition(topic, p) for p in sorted(numbers) if partition is None or p == partition]
        if not partitions:
            return []
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        if offset is not None:
            for tp in partitions:
                consumer.seek(tp, offset)
            ends = {tp: min(end, offset + 1) for tp, end in ends.items()}
        else:
            await consumer.seek_to_beginning(*partitions)
        records: list[DeadLetter] = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=500)
            for tp, chunk in batch.items():
                records.extend(
                    DeadLetter(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value, list(r.headers or ()))
                    for r in chunk
                    if r.offset < ends[tp] and (offset is None or r.offset == offset)
                )
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        await consumer.stop()


def list_line(record: DeadLetter) -> str:
    """One line of `paydesk dlq list`."""
    event = record.event()
    what = f"{event[0]} {event[1]}" if event else "undecodable"
    reason = mask_card_numbers(record.header(DLQ_REASON_HEADER) or "-")[0]
    key = record.key.decode(errors="replace") if record.key else "-"
    return (
        f"{record.id}  {record.time.isoformat(timespec='seconds')}  {what}  key={key}  "
        f"consumer={record.header(DLQ_CONSUMER_HEADER) or '-'}  reason: {reason}"
    )


def show_lines(record: DeadLetter) -> list[str]:
    """`paydesk dlq show`: headers, reason and body, with every card-shaped number masked."""
    event = record.event()
    lines = [
        f"id:        {record.id}",
        f"time:      {record.time.isoformat(timespec='milliseconds')}",
        f"original:  {original_topic(record.topic)}",
        f"key:       {record.key.decode(errors='replace') if record.key else '-'}",
        f"event:     {f'{event[0]} {event[1]}' if event else 'undecodable'}",
        f"consumer:  {record.header(DLQ_CONSUMER_HEADER) or '-'}",
        f"reason:    {mask_card_numbers(record.header(DLQ_REASON_HEADER) or '-')[0]}",
        "headers:",
    ]
    lines.extend(f"  {k}: {mask_card_numbers(v.decode(errors='replace'))[0]}" for k, v in record.headers)
    lines.append("body:")
    text = (record.value or b"").decode(errors="replace")
    with contextlib.suppress(ValueError):  # not JSON: shown as it came
        text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    lines.extend(f"  {line}" for line in mask_card_numbers(text)[0].splitlines())
    return lines


def replay_headers(record: DeadLetter) -> list[tuple[str, bytes]]:
    """The original headers (trace context included), without what dead-lettering added."""
    kept = [(k, v) for k, v in record.headers if not k.startswith("x-dlq-") and k != REPLAYED_FROM_HEADER]
    return [*kept, (REPLAYED_FROM_HEADER, record.id.encode())]


async def replay(bootstrap_servers: str, records: list[DeadLetter]) -> int:
    """Re-publish each dead letter to its original topic with its key; returns how many were sent."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    await producer.start()
    try:
        for record in records:
            await producer.send_and_wait(
                original_topic(record.topic), record.value, key=record.key, headers=replay_headers(record)
            )
    finally:
        await producer.stop()
    return len(records)
