"""Traces sampled where they start (`PAYDESK_TRACE_SAMPLE_RATIO`), whole or absent, their ids flowing either way."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from pydantic import ValidationError
from sqlalchemy import MetaData

import shared.messaging as messaging
import shared.outbox as outbox
from services.receipts.samples import sample_payment
from shared.contracts import CONTENT_TYPE, new_envelope
from shared.messaging import Delivery, EventConsumer
from shared.settings import ServiceSettings
from shared.telemetry import TraceContextFilter, trace_sampler

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def traceparent(sampled: bool, trace_id: str = TRACE_ID) -> str:
    return f"00-{trace_id}-00f067aa0ba902b7-{'01' if sampled else '00'}"


def sampled_flag(header: str) -> bool:
    """The W3C sampled bit of a traceparent (other flag bits, like the random trace id bit, may be set too)."""
    return bool(int(header.rsplit("-", 1)[1], 16) & 1)


def tracer_at(ratio: float, id_generator: IdGenerator | None = None) -> trace.Tracer:
    return TracerProvider(sampler=trace_sampler(ratio), id_generator=id_generator).get_tracer("test")


class TestWhereATraceStarts:
    def test_every_new_trace_is_recorded_at_ratio_one(self) -> None:
        with tracer_at(1.0).start_as_current_span("POST /payments") as span:
            assert span.is_recording()

    def test_no_new_trace_is_recorded_at_ratio_zero_yet_it_has_an_id(self) -> None:
        with tracer_at(0.0).start_as_current_span("POST /payments") as span:
            assert not span.is_recording()
            assert span.get_span_context().is_valid, "the logs, X-Trace-Id and Kafka headers still get its id"

    def test_the_ratio_is_the_share_of_new_traces_recorded(self) -> None:
        class Spread(IdGenerator):
            """Trace ids spread evenly over the range the ratio sampler compares (the low 64 bits)."""

            def __init__(self) -> None:
                self.next = 0

            def generate_span_id(self) -> int:
                return 1

            def generate_trace_id(self) -> int:
                self.next += 1
                return self.next * (2**64 // 1000) - 1

        tracer = tracer_at(0.25, Spread())
        recorded = 0
        for _ in range(1000):
            with tracer.start_as_current_span("POST /payments") as span:
                recorded += span.is_recording()
        assert recorded == 250


class TestWhereATraceGoesOn:
    @given(ratio=st.floats(min_value=0.0, max_value=1.0), sampled=st.booleans())
    def test_a_span_follows_its_callers_decision_whatever_the_ratio(self, ratio: float, sampled: bool) -> None:
        """INVARIANT: a trace is recorded by every service it reaches or by none, never half."""
        parent = propagate.extract({"traceparent": traceparent(sampled)})
        with tracer_at(ratio).start_as_current_span("process payments.events.v1", context=parent) as span:
            assert span.is_recording() is sampled
            assert format(span.get_span_context().trace_id, "032x") == TRACE_ID

    def test_an_unrecorded_trace_still_puts_its_id_in_the_log_line_and_the_traceparent(self) -> None:
        with tracer_at(0.0).start_as_current_span("POST /payments") as span:
            record = logging.LogRecord("test", logging.INFO, __file__, 1, "payment accepted", None, None)
            TraceContextFilter("payments").filter(record)
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
        trace_id = format(span.get_span_context().trace_id, "032x")
        assert getattr(record, "trace_id") == trace_id  # noqa: B009  # set by the filter, unknown to LogRecord
        assert carrier["traceparent"].startswith(f"00-{trace_id}-") and not sampled_flag(carrier["traceparent"])


class SentHeaders:
    """The relay's producer: keeps what it was asked to send and acknowledges at once."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []

    async def send(self, topic: str, *, value: bytes, key: bytes, headers: list[tuple[str, bytes]]) -> Any:
        self.headers.append({k: v.decode() for k, v in headers})
        return asyncio.get_running_loop().create_future()


def relayed(monkeypatch: pytest.MonkeyPatch, ratio: float, staged: dict[str, str]) -> dict[str, str]:
    """The Kafka headers the relay sends for an outbox row staged with `staged` headers."""
    monkeypatch.setattr(outbox, "tracer", tracer_at(ratio))
    producer: Any = SentHeaders()
    unused: Any = None
    rows, relay_state = outbox.outbox_tables(MetaData())  # the relay compiles its statements from them, unused here
    relay = outbox.OutboxRelay(service="test", engine=unused, outbox=rows, relay_state=relay_state, producer=producer)

    async def send() -> None:
        await relay._send("payments.events.v1", "WU-10001", staged, b"{}", "event-1")

    asyncio.run(send())
    return dict(producer.headers[0])


