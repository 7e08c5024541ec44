"""CPU per event of the payment-event consumers of kpi, collections, payouts, reconciliation and credit_notes (a
benchmark, never a test; prints figures).

Starts an embedded Postgres, migrates those services' schemas, loads `--accounts` accounts with one bill each
through each service's own billing consumer, then hands each service's `payments.events.v1` consumer
(`EventConsumer.deliver`, in batches of `--batch`, as Kafka would) the traffic payments publishes for
`--payments` counter payments: `payment.posted` for each, plus the events that consumer does not handle
(`payment.overpaid` for every tenth, `approval.requested`, `usage.tracked`-like noise) at `--noise` per payment.
Logging and tracing are set up as a service process does them (`PAYDESK_OTEL_EXPORTER`, default `postgres`, and
`PAYDESK_TRACE_SAMPLE_RATIO`, default 1; JSON log lines to a file), so their share is counted; the
start-up heap is frozen out of the garbage collector's reach as `Service.start` does.

For each consumer it prints the process CPU (this process: the consumer, its spans' export thread, its
logging) and Postgres's CPU (every server process, via psutil) per event, and events per second. No broker:
the figures are the consumers' and Postgres's, not the network's.

    .venv/bin/python bench/consumer_overhead.py [--accounts 500] [--payments 2000] [--batch 200] [--noise 1]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from paydesk.embedded import EmbeddedPostgres  # noqa: E402
from paydesk.migrations import upgrade  # noqa: E402
from paydesk.sample_data import generate_accounts  # noqa: E402
from services.receipts.samples import sample_payment, usd  # noqa: E402
from shared.contracts import CONTENT_TYPE, Envelope, Topic, new_envelope  # noqa: E402
from shared.contracts.events import ConsumerSnapshot, ItemSnapshot, PaymentOverpaid  # noqa: E402
from shared.messaging import Delivery, EventConsumer  # noqa: E402
from shared.service import settle_the_heap  # noqa: E402

SERVICES = ("kpi", "collections", "payouts", "reconciliation", "credit_notes")


def delivery(envelope: Envelope) -> Delivery:
    return Delivery(envelope.to_bytes(), {"content-type": CONTENT_TYPE}, envelope.subject.encode())


def billing(accounts: int) -> tuple[list[Delivery], list[tuple[str, str, str, Decimal, date]]]:
    """Billing's events for `accounts` accounts, and (account, name, invoice, amount, issued) of each bill."""
    records, bills = [], []
    names: dict[str, str] = {}
    for envelope in generate_accounts(accounts):
        records.append(delivery(envelope))
        if envelope.type == "account.upserted":
            names[envelope.subject] = envelope.data["name"]
        elif envelope.type == "bill.issued":
            data = envelope.data
            bills.append(
                (
                    envelope.subject,
                    names[envelope.subject],
                    data["invoice_number"],
                    Decimal(data["amount"]["amount"]),
                    date.fromisoformat(data["issued_on"]),
                )
            )
    return records, bills


def payment_traffic(bills: list[tuple[str, str, str, Decimal, date]], payments: int, noise: int) -> list[Delivery]:
    """What payments publishes on payments.events.v1 for `payments` counter payments, in order."""
    records = []
    today = date.today()
    for n in range(payments):
        account, name, invoice, due, issued = bills[n % len(bills)]
        amount = due if n % 10 else due + Decimal("10.00")
        posted = sample_payment(
            payment_id=f"PAY-B-{n:07d}",
            transaction_id=f"TXN-B-{n:07d}",
            receipt_number=f"R-B-{n:07d}",
            consumer=ConsumerSnapshot(account_number=account, name=name, service_address="1 Main Street"),
            item=ItemSnapshot(
                payment_type="bill",
                item_reference=invoice,
                description="Bill",
                period_or_date=f"{issued:%Y-%m}",
                issued_on=issued,
                due=usd(f"{due}"),
            ),
            amount=usd(f"{amount}"),
            payment_date=today,
            received_by=f"Teller {n % 16}",
            difference=usd(f"{amount - due}"),
            outcome="exact" if n % 10 else "over",
        )
        records.append(delivery(new_envelope("payment.posted", source="payments", subject=account, data=posted)))
        for k in range(noise if n % 10 else noise + 1):
            kind = "payment.overpaid" if k == 0 and not n % 10 else "approval.requested"
            data: Any = (
                PaymentOverpaid(
                    payment_id=posted.payment_id,
                    receipt_number=posted.receipt_number,
                    consumer=posted.consumer,
                    payment_amount=posted.amount,
                    overpaid=usd("10.00"),
                    posted_at=posted.posted_at,
                )
                if kind == "payment.overpaid"
                else {"approval_id": f"AP-{n}-{k}", "note": "x" * 200}
            )
            records.append(delivery(new_envelope(kind, source="payments", subject=account, data=data)))
    return records


