"""The on-call tools' pure parts: the span tree, dead-letter ids, replay headers, masking, span rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from paydesk.oncall import DeadLetter, SpanRecord, parse_id, render_trace, replay_headers, show_lines
from shared.span_store import psycopg_conninfo, span_row

START = datetime(2026, 11, 3, 9, 30, tzinfo=UTC)


def span(span_id: str, parent: str | None, name: str, at_ms: float, **extra: Any) -> SpanRecord:
    fields: dict[str, Any] = {
        "service": "payments",
        "kind": "INTERNAL",
        "duration_ms": 5.0,
        "status": "UNSET",
        "error": None,
        "attributes": {},
    }
    fields.update(extra)
    return SpanRecord(
        span_id=span_id, parent_span_id=parent, name=name, start=START + timedelta(milliseconds=at_ms), **fields
    )


class TestTheSpanTree:
    def test_children_are_indented_under_their_parent_in_start_order(self) -> None:
        spans = [
            span("c", "b", "process payments.events.v1", 30, service="kpi"),
            span("a", None, "POST /payments", 0, duration_ms=42.25),
            span("b", "a", "send payments.events.v1", 20),
            span("d", "b", "process payments.events.v1", 25, service="receipts"),
        ]
        lines = render_trace("t1", spans)
        assert lines[0].startswith("trace t1") and "4 spans" in lines[0] and "kpi, payments, receipts" in lines[0]
        assert lines[1] == "  POST /payments  [payments]  42.2 ms  (+0.0 ms)"
        assert lines[2].startswith("    send payments.events.v1  [payments]")
        assert lines[3].startswith("      process payments.events.v1  [receipts]"), "earlier sibling first"
        assert lines[4].startswith("      process payments.events.v1  [kpi]  5.0 ms  (+30.0 ms)")

    def test_errors_are_marked_and_counted(self) -> None:
        spans = [
            span("a", None, "process payments.commands.v1", 0, status="ERROR", error="dead-lettered: unknown_item")
        ]
        lines = render_trace("t2", spans)
        assert "ERRORS: 1" in lines[0]
        assert lines[1].endswith("ERROR dead-lettered: unknown_item")

    def test_a_span_whose_parent_was_not_stored_is_shown_as_a_root(self) -> None:
        lines = render_trace("t3", [span("a", "gone", "process gateway.events.v1", 0)])
        assert lines[1].startswith("  process gateway.events.v1")

    def test_an_unknown_trace_says_how_spans_get_stored(self) -> None:
        assert "PAYDESK_OTEL_EXPORTER=postgres" in render_trace("nope", [])[0]

    def test_an_unknown_trace_says_it_may_not_have_been_sampled(self) -> None:
        assert "PAYDESK_TRACE_SAMPLE_RATIO" in render_trace("nope", [])[0]


class TestDeadLetterIds:
    def test_a_topic_partition_and_offset(self) -> None:
        assert parse_id("payments.commands.v1.dlq:2:17") == ("payments.commands.v1.dlq", 2, 17)

    def test_the_original_topic_names_its_dlq(self) -> None:
        assert parse_id("payments.commands.v1:0:3") == ("payments.commands.v1.dlq", 0, 3)

    @pytest.mark.parametrize("bad", ["payments.commands.v1.dlq", "x:1", ":1:2", "t:a:2", "t:1:-2"])
    def test_anything_else_is_refused(self, bad: str) -> None:
        with pytest.raises(ValueError, match="topic>:<partition>:<offset>"):
            parse_id(bad)


def dead_letter(value: bytes, headers: list[tuple[str, bytes]]) -> DeadLetter:
    return DeadLetter("payments.commands.v1.dlq", 1, 9, 1_790_000_000_000, b"WU-10001", value, headers)


class TestShowingAndReplaying:
    def test_card_numbers_are_masked_in_the_body_and_the_reason(self) -> None:
        record = dead_letter(
            b'{"note": "card 4242 4242 4242 4242", "n": 4000056655665556, "phone": "555 123 4567"}',
            [("x-dlq-reason", b"invalid envelope: 4242424242424242"), ("x-dlq-consumer", b"paydesk.payments.commands")],
        )
        text = "\n".join(show_lines(record))
        assert "4242 4242 4242 4242" not in text and "4242424242424242" not in text and "4000056655665556" not in text
        assert "************4242" in text and "************5556" in text
        assert "555 123 4567" in text, "numbers that are not card-shaped stay"
        assert "original:  payments.commands.v1" in text
        assert '  "note": "card ************4242",' in text, "the body is pretty-printed JSON"

    def test_a_body_that_is_not_json_is_shown_as_it_came(self) -> None:
        assert "  {not json" in show_lines(dead_letter(b"{not json", []))

    def test_a_replay_keeps_the_original_headers_and_drops_the_dead_letter_ones(self) -> None:
        record = dead_letter(
            b"{}",
            [
                ("content-type", b"application/cloudevents+json"),
                ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
                ("x-dlq-reason", b"unknown_item"),
                ("x-dlq-consumer", b"paydesk.payments.commands"),
                ("x-replayed-from", b"payments.commands.v1.dlq:0:1"),
            ],
        )
        assert replay_headers(record) == [
            ("content-type", b"application/cloudevents+json"),
            ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            ("x-replayed-from", b"payments.commands.v1.dlq:1:9"),
        ]


class Keep(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Any) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def test_a_finished_span_becomes_a_row_with_its_business_ids_and_error() -> None:
    kept = Keep()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(kept))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("POST /payments") as parent:
        parent.set_attribute("paydesk.receipt_number", "R-5001")
        parent.set_attribute("paydesk.payment_id", "PAY-2025-004521")
        with tracer.start_as_current_span("child") as child:
            child.set_status(trace.Status(trace.StatusCode.ERROR, "dead-lettered: unknown_item"))
    child_row, parent_row = (span_row(s, "payments") for s in kept.spans)
    assert parent_row[2] is None and child_row[2] == parent_row[1], "the child points at its parent"
    assert parent_row[4] == "POST /payments" and parent_row[9] == "UNSET"
    assert parent_row[12] == ["PAY-2025-004521", "R-5001"]
    assert child_row[9] == "ERROR" and child_row[10] == "dead-lettered: unknown_item"
    assert len(child_row[0]) == 32 and len(child_row[1]) == 16


class TestConnectionSettings:
    def test_a_unix_socket_url(self) -> None:
        url = "postgresql+asyncpg://postgres@/paydesk?host=/tmp/pg%20sock"
        assert psycopg_conninfo(url) == {"dbname": "paydesk", "user": "postgres", "host": "/tmp/pg sock"}

    def test_a_tcp_url(self) -> None:
        url = "postgresql+asyncpg://paydesk:secret@postgres:5433/paydesk"
        assert psycopg_conninfo(url) == {
            "dbname": "paydesk",
            "user": "paydesk",
            "password": "secret",
            "host": "postgres",
            "port": 5433,
        }
