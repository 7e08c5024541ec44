"""Payouts' and reconciliation's consumers of `payments.events.v1` alone: what each costs per payment event (a
benchmark, never a test; prints figures).

Neither is on the path from a payment to its receipt, credit note or KPI, yet both apply every `payment.posted`:
payouts keeps each payment (the volume a commission is worked out on) and accrues an agent's commission;
reconciliation keeps each payment and expects its money at the bank. This starts an embedded Postgres, migrates
the two schemas, and hands each service's own `EventConsumer.deliver` the traffic of `--payments` payments in
batches of `--batch` (as Kafka would: one transaction and one inbox claim per batch): a `payment.posted` each over
the counter, lockbox and online channels, and a `payment.overpaid` (which neither handles) for every tenth. No
broker: the figures are the consumer's and Postgres's. Besides events per second (which follow the machine's
load) it prints CPU per event (the consumer's and its Postgres backends') and SQL statements per event, which do
not. Then it checks the rows each left: a payment row per payment, an expected bank item per non-online payment,
and with `--agents` a commission line per payment the agent collected.

`--agents` first makes an agent payee for the Walk-in channel with a 1% commission rule, so a quarter of the
payments earn a commission (each worked out on the agent's month to date, one at a time).

    .venv/bin/python bench/side_consumers.py [--payments 4000] [--batch 200] [--agents] [--services payouts]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
import tempfile
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.consumer_meter import ConsumerMeter  # noqa: E402
from paydesk.embedded import EmbeddedPostgres  # noqa: E402
from paydesk.migrations import upgrade  # noqa: E402
from services.receipts.samples import sample_payment, usd  # noqa: E402
from shared.contracts import CONTENT_TYPE, Envelope, Topic, new_envelope  # noqa: E402
from shared.contracts.events import PaymentOverpaid  # noqa: E402
from shared.messaging import Delivery  # noqa: E402

SERVICES = ("payouts", "reconciliation")
CHANNELS = (("Walk-in", "Cash"), ("Walk-in", "Check"), ("Lockbox", "Check"), ("Online", "Card"))


def delivery(envelope: Envelope) -> Delivery:
    return Delivery(envelope.to_bytes(), {"content-type": CONTENT_TYPE}, envelope.subject.encode())


def traffic(payments: int) -> tuple[list[Delivery], int, int, int]:
    """The records, how many of them are `payment.posted`, how many of those not online, how many at the counter."""
    records: list[Delivery] = []
    offline = counter = 0
    for n in range(payments):
        channel, method = CHANNELS[n % len(CHANNELS)]
        offline += channel != "Online"
        counter += channel == "Walk-in"
        account = f"WU-{40000 + n % 500}"
        amount = Decimal(100 + n % 900) + Decimal("0.25")
        posted = sample_payment(
            receipt_number=f"R-S-{n:07d}",
            payment_id=f"PAY-S-{n:07d}",
            transaction_id=f"TXN-S-{n:07d}",
            amount=usd(str(amount)),
            channel=channel,
            method=method,
            received_by="Jane Smith",
            payment_date=date(2026, 11, 20) + timedelta(days=n % 5),
            cash_received=usd(str(amount)) if method == "Cash" else None,
            change_given=usd("0.00") if method == "Cash" else None,
        )
        records.append(delivery(new_envelope("payment.posted", source="payments", subject=account, data=posted)))
        if n % 10 == 0:
            overpaid = PaymentOverpaid(
                payment_id=posted.payment_id,
                receipt_number=posted.receipt_number,
                consumer=posted.consumer,
                payment_amount=posted.amount,
                overpaid=usd("1.00"),
                posted_at=posted.posted_at,
            )
            overpaid_envelope = new_envelope("payment.overpaid", source="payments", subject=account, data=overpaid)
            records.append(delivery(overpaid_envelope))
    return records, payments, offline, counter


async def add_agent(service: Any) -> None:
    """An agent paid 1% of what it collects at the Walk-in counters."""
    from services.payouts import commands
    from services.payouts.domain import CommissionRule, RuleKind
    from services.payouts.payees import PayeeDraft, create_payee

    draft = PayeeDraft(
        name="Counter agent",
        payee_type="agent",
        country="US",
        payout_currency="USD",
        method="stripe",
        stripe_account="acct_1Bench",
        agent_channel="Walk-in",
    )
    async with service.sessions() as session, session.begin():
        payee_id = await create_payee(session, draft, actor="bench", idempotency_key="bench-agent")
        rule = CommissionRule(
            rule_id="",
            kind=RuleKind.PERCENTAGE,
            currency="USD",
            effective_from=date(2026, 1, 1),
            percent=Decimal("1"),
            payee_id=payee_id,
        )
        await commands.add_rule(session, rule, actor="bench")


async def counts(service: Any, name: str) -> dict[str, int]:
    from sqlalchemy import func, select

    storage = importlib.import_module(f"services.{name}.storage")
    tables: dict[str, Any] = {"payments": storage.payments}
    if name == "payouts":
        tables["commission lines"] = storage.lines
    else:
        tables["expected items"] = storage.expected_items
    found = {}
    async with service.sessions() as session:
        for label, table in tables.items():
            found[label] = (await session.execute(select(func.count()).select_from(table))).scalar_one()
    return found


async def measure(name: str, data_dir: Path, payments: int, batch: int, agents: bool) -> None:
    service = importlib.import_module(f"services.{name}.app").create_service()
    if agents and name == "payouts":
        await add_agent(service)
    consumer = next(c for c in service.event_consumers if c.topic == Topic.PAYMENTS_EVENTS)
    records, posted, offline, counter = traffic(payments)
    meter = ConsumerMeter(service.engine, data_dir)
    meter.start()
    for at in range(0, len(records), batch):
        outcomes = await consumer.deliver(records[at : at + batch])
        refused = [o for o in outcomes if o not in ("applied", "ignored")]
        assert not refused, f"{name}: {refused[:3]}"
    meter.stop()
    print(f"--- {name}", flush=True)
    print(meter.report(f"payment events ({posted:,} payment.posted)", len(records)), flush=True)
    found = await counts(service, name)
    expected = {"payments": posted}
    if name == "payouts":
        expected["commission lines"] = counter if agents else 0
    else:
        expected["expected items"] = offline
    print(f"rows        {found} (expected {expected}): {'OK' if found == expected else 'OFF'}", flush=True)
    assert found == expected
    await service.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payments", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--agents", action="store_true", help="an agent with a commission rule on Walk-in first")
    parser.add_argument("--services", default=",".join(SERVICES))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="paydesk-bench-side-") as workdir:
        data_dir = Path(workdir) / "pgdata"
        postgres = EmbeddedPostgres(data_dir, delete_on_stop=True)
        url = postgres.start()
        os.environ["DATABASE_URL"] = url
        os.environ.setdefault("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # never contacted: deliver() needs no broker
        os.environ["PAYDESK_OTEL_EXPORTER"] = "none"
        try:
            print(f"load        {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} (uptime load average)", flush=True)
            print(f"started     {datetime.now(UTC):%H:%M:%S} UTC", flush=True)
            for name in [n for n in args.services.split(",") if n]:
                upgrade(name, url)
                asyncio.run(measure(name, data_dir, args.payments, args.batch, args.agents))
            print(f"load        {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} (uptime load average)", flush=True)
        finally:
            postgres.stop()


if __name__ == "__main__":
    main()
