"""Traces (OpenTelemetry), structured JSON logs carrying the trace id, and Prometheus metrics."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider, sampling
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from pythonjsonlogger.json import JsonFormatter

_configured = False


class TraceContextFilter(logging.Filter):
    """Adds the current trace and span ids, and the service name, to every log record."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        record.service = self.service
        record.trace_id = format(context.trace_id, "032x") if context.is_valid else None
        record.span_id = format(context.span_id, "016x") if context.is_valid else None
        return True


def configure_logging(service: str, level: str = "INFO") -> None:
    """JSON lines on stderr: time, level, logger, message, service, trace_id, span_id and any extras."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            datefmt="%Y-%m-%dT%H:%M:%S%z",
        )
    )
    handler.addFilter(TraceContextFilter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def trace_sampler(ratio: float) -> sampling.Sampler:
    """Where a trace starts, `ratio` of them are recorded; everywhere else a span follows its parent's decision, which
    the W3C traceparent carries across HTTP and Kafka, so a trace is recorded by every service or by none."""
    root = sampling.ALWAYS_ON if ratio >= 1 else sampling.TraceIdRatioBased(ratio)
    return sampling.ParentBased(root)


def configure_tracing(
    service: str,
    exporter: str,
    database_url: str | None = None,
    otlp_endpoint: str | None = None,
    *,
    sample_ratio: float = 1.0,
) -> None:
    """Install the tracer provider once per process; `exporter` is `none`, `console`, `otlp` or `postgres`."""
    global _configured
    if _configured:
        return
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"paydesk-{service}"}), sampler=trace_sampler(sample_ratio)
    )
    span_exporter: SpanExporter | None = None
    if exporter == "console":
        span_exporter = ConsoleSpanExporter(out=sys.stderr)
    elif exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # Given explicitly, the exporter takes the full traces URL; from the environment it appends the path itself.
        traces_url = f"{otlp_endpoint.rstrip('/')}/v1/traces" if otlp_endpoint else None
        span_exporter = OTLPSpanExporter(endpoint=traces_url)
    elif exporter == "postgres" and database_url:
        from shared.span_store import PostgresSpanExporter

        span_exporter = PostgresSpanExporter(database_url, service)
    if span_exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(span_exporter))
    trace.set_tracer_provider(provider)
    _configured = True


# Payload fields that name a business object, and the span attribute each becomes (`paydesk trace --payment`).
BUSINESS_FIELDS = {
    "payment_id": "paydesk.payment_id",
    "receipt_number": "paydesk.receipt_number",
    "transaction_id": "paydesk.transaction_id",
    "credit_note_number": "paydesk.credit_note_number",
}


def business_ids(data: Mapping[str, Any]) -> dict[str, str]:
    """The payload's business ids (payment id, receipt number, ...) as span attributes."""
    found = {}
    for field, attribute in BUSINESS_FIELDS.items():
        value = data.get(field)
        if isinstance(value, str) and value:
            found[attribute] = value
    return found


def tag_business_ids(data: Mapping[str, Any], span: trace.Span | None = None) -> None:
    """Put the payload's business ids (payment id, receipt number, ...) on `span`, the current one by default."""
    target = span or trace.get_current_span()
    if target.is_recording():
        target.set_attributes(business_ids(data))


# Path parameters that name a business object, and their span attribute; `payment_id_or_receipt` is either.
PATH_PARAMETERS = {
    "payment_id_or_receipt": "paydesk.payment_ref",
    "payment_id": "paydesk.payment_id",
    "receipt_number": "paydesk.receipt_number",
}


def tag_path_params(path_params: Mapping[str, Any]) -> None:
    """Put the route's business ids (e.g. `/payments/{payment_id_or_receipt}`) on the current (HTTP) span."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    for name, attribute in PATH_PARAMETERS.items():
        value = path_params.get(name)
        if isinstance(value, str) and value:
            span.set_attribute(attribute, value)


def current_trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
