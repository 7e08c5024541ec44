"""`paydesk trace`: spans stored in Postgres by the exporter, read back as a tree, found by a payment's ids."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import date
from decimal import Decimal

import pytest
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult
from typer.testing import CliRunner

from paydesk import oncall
from paydesk.cli import app as cli_app
from services.kpi.app import create_service as create_kpi
from services.kpi.settings import KpiSettings
from shared.contracts import CONTENT_TYPE, Topic, new_envelope
from shared.contracts.events import PaymentRecordRequested, PaymentType
from shared.span_store import PostgresSpanExporter
from shared.telemetry import configure_tracing
from tests.conftest import Infra
from tests.support.helpers import eventually, publish_raw, read_topic, running
from tests.support.payments import Api, bill_payment, payments_api, seeded, year_of

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def stored_spans(infra: Infra) -> Iterator[BatchSpanProcessor]:
    """Every span this process ends also goes to the run's database (the services share one tracer provider here)."""
    configure_tracing("tests", "none")  # a no-op if a service already installed the provider
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    processor = BatchSpanProcessor(PostgresSpanExporter(infra.database_url, "tests"), schedule_delay_millis=200)
    provider.add_span_processor(processor)
    yield processor
    processor.shutdown()  # type: ignore[no-untyped-call]  # afterwards it drops what it is given, so later tests write no spans


@pytest.fixture(scope="module")
async def api(infra: Infra, stored_spans: BatchSpanProcessor) -> AsyncIterator[Api]:
    kpi = create_kpi(
        KpiSettings(database_url=infra.database_url, kafka_bootstrap_servers=infra.bootstrap_servers, development=True)
    )
    async with running(kpi):
        async for running_api in payments_api(infra):
            yield running_api


async def stored(processor: BatchSpanProcessor, url: str, trace_id: str, name: str) -> list[oncall.SpanRecord] | None:
    await asyncio.to_thread(processor.force_flush)
    spans = await asyncio.to_thread(oncall.load_trace, url, trace_id)
    return spans if any(span.name == name for span in spans) else None


