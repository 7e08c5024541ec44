"""Payments' consumer of `payments.commands.v1` alone: a lockbox file of `payment.record_requested` commands posted
a batch at a time (a benchmark, never a test; prints figures).

Starts an embedded Postgres, migrates the payments schema, loads `--accounts` accounts with a bill each through
payments' own billing consumer (not measured), then hands `--commands` commands, the ones `bench/e2e.py`'s lockbox
sends, to the service's own `EventConsumer.deliver` in batches of `--batch` (as Kafka would). No broker: the
figures are the consumer's and Postgres's. Besides commands per second (which follow the machine's load) it prints
the CPU per command, the consumer's and its Postgres backends', and the SQL statements per command, which do not;
a batch that fell back to one command at a time shows as a dozen statements per command. Then it checks that every
command was posted once, with distinct receipt numbers.

    .venv/bin/python bench/lockbox_consumer.py [--accounts 1000] [--commands 4000] [--batch 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.consumer_meter import ConsumerMeter  # noqa: E402
from bench.e2e_workload import bills_of, plan, request_body  # noqa: E402
from paydesk.embedded import EmbeddedPostgres  # noqa: E402
from paydesk.migrations import upgrade  # noqa: E402
from paydesk.sample_data import generate_accounts  # noqa: E402
from shared.contracts import CONTENT_TYPE, Topic, new_envelope  # noqa: E402
from shared.contracts.events import PaymentRecordRequested  # noqa: E402
from shared.messaging import Delivery  # noqa: E402


def commands(accounts: int, count: int) -> list[Delivery]:
    today = datetime.now(UTC).date()
    work = plan(bills_of(accounts))
    out = []
    for _ in range(count):
        bill, overpay = next(work)
        data = PaymentRecordRequested.model_validate(request_body(bill, overpay, f"bench-{uuid.uuid4().hex}", today))
        envelope = new_envelope("payment.record_requested", source="bench-lockbox", subject=bill.account, data=data)
        out.append(Delivery(envelope.to_bytes(), {"content-type": CONTENT_TYPE}, bill.account.encode()))
    return out


async def measure(data_dir: Path, accounts: int, count: int, batch: int) -> None:
    from sqlalchemy import func, select

    from services.payments.app import create_service
    from services.payments.storage import payments

    service = create_service()
    billing = next(c for c in service.event_consumers if c.topic == Topic.BILLING_RECEIVABLES)
    lockbox = next(c for c in service.event_consumers if c.topic == Topic.PAYMENTS_COMMANDS)
    reference = [
        Delivery(e.to_bytes(), {"content-type": CONTENT_TYPE}, e.subject.encode()) for e in generate_accounts(accounts)
    ]
    for at in range(0, len(reference), batch):
        await billing.deliver(reference[at : at + batch])
    records = commands(accounts, count)
    meter = ConsumerMeter(service.engine, data_dir)
    meter.start()
    for at in range(0, len(records), batch):
        outcomes = await lockbox.deliver(records[at : at + batch])
        assert all(o == "applied" for o in outcomes), outcomes
    meter.stop()
    print(meter.report("payment.record_requested", len(records)), flush=True)
    async with service.sessions() as session:
        posted, numbers = (
            await session.execute(select(func.count(), func.count(func.distinct(payments.c.receipt_number))))
        ).one()
    print(f"posted      {posted:,} payments, {numbers:,} distinct receipt numbers", flush=True)
    assert posted == numbers == count
    await service.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--commands", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="paydesk-bench-lockbox-") as workdir:
        data_dir = Path(workdir) / "pgdata"
        postgres = EmbeddedPostgres(data_dir, delete_on_stop=True)
        url = postgres.start()
        os.environ["DATABASE_URL"] = url
        os.environ.setdefault("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # never contacted: deliver() needs no broker
        os.environ["PAYDESK_OTEL_EXPORTER"] = "none"
        try:
            upgrade("payments", url)
            print(f"load        {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} (uptime load average)", flush=True)
            asyncio.run(measure(data_dir, args.accounts, args.commands, args.batch))
            print(f"load        {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} (uptime load average)", flush=True)
        finally:
            postgres.stop()


if __name__ == "__main__":
    main()
