"""Receipts' two consumers applying batches side by side over the same receipts: deadlocks, batches retried and
batches sent one by one (a benchmark, never a test; prints figures).

Starts an embedded Postgres, migrates the receipts schema, and for each of `--rounds` rounds hands the payments
consumer a batch of `--batch` `payment.posted` events (receipts in ascending order) while the credit notes consumer
gets a batch of `credit_note.issued` events on the same receipts in descending order, both at once in one event loop
(as in the service). No broker. The deadlock count is Postgres's own (`pg_stat_database.deadlocks`); how often the
two transactions overlap follows the machine's load, so compare runs back to back.

    .venv/bin/python bench/receipts_lock_order.py [--rounds 200] [--batch 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prometheus_client import REGISTRY  # noqa: E402
from sqlalchemy import text  # noqa: E402

from paydesk.embedded import EmbeddedPostgres  # noqa: E402
from paydesk.migrations import upgrade  # noqa: E402
from services.receipts.samples import sample_credit_note, sample_payment, usd  # noqa: E402
from shared.contracts import CONTENT_TYPE, Envelope, new_envelope  # noqa: E402
from shared.messaging import Delivery  # noqa: E402


def delivery(envelope: Envelope) -> Delivery:
    return Delivery(envelope.to_bytes(), {"content-type": CONTENT_TYPE}, envelope.subject.encode())


def round_of(n: int, batch: int) -> tuple[list[Delivery], list[Delivery]]:
    """A payments batch in receipt order, and the credit notes on the same receipts in the opposite order."""
    posted, issued = [], []
    for k in range(batch):
        number = f"R-L-{n:05d}-{k:03d}"
        payment = sample_payment(receipt_number=number, payment_id=f"PAY-{number}", transaction_id=f"TXN-{number}")
        account = payment.consumer.account_number
        posted.append(delivery(new_envelope("payment.posted", source="payments", subject=account, data=payment)))
        note = sample_credit_note(
            credit_note_number=f"CN-{number}", receipt_number=number, payment_id=payment.payment_id, amount=usd("4.50")
        )
        issued.append(delivery(new_envelope("credit_note.issued", source="credit_notes", subject=account, data=note)))
    return posted, list(reversed(issued))


def counter(name: str, consumer: str) -> float:
    return REGISTRY.get_sample_value(name, {"service": "receipts", "consumer": consumer}) or 0.0


async def measure(url: str, rounds: int, batch: int) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # never contacted: deliver() needs no broker
    os.environ["PAYDESK_OTEL_EXPORTER"] = "none"
    from services.receipts.app import create_service

    service = create_service()
    payments = next(c for c in service.event_consumers if c.topic == "payments.events.v1")
    credit_notes = next(c for c in service.event_consumers if c.topic == "creditnotes.events.v1")
    deadlocks = text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
    async with service.engine.connect() as conn:
        before = (await conn.execute(deadlocks)).scalar_one()
    started = time.perf_counter()
    for n in range(rounds):
        posted, issued = round_of(n, batch)
        outcomes = await asyncio.gather(payments.deliver(posted), credit_notes.deliver(issued))
        assert all(o == "applied" for run in outcomes for o in run), outcomes
    took = time.perf_counter() - started
    async with service.engine.connect() as conn:
        after = (await conn.execute(deadlocks)).scalar_one()
    print(f"rounds      {rounds:,} of {batch} payments + {batch} credit notes in {took:.1f} s", flush=True)
    print(f"deadlocks   {after - before:,} (pg_stat_database)", flush=True)
    for name in ("payments", "credit_notes"):
        retried = counter("paydesk_batches_retried_total", name)
        alone = counter("paydesk_batches_one_by_one_total", name)
        print(f"{name:<13}batches retried together {retried:,.0f}, applied one by one {alone:,.0f}", flush=True)
    await service.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--batch", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="paydesk-bench-receipts-locks-") as workdir:
        postgres = EmbeddedPostgres(Path(workdir) / "pgdata", delete_on_stop=True)
        url = postgres.start()
        try:
            upgrade("receipts", url)
            print(f"load        {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} (uptime load average)", flush=True)
            asyncio.run(measure(url, args.rounds, args.batch))
            print(f"load        {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} (uptime load average)", flush=True)
        finally:
            postgres.stop()


if __name__ == "__main__":
    main()
