"""What one span costs: a consumer's span per event and a relay's span per row, in the OpenTelemetry SDK and in
the Postgres exporter (a benchmark, never a test; prints figures).

For each tracer set-up it makes `--spans` event spans (`EventConsumer._event_span`, with a payment's envelope and
an incoming W3C traceparent) and as many relay spans (`OutboxRelay._send`, to a producer that only returns a done
future), and prints this process's CPU per span (the SDK's work, and the batch processor's export thread when
there is one) and, for the Postgres exporter, Postgres's CPU per span. Set-ups:

- `no-op`: no tracer provider (the API's non-recording spans): the floor;
- `sampled out`: the SDK with the parent-based ratio sampler at 0, parents unsampled (what an unsampled trace
  costs);
- `recording`: the SDK, sampled, no processor (the span objects and their attributes alone);
- `batch, discard`: plus the batch processor, whose exporter drops the spans (queueing and the worker thread);
- `batch, postgres`: plus the Postgres exporter (`telemetry.spans`), as `make run` exports;
- `exporter alone`: the Postgres exporter storing finished spans in batches of 512 (its CPU per span, and Postgres's).

    .venv/bin/python bench/span_cost.py [--spans 20000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider, sampling  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult  # noqa: E402
from sqlalchemy import MetaData  # noqa: E402

import shared.messaging as messaging  # noqa: E402
import shared.outbox as outbox  # noqa: E402
from bench.consumer_overhead import postgres_cpu  # noqa: E402
from paydesk.embedded import EmbeddedPostgres  # noqa: E402
from services.receipts.samples import sample_payment  # noqa: E402
from shared.contracts import CONTENT_TYPE, new_envelope  # noqa: E402
from shared.messaging import Delivery, EventConsumer  # noqa: E402
from shared.span_store import PostgresSpanExporter, connect  # noqa: E402

SAMPLED = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
UNSAMPLED = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"


class Discard(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class DoneProducer:
    """Stands in for the relay's producer: every send is acknowledged at once."""

    async def send(self, topic: str, **_: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def provider(sampler: sampling.Sampler, exporter: SpanExporter | None) -> tuple[TracerProvider, Callable[[], Any]]:
    made = TracerProvider(resource=Resource.create({"service.name": "paydesk-bench"}), sampler=sampler)
    if exporter is None:
        return made, lambda: None
    processor = BatchSpanProcessor(exporter)
    made.add_span_processor(processor)
    return made, processor.force_flush


async def run(tracer: trace.Tracer, flush: Callable[[], Any], spans: int, traceparent: str) -> tuple[float, float]:
    """CPU seconds of `spans` event spans, then of `spans` relay spans (the export of each included)."""
    messaging.tracer = tracer  # type: ignore[assignment]
    outbox.tracer = tracer  # type: ignore[assignment]
    unused: Any = None  # neither the database nor Kafka is reached
    consumer = EventConsumer(
        service="bench", name="payments", topic="payments.events.v1", handlers={}, session_factory=unused, inbox=unused
    )
    producer: Any = DoneProducer()
    rows, relay_state = outbox.outbox_tables(MetaData())  # the relay compiles its statements from them, unused here
    relay = outbox.OutboxRelay(service="bench", engine=unused, outbox=rows, relay_state=relay_state, producer=producer)
    envelope = new_envelope("payment.posted", source="payments", subject="WU-10001", data=sample_payment())
    headers = {"content-type": CONTENT_TYPE, "traceparent": traceparent}
    delivery = Delivery(envelope.to_bytes(), headers, b"WU-10001")
    figures = []
    for kind in ("event", "relay"):
        flush()
        start = time.process_time()
        for n in range(spans):
            if kind == "event":
                with consumer._event_span(delivery, envelope):
                    pass
            else:
                await relay._send("payments.events.v1", "WU-10001", headers, b"{}", str(envelope.id))
            if n % 1000 == 999:
                flush()  # as the worker would, before its queue (2,048) drops spans
        flush()
        figures.append(time.process_time() - start)
    return figures[0], figures[1]


def exporter_alone(url: str, pid: int, spans: int) -> tuple[float, float]:
    """CPU seconds here and in Postgres to store `spans` finished event spans, in the processor's batches of 512."""
    ended: list[ReadableSpan] = []

    class Keep(SpanExporter):
        def export(self, batch: Sequence[ReadableSpan]) -> SpanExportResult:
            ended.extend(batch)
            return SpanExportResult.SUCCESS

    made, flush = provider(sampling.ALWAYS_ON, Keep())
    asyncio.run(run(made.get_tracer("bench"), flush, spans // 2, SAMPLED))
    exporter = PostgresSpanExporter(url, "bench")
    exporter.export(ended[:1])  # connected, table made
    cpu, pg = time.process_time(), postgres_cpu(pid)
    for at in range(1, len(ended), 512):
        exporter.export(ended[at : at + 512])
    cpu, pg = time.process_time() - cpu, postgres_cpu(pid) - pg
    exporter.shutdown()
    return cpu / (len(ended) - 1), pg / (len(ended) - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="paydesk-bench-spans-") as workdir:
        postgres = EmbeddedPostgres(Path(workdir) / "pgdata", delete_on_stop=True)
        url = postgres.start()
        try:
            pid = postgres._server.get_postmaster_info().pid  # type: ignore[attr-defined]
            on = sampling.ParentBased(sampling.ALWAYS_ON)
            setups: list[tuple[str, Any, Any, str]] = [
                ("no-op", None, None, SAMPLED),
                ("sampled out", sampling.ParentBased(sampling.TraceIdRatioBased(0.0)), None, UNSAMPLED),
                ("recording", on, None, SAMPLED),
                ("batch, discard", on, Discard, SAMPLED),
                ("batch, postgres", on, lambda: PostgresSpanExporter(url, "bench"), SAMPLED),
            ]
            load = os.getloadavg()
            print(f"load {load[0]:.1f} {load[1]:.1f} (uptime); {args.spans:,} spans of each kind per set-up")
            print(f"{'set-up':<16} {'event span us':>14} {'relay span us':>14} {'postgres us/span':>17}")
            for _ in range(args.repeat):
                for name, sampler, exporter, traceparent in setups:
                    if sampler is None:
                        tracer: trace.Tracer = trace.NoOpTracer()
                        flush: Callable[[], Any] = lambda: None  # noqa: E731
                    else:
                        made, flush = provider(sampler, exporter() if exporter else None)
                        tracer = made.get_tracer("bench")
                    pg = postgres_cpu(pid)
                    event, relay = asyncio.run(run(tracer, flush, args.spans, traceparent))
                    pg = postgres_cpu(pid) - pg
                    print(
                        f"{name:<16} {event / args.spans * 1e6:>14.1f} {relay / args.spans * 1e6:>14.1f} "
                        f"{pg / (2 * args.spans) * 1e6:>17.1f}",
                        flush=True,
                    )
                here, pg = exporter_alone(url, pid, args.spans)
                print(f"{'exporter alone':<16} {here * 1e6:>14.1f} {'':>14} {pg * 1e6:>17.1f}", flush=True)
            with connect(url) as conn:
                stored = conn.execute("SELECT count(*) FROM telemetry.spans").fetchone()[0]
            load = os.getloadavg()
            print(f"spans stored: {stored:,}; load {load[0]:.1f} {load[1]:.1f} (uptime)")
        finally:
            postgres.stop()


if __name__ == "__main__":
    main()
