"""FastStream's own spans: on what it publishes (a DLQ write, in its event's trace), never on a consumed batch."""

from __future__ import annotations

import asyncio

from faststream.kafka import KafkaBroker, TestKafkaBroker
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.kafka_clients import KafkaPublishTelemetryMiddleware, create_broker
from shared.settings import ServiceSettings


def test_every_service_broker_keeps_telemetry_on_publishing_only() -> None:
    broker = create_broker(ServiceSettings())
    assert any(isinstance(m, KafkaPublishTelemetryMiddleware) for m in broker.middlewares)


async def test_a_publish_continues_the_current_trace_and_a_consumed_batch_adds_no_span() -> None:
    provider = TracerProvider()
    kept = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(kept))
    broker = KafkaBroker(middlewares=[KafkaPublishTelemetryMiddleware(tracer_provider=provider)])
    received: list[list[bytes]] = []
    current_in_handler: list[trace.SpanContext] = []

    @broker.subscriber("payments.events.v1.dlq", batch=True)
    async def on_batch(bodies: list[bytes]) -> None:
        current_in_handler.append(trace.get_current_span().get_span_context())
        received.append(bodies)

    async with TestKafkaBroker(broker) as test_broker:
        with provider.get_tracer("test").start_as_current_span("process payments.events.v1") as event_span:
            await test_broker.publish(b"a refused event", topic="payments.events.v1.dlq")
        for _ in range(100):
            if received:
                break
            await asyncio.sleep(0.01)

    assert received
    spans = kept.get_finished_spans()
    trace_id = event_span.get_span_context().trace_id
    published = [span for span in spans if span.name != "process payments.events.v1"]
    assert published and all(span.context.trace_id == trace_id for span in published), [s.name for s in spans]
    assert not any(span.name.endswith(" process") for span in spans), [s.name for s in spans]