def depth(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


async def paydesk(*args: str) -> str:
    result = await asyncio.to_thread(CliRunner().invoke, cli_app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


async def test_a_counter_payment_is_one_trace_from_the_request_to_the_consumers_found_by_its_receipt(
    api: Api, infra: Infra, stored_spans: BatchSpanProcessor
) -> None:
    account, _ = await seeded(api)
    response = await api.pay(bill_payment(account))
    assert response.status_code == 201, response.text
    trace_id, posted = response.headers["X-Trace-Id"], response.json()
    spans = await eventually(
        lambda: stored(stored_spans, infra.database_url, trace_id, "process payments.events.v1"), within=60
    )

    lines = oncall.render_trace(trace_id, spans)
    request = next(line for line in lines if "POST /payments" in line)
    sent = next(line for line in lines if "send payments.events.v1" in line)
    processed = next(line for line in lines if "process payments.events.v1" in line)
    assert depth(request) < depth(sent) < depth(processed), "\n".join(lines)
    assert " ms " in processed
    consumer = next(s for s in spans if s.name == "process payments.events.v1")
    assert consumer.attributes["messaging.system"] == "kafka"
    assert consumer.attributes["messaging.operation.type"] == "process"
    assert consumer.attributes["messaging.destination.name"] == Topic.PAYMENTS_EVENTS
    assert consumer.attributes["messaging.consumer.group.name"].startswith("paydesk.kpi.")
    assert consumer.attributes["paydesk.account"] == account
    assert consumer.attributes["paydesk.receipt_number"] == posted["receipt_number"]

    for business_id in (posted["receipt_number"], posted["payment_id"]):
        assert trace_id in await asyncio.to_thread(oncall.find_traces, infra.database_url, business_id)
    printed = await paydesk("trace", "--payment", posted["receipt_number"])
    assert f"trace {trace_id}" in printed and "process payments.events.v1" in printed
    assert "POST /payments" in await paydesk("trace", trace_id)


async def test_a_dead_lettered_command_shows_as_an_error_in_its_trace(
    api: Api, infra: Infra, stored_spans: BatchSpanProcessor
) -> None:
    account, _ = await seeded(api)
    command = new_envelope(
        "payment.record_requested",
        source="lockbox",
        subject=account,
        data=PaymentRecordRequested(
            account_number=account,
            payment_type=PaymentType.BILL,
            item_reference="INV-NOBODY-BILLED",
            method="Cash",
            amount=Decimal("10.00"),
            payment_date=date(year_of(account), 5, 2),
        ),
    )
    with trace.get_tracer("tests").start_as_current_span("lockbox sends a command") as span:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        trace_id = format(span.get_span_context().trace_id, "032x")
    headers = [("content-type", CONTENT_TYPE.encode()), *((k, v.encode()) for k, v in carrier.items())]
    await publish_raw(infra.bootstrap_servers, Topic.PAYMENTS_COMMANDS, command.to_bytes(), account.encode(), headers)

    spans = await eventually(
        lambda: stored(stored_spans, infra.database_url, trace_id, "process payments.commands.v1"), within=60
    )
    failed = next(s for s in spans if s.name == "process payments.commands.v1")
    assert failed.status == "ERROR" and failed.error and "unknown_item" in failed.error
    assert failed.attributes["messaging.message.id"] == str(command.id)
    lines = oncall.render_trace(trace_id, spans)
    assert "ERRORS: " in lines[0]
    assert any("process payments.commands.v1" in line and "ERROR dead-lettered: unknown_item" in line for line in lines)


async def test_a_trace_its_caller_did_not_sample_is_stored_by_no_service_yet_its_id_travels_with_the_events(
    api: Api, infra: Infra, stored_spans: BatchSpanProcessor
) -> None:
    """INVARIANT: a trace is whole or absent. A lockbox command whose traceparent says "not sampled" is posted and
    counted, its trace id goes on in the Kafka headers of what it caused, and no service stores a span of it."""
    account, _ = await seeded(api)
    unsampled = uuid.uuid4().hex
    command = new_envelope(
        "payment.record_requested",
        source="lockbox",
        subject=account,
        data=PaymentRecordRequested(
            account_number=account,
            payment_type=PaymentType.BILL,
            item_reference=f"INV-{account}-1",
            method="Cash",
            amount=Decimal("145.50"),
            payment_date=date(year_of(account), 4, 20),
        ),
    )
    headers = [("content-type", CONTENT_TYPE.encode()), ("traceparent", f"00-{unsampled}-00f067aa0ba902b7-00".encode())]
    await publish_raw(infra.bootstrap_servers, Topic.PAYMENTS_COMMANDS, command.to_bytes(), account.encode(), headers)

    async def posted_in_its_trace() -> str | None:
        for record in await read_topic(infra.bootstrap_servers, Topic.PAYMENTS_EVENTS):
            traceparent = dict(record.headers).get("traceparent", b"").decode()
            if record.key == account.encode() and unsampled in traceparent and b'"payment.posted"' in record.value:
                return str(traceparent)
        return None

    traceparent = await eventually(posted_in_its_trace, within=120)
    assert not int(traceparent.rsplit("-", 1)[1], 16) & 1, "it goes on unsampled"

    # A recorded payment of the same account after it: once kpi stored that one's span, it had applied the first.
    response = await api.pay(bill_payment(account, item_reference=f"INV-{account}-2", amount="152.25"))
    assert response.status_code == 201, response.text
    await eventually(
        lambda: stored(stored_spans, infra.database_url, response.headers["X-Trace-Id"], "process payments.events.v1"),
        within=60,
    )
    await asyncio.to_thread(stored_spans.force_flush)
    assert await asyncio.to_thread(oncall.load_trace, infra.database_url, unsampled) == []


def test_a_batch_of_spans_exported_again_is_stored_once_with_its_attributes(infra: Infra) -> None:
    """The exporter copies a batch in and skips the spans already stored (a batch can be sent twice)."""
    ended: list[ReadableSpan] = []

    class Keep(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            ended.extend(spans)
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Keep()))
    tracer = provider.get_tracer(__name__)
    with tracer.start_as_current_span("process payments.events.v1", kind=trace.SpanKind.CONSUMER) as root:
        root.set_attributes({"paydesk.payment_id": "PAY-COPY-1", "paydesk.event_type": "payment.posted"})
        for n in range(3):
            with tracer.start_as_current_span(f"step {n}", attributes={"paydesk.receipt_number": f"R-COPY-{n}"}):
                pass
    exporter = PostgresSpanExporter(infra.database_url, "tests")
    try:
        assert exporter.export(ended[:2]) is SpanExportResult.SUCCESS
        assert exporter.export(ended) is SpanExportResult.SUCCESS  # the first two again, with two new ones
    finally:
        exporter.shutdown()
    trace_id = format(root.get_span_context().trace_id, "032x")
    spans = oncall.load_trace(infra.database_url, trace_id)
    assert sorted(span.name for span in spans) == ["process payments.events.v1", "step 0", "step 1", "step 2"]
    consumer = next(span for span in spans if span.kind == "CONSUMER")
    assert consumer.attributes == {"paydesk.payment_id": "PAY-COPY-1", "paydesk.event_type": "payment.posted"}
    assert oncall.find_traces(infra.database_url, "R-COPY-2") == [trace_id]
