"""Credit notes' consumer of payments.events.v1 alone: `payment.posted` events, and the `payment.overpaid` that
follows every `--overpaid-every`th of them (each issuing an automatic credit note), applied per second (a
benchmark, never a test; prints figures).

Starts an embedded Postgres, migrates the credit_notes schema, and hands the envelopes to the service's own
`EventConsumer.deliver` in batches of `--batch` (as Kafka would: one transaction and one inbox claim per batch). No
broker: the figures are the consumer's and Postgres's, not the network's. Besides events per second (which follow
the machine's load) it prints the CPU per event, the consumer's and its Postgres backends', and the SQL statements
per event, which do not. Then it checks one credit note per overpayment, with numbers never reused.

    .venv/bin/python bench/credit_notes_consumer.py [--payments 2000] [--overpaid-every 2] [--batch 200]
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
from services.receipts.samples import sample_payment, usd  # noqa: E402
from shared.contracts import CONTENT_TYPE, new_envelope  # noqa: E402
from shared.contracts.events import PaymentOverpaid  # noqa: E402
from shared.messaging import Delivery  # noqa: E402


def deliveries(payments: int, overpaid_every: int) -> list[Delivery]:
    out = []
    for n in range(payments):
        due = Decimal(100 + n % 900)
        overpaid = overpaid_every > 0 and n % overpaid_every == 0
        paid = due + Decimal("4.50") if overpaid else due
        posted = sample_payment(
            receipt_number=f"R-B-{n:07d}",
            payment_id=f"PAY-B-{n:07d}",
            transaction_id=f"TXN-B-{n:07d}",
            amount=usd(str(paid)),
        )
        posted = posted.model_copy(
            update={
                "item": posted.item.model_copy(update={"item_reference": f"INV-B-{n:07d}", "due": usd(str(due))}),
                "outcome": "over" if overpaid else "exact",
                "difference": usd(str(paid - due)),
            }
        )
        account = posted.consumer.account_number
        events = [new_envelope("payment.posted", source="payments", subject=account, data=posted)]
        if overpaid:
            credit = PaymentOverpaid(
                payment_id=posted.payment_id,
                receipt_number=posted.receipt_number,
                consumer=posted.consumer,
                payment_amount=posted.amount,
                overpaid=usd("4.50"),
                posted_at=posted.posted_at,
            )
            events.append(new_envelope("payment.overpaid", source="payments", subject=account, data=credit))
        out += [Delivery(e.to_bytes(), {"content-type": CONTENT_TYPE}, account.encode()) for e in events]
    return out


async def measure(url: str, data_dir: Path, payments: int, overpaid_every: int, batch: int) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # never contacted: deliver() needs no broker
    os.environ["PAYDESK_OTEL_EXPORTER"] = "none"
    from sqlalchemy import func, select

    from services.credit_notes.app import create_service
    from services.credit_notes.storage import credit_notes

    service = create_service()
    consumer = next(c for c in service.event_consumers if c.topic == "payments.events.v1")
    records = deliveries(payments, overpaid_every)
    meter = ConsumerMeter(service.engine, data_dir)
    meter.start()
    for at in range(0, len(records), batch):
        outcomes = await consumer.deliver(records[at : at + batch])
        assert all(o == "applied" for o in outcomes), outcomes
    meter.stop()
    print(meter.report("payment.posted and payment.overpaid", len(records)), flush=True)
    async with service.sessions() as session:
        notes, numbers = (
            await session.execute(
                select(func.count(), func.count(func.distinct(credit_notes.c.credit_note_number))).select_from(
                    credit_notes
                )
            )
        ).one()
    expected = len(records) - payments
    print(f"notes       {notes:,} credit notes, {numbers:,} distinct numbers, {expected:,} overpayments", flush=True)
    assert notes == numbers == expected
    await service.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payments", type=int, default=2000)
    parser.add_argument("--overpaid-every", type=int, default=2, help="every Nth payment is overpaid (0: none)")
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="paydesk-bench-credit-notes-") as workdir:
        data_dir = Path(workdir) / "pgdata"
        postgres = EmbeddedPostgres(data_dir, delete_on_stop=True)
        url = postgres.start()
        try:
            upgrade("credit_notes", url)
            print(f"load        {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} (uptime load average)", flush=True)
            asyncio.run(measure(url, data_dir, args.payments, args.overpaid_every, args.batch))
            print(f"load        {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} (uptime load average)", flush=True)
        finally:
            postgres.stop()


if __name__ == "__main__":
    main()