def postgres_cpu(root_pid: int) -> float:
    """CPU seconds used so far by the Postgres server and its backends."""
    parent = psutil.Process(root_pid)
    total = 0.0
    for process in [parent, *parent.children(recursive=True)]:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


async def feed(consumer: EventConsumer, records: list[Delivery], batch: int) -> dict[str, int]:
    outcomes: dict[str, int] = {}
    for at in range(0, len(records), batch):
        for outcome in await consumer.deliver(records[at : at + batch]):
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


async def measure(service_name: str, args: argparse.Namespace, postgres_pid: int, log_file: Path) -> None:
    from opentelemetry import trace

    from shared.telemetry import configure_logging, configure_tracing

    configure_logging(service_name, os.environ.get("PAYDESK_LOG_LEVEL", "INFO"))
    # As `Service.start` does (once per process): the spans go where a running service's go.
    configure_tracing(
        service_name,
        os.environ["PAYDESK_OTEL_EXPORTER"],
        os.environ["DATABASE_URL"],
        sample_ratio=float(os.environ.get("PAYDESK_TRACE_SAMPLE_RATIO", "1")),
    )
    root = logging.getLogger()
    root.handlers[0].setStream(log_file.open("a"))  # type: ignore[attr-defined]
    module = __import__(f"services.{service_name}.app", fromlist=["create_service"])
    service = module.create_service()
    settle_the_heap()  # as `Service.start` does once the service is up
    by_topic = {c.topic: c for c in service.event_consumers}
    billing_records, bills = billing(args.accounts)
    if Topic.BILLING_RECEIVABLES in by_topic:  # the accounts and bills the payments pay
        await feed(by_topic[Topic.BILLING_RECEIVABLES], billing_records, args.batch)
    consumer = by_topic[Topic.PAYMENTS_EVENTS]
    records = payment_traffic(bills, args.payments, args.noise)
    provider: Any = trace.get_tracer_provider()
    flush = getattr(provider, "force_flush", lambda: None)
    flush()
    cpu, pg, wall = time.process_time(), postgres_cpu(postgres_pid), time.perf_counter()
    outcomes = await feed(consumer, records, args.batch)
    flush()  # the spans' export is part of the cost
    cpu, pg, wall = time.process_time() - cpu, postgres_cpu(postgres_pid) - pg, time.perf_counter() - wall
    assert outcomes.get("dead_lettered", 0) == 0, outcomes
    n = len(records)
    print(
        f"{service_name:<15} {n:>6,} events {outcomes}: {n / wall:8,.0f} events/s; CPU per event "
        f"{cpu / n * 1e6:7,.0f} us here + {pg / n * 1e6:6,.0f} us Postgres",
        flush=True,
    )
    await service.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=500)
    parser.add_argument("--payments", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--noise", type=int, default=1, help="unhandled events per payment (payments' others)")
    parser.add_argument("--services", default=",".join(SERVICES))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="paydesk-bench-consumers-") as workdir:
        postgres = EmbeddedPostgres(Path(workdir) / "pgdata", delete_on_stop=True)
        url = postgres.start()
        os.environ["DATABASE_URL"] = url
        os.environ.setdefault("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # never contacted: deliver() needs no broker
        os.environ.setdefault("PAYDESK_OTEL_EXPORTER", "postgres")
        try:
            postgres_pid = postgres._server.get_postmaster_info().pid  # type: ignore[attr-defined]
            names = args.services.split(",")
            for name in names:
                upgrade(name, url)
            load = os.getloadavg()
            print(
                f"load {load[0]:.1f} {load[1]:.1f} (uptime); exporter {os.environ['PAYDESK_OTEL_EXPORTER']}, "
                f"trace sample ratio {os.environ.get('PAYDESK_TRACE_SAMPLE_RATIO', '1')}"
            )
            for name in names:
                asyncio.run(measure(name, args, postgres_pid, Path(workdir) / f"{name}.log"))
            load = os.getloadavg()
            print(f"load {load[0]:.1f} {load[1]:.1f} (uptime)")
        finally:
            postgres.stop()


if __name__ == "__main__":
    main()
