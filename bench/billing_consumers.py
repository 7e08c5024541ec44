"""Billing events ingested per second by each service that keeps receivables (a benchmark, never a test).

Issue 17 asks for at least 5,000 billing events per second per consuming service. This measures each consumer of
`billing.receivables.v1` alone: an embedded Postgres, the service's migrations, and `--accounts` generated accounts
(an `account.upserted` and a `bill.issued` each, as `paydesk.sample_data.generate_accounts` makes them) handed to
the service's own `EventConsumer.deliver` in batches of `--batch`, as Kafka would hand them. No broker: the
figures are the consumer's and Postgres's, not the network's. Besides events per second (which follow the machine's
load) it prints each consumer's CPU per event, its own and its Postgres backends', the events per CPU-second that
makes, and SQL statements per event, which do not.

    .venv/bin/python bench/billing_consumers.py [--accounts 5000] [--batch 200] [--services payments,kpi]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.consumer_meter import ConsumerMeter  # noqa: E402
from paydesk.embedded import EmbeddedPostgres  # noqa: E402
from paydesk.migrations import upgrade  # noqa: E402
from paydesk.sample_data import generate_accounts  # noqa: E402
from shared.contracts import CONTENT_TYPE, Topic  # noqa: E402
from shared.messaging import Delivery  # noqa: E402

CONSUMERS = ("payments", "credit_notes", "kpi", "collections")


def deliveries(accounts: int) -> list[Delivery]:
    return [
        Delivery(envelope.to_bytes(), {"content-type": CONTENT_TYPE}, envelope.subject.encode())
        for envelope in generate_accounts(accounts)
    ]


async def measure(service_name: str, records: list[Delivery], batch: int, data_dir: Path) -> ConsumerMeter:
    service = importlib.import_module(f"services.{service_name}.app").create_service()
    consumer = next(c for c in service.event_consumers if c.topic == Topic.BILLING_RECEIVABLES)
    meter = ConsumerMeter(service.engine, data_dir)
    try:
        meter.start()
        for at in range(0, len(records), batch):
            outcomes = await consumer.deliver(records[at : at + batch])
            refused = [o for o in outcomes if o not in ("applied", "ignored")]
            assert not refused, f"{service_name}: {refused[:3]}"
        meter.stop()
        return meter
    finally:
        await service.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--services", default=",".join(CONSUMERS))
    args = parser.parse_args()
    services = [name for name in args.services.split(",") if name]
    records = deliveries(args.accounts)
    with tempfile.TemporaryDirectory(prefix="paydesk-bench-billing-") as workdir:
        data_dir = Path(workdir) / "pgdata"
        postgres = EmbeddedPostgres(data_dir, delete_on_stop=True)
        url = postgres.start()
        os.environ["DATABASE_URL"] = url
        os.environ.setdefault("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # never contacted: deliver() needs no broker
        os.environ["PAYDESK_OTEL_EXPORTER"] = "none"
        try:
            print(f"load        {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} (uptime load average)", flush=True)
            for name in services:
                upgrade(name, url)
                meter = asyncio.run(measure(name, records, args.batch, data_dir))
                count, cpu = len(records), meter.cpu + meter.postgres_cpu
                print(
                    f"{name:<14} {count:,} billing events in {meter.wall:6.2f} s: {count / meter.wall:8,.1f} events/s; "
                    f"CPU {1000 * meter.cpu / count:.3f} + {1000 * meter.postgres_cpu / count:.3f} ms/event "
                    f"(consumer + postgres) = {count / max(cpu, 1e-9):8,.0f} events per CPU-second; "
                    f"{meter.statements / count:.3f} statements/event",
                    flush=True,
                )
            print(f"load        {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} (uptime load average)", flush=True)
        finally:
            postgres.stop()


if __name__ == "__main__":
    main()
