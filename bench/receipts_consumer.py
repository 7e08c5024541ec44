"""Receipts' consumer of payments.events.v1 alone: `payment.posted` events applied per second, and documents
rendered per second behind it (a benchmark, never a test; prints figures).

Starts an embedded Postgres, migrates the receipts schema, and hands `--events` distinct `payment.posted`
envelopes to the service's own `EventConsumer.deliver` in batches of `--batch` (as Kafka would: one transaction
and one inbox claim per batch), then, where the service has a render worker, runs its passes until no document
waits. No broker: the figures are the consumer's and Postgres's, not the network's. Besides events per second
(which follow the machine's load) it prints the CPU per event, the consumer's and its Postgres backends', and the
SQL statements per event, which do not; the same for the render passes (per document rendered).

    .venv/bin/python bench/receipts_consumer.py [--events 2000] [--batch 200] [--skip-render | --one-file]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.consumer_meter import ConsumerMeter  # noqa: E402
from paydesk.embedded import EmbeddedPostgres  # noqa: E402
from paydesk.migrations import upgrade  # noqa: E402
from services.receipts.samples import sample_payment, usd  # noqa: E402
from shared.contracts import CONTENT_TYPE, new_envelope  # noqa: E402
from shared.messaging import Delivery  # noqa: E402


def deliveries(count: int) -> list[Delivery]:
    out = []
    for n in range(count):
        posted = sample_payment(
            receipt_number=f"R-B-{n:07d}",
            payment_id=f"PAY-B-{n:07d}",
            transaction_id=f"TXN-B-{n:07d}",
            amount=usd(f"{100 + n % 900}.{n % 100:02d}"),
        )
        account = posted.consumer.account_number
        envelope = new_envelope("payment.posted", source="payments", subject=account, data=posted)
        out.append(Delivery(envelope.to_bytes(), {"content-type": CONTENT_TYPE}, account.encode()))
    return out


def _store_one_file(renderings: Any) -> None:
    """Have the worker store the first document's PDF for every document: its database work without Typst's."""
    render_batch = renderings.render_batch
    first: list[bytes] = []

    async def same_file(batch: list[Any]) -> list[bytes]:
        if not first:
            first.extend(await render_batch(batch[:1]))
        return first * len(batch)

    renderings.render_batch = same_file


async def measure(url: str, data_dir: Path, events: int, batch: int, render: bool, one_file: bool) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # never contacted: deliver() needs no broker
    os.environ["PAYDESK_OTEL_EXPORTER"] = "none"
    from services.receipts.app import create_service

    service = create_service()
    consumer = next(c for c in service.event_consumers if c.topic == "payments.events.v1")
    records = deliveries(events)
    meter = ConsumerMeter(service.engine, data_dir)
    meter.start()
    for at in range(0, len(records), batch):
        outcomes = await consumer.deliver(records[at : at + batch])
        assert all(o == "applied" for o in outcomes), outcomes
    meter.stop()
    applied = meter.wall
    print(meter.report("payment.posted", events), flush=True)
    worker = getattr(service, "render_worker", None)
    if not render:
        print("rendered    skipped (--skip-render)", flush=True)
    elif worker is not None:
        if one_file:
            _store_one_file(worker.renderings)
        meter.start()
        rendered = 0
        while (stored := await worker.run_once()) > 0:
            rendered += stored
        meter.stop()
        took = meter.wall
        print(f"rendered    {rendered:,} documents in {took:.2f} s: {rendered / took:,.1f} per second", flush=True)
        # Rendering in a thread here (no render process before start()): the service's CPU includes Typst's.
        print(
            f"cpu/render  {1000 * meter.cpu / rendered:.2f} ms service (Typst included unless --one-file) + "
            f"{1000 * meter.postgres_cpu / rendered:.2f} ms postgres; "
            f"statements {meter.statements / rendered:.2f} per document",
            flush=True,
        )
        print(f"together    {events / (applied + took):,.1f} payments/s stored and rendered", flush=True)
        async with service.engine.connect() as connection:
            size, stored = (
                await connection.execute(
                    text("SELECT avg(octet_length(pdf)), avg(pg_column_size(pdf)) FROM receipts.documents")
                )
            ).one()
        print(f"pdf size    {size / 1024:.1f} KiB each, {stored / 1024:.1f} KiB as stored", flush=True)
    else:
        print("rendered    in the consumer (eager): included above", flush=True)
    await service.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--skip-render", action="store_true", help="measure the consumer only")
    parser.add_argument(
        "--one-file", action="store_true", help="store one real PDF for every document: the worker without Typst"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="paydesk-bench-receipts-") as workdir:
        data_dir = Path(workdir) / "pgdata"
        postgres = EmbeddedPostgres(data_dir, delete_on_stop=True)
        url = postgres.start()
        try:
            upgrade("receipts", url)
            print(f"load        {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} (uptime load average)", flush=True)
            asyncio.run(measure(url, data_dir, args.events, args.batch, not args.skip_render, args.one_file))
            print(f"load        {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} (uptime load average)", flush=True)
        finally:
            postgres.stop()


if __name__ == "__main__":
    main()