class TestTheRelaysSpan:
    def test_a_recorded_trace_goes_on_from_the_send_span(self, monkeypatch: pytest.MonkeyPatch) -> None:
        sent = relayed(monkeypatch, 0.0, {"content-type": CONTENT_TYPE, "traceparent": traceparent(True)})
        assert sent["traceparent"].startswith(f"00-{TRACE_ID}-") and sampled_flag(sent["traceparent"])
        assert sent["traceparent"] != traceparent(True), "the consumers' spans hang under the send span"

    def test_an_unrecorded_trace_goes_on_with_the_traceparent_it_was_staged_with(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        staged = {"content-type": CONTENT_TYPE, "traceparent": traceparent(False)}
        assert relayed(monkeypatch, 1.0, staged) == staged

    def test_a_row_staged_outside_any_trace_starts_one_that_the_consumers_continue(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        sent = relayed(monkeypatch, 0.0, {"content-type": CONTENT_TYPE})
        assert not sampled_flag(sent["traceparent"]) and sent["content-type"] == CONTENT_TYPE


class TestTheConsumersSpan:
    def span_for(self, monkeypatch: pytest.MonkeyPatch, sampled: bool) -> Any:
        provider = TracerProvider(sampler=trace_sampler(1.0))
        kept = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(kept))
        monkeypatch.setattr(messaging, "tracer", provider.get_tracer("test"))
        unused: Any = None
        consumer = EventConsumer(
            service="kpi",
            name="payments",
            topic="payments.events.v1",
            handlers={},
            session_factory=unused,
            inbox=unused,
        )
        envelope = new_envelope("payment.posted", source="payments", subject="WU-10001", data=sample_payment())
        headers = {"content-type": CONTENT_TYPE, "traceparent": traceparent(sampled)}
        with consumer._event_span(Delivery(envelope.to_bytes(), headers, b"WU-10001"), envelope) as span:
            context = span.get_span_context()
        return context, kept.get_finished_spans(), envelope

    def test_a_recorded_event_span_carries_the_messaging_attributes_and_business_ids(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        context, ended, envelope = self.span_for(monkeypatch, sampled=True)
        assert format(context.trace_id, "032x") == TRACE_ID
        (span,) = ended
        assert span.name == "process payments.events.v1" and span.kind is trace.SpanKind.CONSUMER
        assert dict(span.attributes) == {
            "messaging.system": "kafka",
            "messaging.destination.name": "payments.events.v1",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.consumer.group.name": "paydesk.kpi.payments",
            "messaging.kafka.message.key": "WU-10001",
            "messaging.message.id": str(envelope.id),
            "paydesk.account": "WU-10001",
            "paydesk.event_type": "payment.posted",
            "paydesk.payment_id": "PAY-2025-004521",
            "paydesk.receipt_number": "R-5001",
            "paydesk.transaction_id": "TXN-2025-008934",
        }

    def test_an_unrecorded_event_gets_no_span_object_but_keeps_its_trace(self, monkeypatch: pytest.MonkeyPatch) -> None:
        context, ended, _ = self.span_for(monkeypatch, sampled=False)
        assert ended == ()
        assert format(context.trace_id, "032x") == TRACE_ID and not context.trace_flags.sampled


class TestTheSetting:
    def test_every_trace_is_kept_unless_told_otherwise(self) -> None:
        assert ServiceSettings().trace_sample_ratio == 1.0

    def test_a_ratio_is_read_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PAYDESK_TRACE_SAMPLE_RATIO", "0.1")
        assert ServiceSettings().trace_sample_ratio == 0.1

    @pytest.mark.parametrize("value", ["-0.1", "1.5", "most"])
    def test_a_ratio_outside_zero_to_one_is_refused_naming_the_setting(
        self, monkeypatch: pytest.MonkeyPatch, value: str
    ) -> None:
        monkeypatch.setenv("PAYDESK_TRACE_SAMPLE_RATIO", value)
        with pytest.raises(ValidationError) as caught:
            ServiceSettings()
        assert "paydesk_trace_sample_ratio" in str(caught.value).lower()
