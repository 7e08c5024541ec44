"""Collections' consumers alone: billing events, then `payment.posted` paying those bills, applied per second
(a benchmark, never a test; prints figures).

Starts an embedded Postgres, migrates the collections schema, hands `--accounts` generated accounts and their bills
(`paydesk.sample_data.generate_accounts`) to the service's own consumer of `billing.receivables.v1`, then one
`payment.posted` per bill (a third of them partial, so the account stays overdue) to its consumer of
`payments.events.v1`, each through `EventConsumer.deliver` in batches of `--batch`, as Kafka would hand them. No
broker. Besides events per second (which follow the machine's load) it prints the CPU per event, the consumer's and
its Postgres backends', and the SQL statements per event, which do not.

    .venv/bin/python bench/collections_consumer.py [--accounts 2000] [--batch 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.consumer_meter import ConsumerMeter  # noqa: E402
from paydesk.embedded import EmbeddedPostgres  # noqa: E402
from paydesk.migrations import upgrade  # noqa: E402
from paydesk.sample_data import generate_accounts  # noqa: E402
from services.receipts.samples import sample_payment  # noqa: E402
from shared.contracts import CONTENT_TYPE, Envelope, Topic, new_envelope  # noqa: E402
from shared.contracts.events import BillIssued, ConsumerSnapshot, ItemSnapshot, Money, PaymentType  # noqa: E402
from shared.messaging import Delivery, EventConsumer  # noqa: E402


def delivery(envelope: Envelope) -> Delivery:
    return Delivery(envelope.to_bytes(), {"content-type": CONTENT_TYPE}, envelope.subject.encode())


def payments_of(billing: list[Envelope]) -> list[Envelope]:
    """One counter payment per bill: in full, or a third of the time half of it."""
    out = []
    for n, envelope in enumerate(e for e in billing if e.type == "bill.issued"):
        bill = BillIssued.model_validate(envelope.data)
        amount = bill.amount.amount if n % 3 else (bill.amount.amount / 2).quantize(Decimal("0.01"))
        posted = sample_payment(
            receipt_number=f"R-C-{n:07d}",
            payment_id=f"PAY-C-{n:07d}",
            transaction_id=f"TXN-C-{n:07d}",
            consumer=ConsumerSnapshot(
                account_number=bill.account_number, name="Bench Payer", service_address="1 Main St"
            ),
            item=ItemSnapshot(
                payment_type=PaymentType.BILL,
                item_reference=bill.invoice_number,
                description=f"Bill {bill.billing_period}",
                period_or_date=bill.billing_period,
                issued_on=bill.issued_on,
                due=bill.amount,
            ),
            amount=Money(amount=amount, currency="USD"),
        )
        out.append(new_envelope("payment.posted", source="payments", subject=bill.account_number, data=posted))
    return out


async def feed(consumer: EventConsumer, envelopes: list[Envelope], batch: int) -> None:
    records = [delivery(e) for e in envelopes]
    for at in range(0, len(records), batch):
        outcomes = await consumer.deliver(records[at : at + batch])
        assert all(o in ("applied", "ignored") for o in outcomes), outcomes


async def measure(url: str, data_dir: Path, accounts: int, batch: int) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # never contacted: deliver() needs no broker
    os.environ["PAYDESK_OTEL_EXPORTER"] = "none"
    from services.collections.app import create_service

    service = create_service()
    consumers = {c.topic: c for c in service.event_consumers}
    billing = list(generate_accounts(accounts))
    paying = payments_of(billing)
    meter = ConsumerMeter(service.engine, data_dir)
    for what, topic, envelopes in (
        ("billing events", Topic.BILLING_RECEIVABLES, billing),
        ("payment.posted", Topic.PAYMENTS_EVENTS, paying),
    ):
        meter.start()
        await feed(consumers[topic], envelopes, batch)
        meter.stop()
        print(meter.report(what, len(envelopes)), flush=True)
    await service.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="paydesk-bench-collections-") as workdir:
        data_dir = Path(workdir) / "pgdata"
        postgres = EmbeddedPostgres(data_dir, delete_on_stop=True)
        url = postgres.start()
        try:
            upgrade("collections", url)
            print(f"load        {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} (uptime load average)", flush=True)
            asyncio.run(measure(url, data_dir, args.accounts, args.batch))
            print(f"load        {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} (uptime load average)", flush=True)
        finally:
            postgres.stop()


if __name__ == "__main__":
    main()
