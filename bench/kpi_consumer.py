"""KPI's consumers alone: `payment.posted` events (what a lockbox file or the counters make) and billing's
accounts and bills, applied per second (a benchmark, never a test; prints figures).

Starts an embedded Postgres, migrates the kpi schema, and hands the envelopes to the service's own
`EventConsumer.deliver` in batches of `--batch` (as Kafka would: one transaction and one inbox claim per batch). No
broker: the figures are the consumer's and Postgres's, not the network's. Besides events per second (which follow
the machine's load) it prints the CPU per event, the consumer's and its Postgres backends', and the SQL statements
per event, which do not. Then it checks that the KPI totals equal the sum of the payments posted, exactly.

With `--alert-rules`, a billing manager's collection-rate and pending-verification thresholds are set first, so
every event's effect on them is checked (as in a utility that uses alerts).

    .venv/bin/python bench/kpi_consumer.py [--payments 4000] [--accounts 2000] [--batch 200] [--alert-rules]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.consumer_meter import ConsumerMeter  # noqa: E402
from paydesk.embedded import EmbeddedPostgres  # noqa: E402
from paydesk.migrations import upgrade  # noqa: E402
from paydesk.sample_data import generate_accounts  # noqa: E402
from services.receipts.samples import sample_payment, usd  # noqa: E402
from shared.contracts import CONTENT_TYPE, Topic, new_envelope  # noqa: E402
from shared.messaging import Delivery  # noqa: E402

CHANNELS = (("Walk-in", "Cash"), ("Walk-in", "Check"), ("Online", "Card"), ("Lockbox", "Check"))


def posted_deliveries(payments: int) -> tuple[list[Delivery], Decimal]:
    """Payments over a few days, channels and methods; every tenth posted Pending verification."""
    out, total = [], Decimal("0.00")
    for n in range(payments):
        channel, method = CHANNELS[n % len(CHANNELS)]
        amount = Decimal(100 + n % 900) + Decimal("0.25")
        total += amount
        posted = sample_payment(
            receipt_number=f"R-K-{n:07d}",
            payment_id=f"PAY-K-{n:07d}",
            transaction_id=f"TXN-K-{n:07d}",
            amount=usd(str(amount)),
            channel=channel,
            method=method,
            payment_date=date(2026, 11, 20) + timedelta(days=n % 5),
            verification="Pending" if n % 10 == 0 else "Verified",
        )
        account = f"WU-{30000 + n % 500}"
        envelope = new_envelope("payment.posted", source="payments", subject=account, data=posted)
        out.append(Delivery(envelope.to_bytes(), {"content-type": CONTENT_TYPE}, account.encode()))
    return out, total


def billing_deliveries(accounts: int) -> list[Delivery]:
    return [
        Delivery(envelope.to_bytes(), {"content-type": CONTENT_TYPE}, envelope.subject.encode())
        for envelope in generate_accounts(accounts)
    ]


async def deliver_all(consumer: object, records: list[Delivery], batch: int) -> None:
    for at in range(0, len(records), batch):
        outcomes = await consumer.deliver(records[at : at + batch])  # type: ignore[attr-defined]
        refused = [o for o in outcomes if o not in ("applied", "ignored")]
        assert not refused, refused[:3]


async def measure(url: str, data_dir: Path, payments: int, accounts: int, batch: int, alert_rules: bool) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # never contacted: deliver() needs no broker
    os.environ["PAYDESK_OTEL_EXPORTER"] = "none"
    from sqlalchemy import func, select

    from services.kpi.app import create_service
    from services.kpi.storage import alert_rules as rules
    from services.kpi.storage import daily_collections, daily_receipts

    service = create_service()
    if alert_rules:
        async with service.sessions() as session, session.begin():
            await session.execute(
                rules.insert().values(created_by="bench"),
                [
                    {"alert_id": "AL-RATE", "metric": "collection_rate", "comparison": "below", "threshold": 90},
                    {
                        "alert_id": "AL-PENDING",
                        "metric": "pending_verifications",
                        "comparison": "above",
                        "threshold": 50,
                    },
                ],
            )
    by_topic = {c.topic: c for c in service.event_consumers}
    meter = ConsumerMeter(service.engine, data_dir)

    if accounts:
        records = billing_deliveries(accounts)
        meter.start()
        await deliver_all(by_topic[Topic.BILLING_RECEIVABLES], records, batch)
        meter.stop()
        print(meter.report("billing events (accounts and bills)", len(records)), flush=True)

    if payments:
        records, total = posted_deliveries(payments)
        meter.start()
        await deliver_all(by_topic[Topic.PAYMENTS_EVENTS], records, batch)
        meter.stop()
        print(meter.report("payment.posted", len(records)), flush=True)
        async with service.sessions() as session:
            collected = (
                await session.execute(
                    select(func.sum(daily_collections.c.payments), func.sum(daily_collections.c.collected))
                )
            ).one()
            received = (
                await session.execute(select(func.sum(daily_receipts.c.payments), func.sum(daily_receipts.c.received)))
            ).one()
        exact = tuple(collected) == tuple(received) == (payments, total)
        print(
            f"totals      collected {collected[0]:,} payments {collected[1]:,}; received {received[0]:,} "
            f"payments {received[1]:,}; posted {payments:,} payments {total:,}: {'EXACT' if exact else 'OFF'}",
            flush=True,
        )
        assert exact
    await service.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payments", type=int, default=4000)
    parser.add_argument("--accounts", type=int, default=2000, help="accounts, each an account.upserted and a bill")
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--alert-rules", action="store_true", help="set collection-rate and pending thresholds first")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="paydesk-bench-kpi-") as workdir:
        data_dir = Path(workdir) / "pgdata"
        postgres = EmbeddedPostgres(data_dir, delete_on_stop=True)
        url = postgres.start()
        try:
            upgrade("kpi", url)
            print(f"load        {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} (uptime load average)", flush=True)
            asyncio.run(measure(url, data_dir, args.payments, args.accounts, args.batch, args.alert_rules))
            print(f"load        {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} (uptime load average)", flush=True)
        finally:
            postgres.stop()


if __name__ == "__main__":
    main()
