"""A batch of events, each one step of its own payment's trace, without the batch's cost of making each span current."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import shared.messaging as messaging
from services.receipts.samples import sample_payment
from shared.contracts import CONTENT_TYPE, new_envelope
from shared.messaging import Applying, Delivery, EventConsumer
from shared.telemetry import trace_sampler

TRACE_IDS = ("4bf92f3577b34da6a3ce929d0e0e4736", "0af7651916cd43dd8448eb211c80319c")


class FakeSession:
    """Stands in for the batch's unit of work: begins and ends, runs nothing."""

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[None]:
        yield


@contextlib.asynccontextmanager
async def fake_sessions() -> AsyncIterator[FakeSession]:
    yield FakeSession()


def record(n: int, trace_id: str) -> Delivery:
    envelope = new_envelope(
        "payment.posted", source="payments", subject="WU-10001", data=sample_payment(receipt_number=f"R-{n}")
    )
    headers: dict[str, bytes | str] = {
        "content-type": CONTENT_TYPE.encode(),
        "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01".encode(),
    }
    return Delivery(envelope.to_bytes(), headers, b"WU-10001")


class TestABatchOfEvents:
    async def test_hands_each_event_its_own_trace_while_none_is_made_current(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        provider = TracerProvider(sampler=trace_sampler(1.0))
        kept = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(kept))
        monkeypatch.setattr(messaging, "tracer", provider.get_tracer("test"))

        async def claim_all(session: Any, inbox: Any, name: str, events: Sequence[Any]) -> set[Any]:
            return {event_id for event_id, _ in events}

        monkeypatch.setattr(messaging, "claim_many", claim_all)
        seen: list[tuple[str, str]] = []

        async def apply_batch(session: Any, batch: Sequence[Applying]) -> None:
            assert not trace.get_current_span().get_span_context().is_valid, "no event's span is current"
            for applying in batch:
                context = trace.get_current_span(applying.context).get_span_context()
                seen.append((format(context.trace_id, "032x"), format(context.span_id, "016x")))

        async def one_at_a_time(session: Any, envelope: Any) -> None:
            raise AssertionError("the batch handler applies them")

        unused: Any = None
        consumer = EventConsumer(
            service="kpi",
            name="payments",
            topic="payments.events.v1",
            handlers={"payment.posted": one_at_a_time},
            session_factory=fake_sessions,  # type: ignore[arg-type]
            inbox=unused,
            batch_handler=apply_batch,
        )

        outcomes = await consumer.deliver([record(n, trace_id) for n, trace_id in enumerate(TRACE_IDS)])

        assert outcomes == ["applied", "applied"]
        ended = kept.get_finished_spans()
        assert [format(span.context.trace_id, "032x") for span in ended] == list(TRACE_IDS)
        assert all(span.parent is not None and span.parent.span_id == 0x00F067AA0BA902B7 for span in ended)
        assert seen == [(format(s.context.trace_id, "032x"), format(s.context.span_id, "016x")) for s in ended]
        assert [dict(span.attributes or {}).get("paydesk.receipt_number") for span in ended] == ["R-0", "R-1"]
