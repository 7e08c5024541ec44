"""Measure reconciliation at scale: 100,000 bank lines against 100,000 payments.

Two figures: the matching engine alone (pure, in memory), and the whole service path on PostgreSQL: a
100,000-line statement imported (parsed, validated, stored in one transaction) and reconciled against 100,000
expected payments (matches, settlements and their events written). Starts an embedded PostgreSQL in a temporary
folder (or uses DATABASE_URL). Prints figures; asserts nothing about speed.

    .venv/bin/python bench/reconciliation.py --rows 100000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import func, select

from paydesk.embedded import EmbeddedPostgres
from paydesk.migrations import upgrade
from services.reconciliation import commands, matching
from services.reconciliation.app import create_service
from services.reconciliation.parsing import ColumnMapping, SheetMeta
from services.reconciliation.settings import ReconciliationSettings
from services.reconciliation.storage import bank_lines, expected_items

START = date(2025, 1, 1)
TODAY = date(2025, 6, 1)


def synthetic(rows: int, seed: int = 7) -> tuple[list[matching.ExpectedItem], list[tuple[date, str, Decimal]]]:
    """Payments (half naming an invoice a transfer quotes, half found by amount and date) and their bank lines,
    each 0-2 days after its payment; 1% of lines match nothing."""
    rng = random.Random(seed)
    items, lines = [], []
    for n in range(rows):
        amount = Decimal(rng.randint(100, 900_000)).scaleb(-2)
        day = START + timedelta(days=rng.randint(0, 120))
        reference = f"INV-{n:07d}" if n % 2 else ""
        items.append(matching.ExpectedItem(f"pay:P{n}", amount, "USD", day, 2, reference))
        if n % 100 == 99:
            amount += Decimal("0.37")  # a line no payment explains
        lines.append((day + timedelta(days=rng.randint(0, 2)), reference, amount))
    rng.shuffle(lines)
    return items, lines


def engine_only(rows: int) -> None:
    items, raw = synthetic(rows)
    lines = [matching.BankLine(f"L{n}", a, "USD", d, reference=r) for n, (d, r, a) in enumerate(raw)]
    began = time.perf_counter()
    result = matching.reconcile(lines, items, today=TODAY)
    elapsed = time.perf_counter() - began
    matched = sum(1 for o in result.lines.values() if o is matching.LineOutcome.MATCHED)
    print(
        f"engine: {rows:,} lines x {rows:,} items -> {len(result.matches):,} matches, {matched:,} lines matched "
        f"in {elapsed:.1f} s"
    )


async def whole_path(rows: int, database_url: str) -> None:
    items, raw = synthetic(rows)
    await asyncio.to_thread(upgrade, "reconciliation", database_url)
    service = create_service(ReconciliationSettings(database_url=database_url))
    try:
        async with service.sessions() as session, session.begin():
            await session.execute(
                expected_items.insert(),
                [
                    {
                        "item_id": i.item_id,
                        "kind": "transfer",
                        "channel": "Enterprise",
                        "reference": i.reference,
                        "amount": i.amount,
                        "currency": "USD",
                        "origin_date": i.origin_date,
                        "window_days": i.window_days,
                        "status": "expected",
                        "payment_id": i.item_id.removeprefix("pay:"),
                        "account_number": "BENCH",
                    }
                    for i in items
                ],
            )
        body = "Date,Reference,Amount\n" + "".join(f"{d.isoformat()},{r},{a}\n" for d, r, a in raw)
        total = sum((a for _, _, a in raw), Decimal(0))
        meta = SheetMeta("BENCH-ACCT", "USD", Decimal(0), total, f"bench-{rows}")
        mapping = ColumnMapping(date="Date", reference="Reference", amount="Amount")
        began = time.perf_counter()
        async with service.sessions() as session, session.begin():
            await commands.import_statement_file(
                session, body.encode(), "bench.csv", actor="bench", today=TODAY, mapping=mapping, meta=meta
            )
        imported = time.perf_counter()
        async with service.sessions() as session, session.begin():
            summary = await commands.run_reconciliation(session, service.settings, today=TODAY)  # type: ignore[arg-type]
        reconciled = time.perf_counter()
        async with service.sessions() as session:
            matched = (await session.execute(select(func.count()).where(bank_lines.c.status == "matched"))).scalar_one()
        print(
            f"service: import {rows:,} lines {imported - began:.1f} s, reconcile against {rows:,} payments "
            f"{reconciled - imported:.1f} s ({summary.matched:,} matches, {matched:,} lines matched, "
            f"{summary.excepted_lines:,} excepted); total {reconciled - began:.1f} s"
        )
    finally:
        await service.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--engine-only", action="store_true")
    args = parser.parse_args()
    engine_only(args.rows)
    if args.engine_only:
        return
    url = os.environ.get("DATABASE_URL")
    if url:
        asyncio.run(whole_path(args.rows, url))
        return
    with tempfile.TemporaryDirectory() as folder:
        postgres = EmbeddedPostgres(Path(folder) / "pg", delete_on_stop=True)
        try:
            url = postgres.start()
            asyncio.run(whole_path(args.rows, url))
        finally:
            postgres.stop()


if __name__ == "__main__":
    # The machine is shared: the load average says how far the figures are from a quiet machine's.
    print(f"started {datetime.now(UTC):%Y-%m-%d %H:%M:%S}Z, load average {os.getloadavg()[0]:.1f}")
    main()
    print(f"finished {datetime.now(UTC):%Y-%m-%d %H:%M:%S}Z, load average {os.getloadavg()[0]:.1f}")
