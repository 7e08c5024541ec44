"""Measure the credit-notes search at scale: how long one page takes with millions of rows, and which plan runs.

Starts an embedded PostgreSQL in a temporary folder (or uses DATABASE_URL), migrates the credit_notes schema,
bulk-loads `--rows` synthetic credit notes, then times the queries the credit-notes tab sends. Prints figures;
asserts nothing about speed (speed targets are measured, never asserted in tests).

    .venv/bin/python scripts/bench_credit_notes_search.py --rows 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from paydesk.embedded import EmbeddedPostgres
from paydesk.migrations import upgrade
from services.credit_notes import domain, queries
from services.credit_notes.storage import credit_notes
from shared.db import create_engine, session_factory

LOAD = """
INSERT INTO credit_notes.credit_notes (credit_note_number, seq, account_number, consumer_name, receipt_number,
    payment_id, amount, applied, remaining, currency, reason, created_by, automatic, status, created_at, expires_at)
SELECT 'BN-' || g, 1000000000 + g, 'WU-' || lpad((g % 400000)::text, 6, '0'),
    (ARRAY['John','Mary','Ahmed','Li','Olga','Carlos','Aisha','Kenji'])[1 + g % 8] || ' ' ||
    (ARRAY['Doe','Smith','Khan','Wang','Ivanova','Garcia','Bello','Sato','Brown','Silva'])[1 + (g / 8) % 10] ||
    ' ' || g,
    'BR-' || g, 'BPAY-' || g, 10 + (g % 500), CASE WHEN g % 3 = 0 THEN 10 + (g % 500) ELSE 0 END,
    CASE WHEN g % 3 = 0 THEN 0 ELSE 10 + (g % 500) END, 'USD',
    (ARRAY['Overpayment','Duplicate Payment','Billing Error','Other'])[1 + g % 4], 'Bench', g % 2 = 0,
    CASE WHEN g % 3 = 0 THEN 'Applied' ELSE 'Active' END,
    now() - make_interval(mins => (:rows - g)), now() + interval '1 year'
FROM generate_series(1, :rows) AS g
"""

QUERIES: dict[str, queries.CreditNoteFilters] = {
    "first page, no filter": queries.CreditNoteFilters(),
    "search consumer name (rare: 'ivanova 77')": queries.CreditNoteFilters(text="ivanova 77"),
    "search consumer name (common: 'john')": queries.CreditNoteFilters(text="john"),
    "search credit-note number ('bn-4242')": queries.CreditNoteFilters(text="bn-4242"),
    "search account ('wu-01234')": queries.CreditNoteFilters(text="wu-01234"),
    "search receipt ('br-99999')": queries.CreditNoteFilters(text="br-99999"),
    "status Active + reason Overpayment": queries.CreditNoteFilters(
        status=domain.Status.ACTIVE, reasons=("Overpayment",)
    ),
    "amount 100-120, remaining full": queries.CreditNoteFilters(
        amount_min=Decimal("100"), amount_max=Decimal("120"), remaining=domain.RemainingFilter.FULL
    ),
    "created in the last day": queries.CreditNoteFilters(created_from=datetime.now(UTC) - timedelta(days=1)),
}


PLAN_STEP = re.compile(r"(Parallel )?(Seq Scan on \S+|Index Scan(?: Backward)? using \S+|Bitmap Index Scan on \S+)")


async def timed(session: AsyncSession, filters: queries.CreditNoteFilters, repeats: int) -> tuple[float, int]:
    samples = []
    count = 0
    for _ in range(repeats):
        started = time.perf_counter()
        page, _ = await queries.search_credit_notes(session, filters, limit=50)
        samples.append((time.perf_counter() - started) * 1000)
        count = len(page)
    return statistics.median(samples), count


async def plan_of(session: AsyncSession, filters: queries.CreditNoteFilters) -> str:
    statement = (
        select(credit_notes)
        .where(*queries.search_conditions(filters))
        .order_by(credit_notes.c.seq.desc())
        .limit(51)
        .compile(session.bind, compile_kwargs={"literal_binds": True})
    )
    lines = [r[0] for r in (await session.execute(text(f"EXPLAIN {statement}"))).all()]
    steps = [m.group(0) for line in lines for m in PLAN_STEP.finditer(line)]
    return "; ".join(steps) or lines[0]


async def bench(database_url: str, rows: int, repeats: int) -> None:
    engine = create_engine(database_url, pool_size=2)
    sessions = session_factory(engine)
    async with sessions() as session, session.begin():
        loaded = (
            await session.execute(text("SELECT count(*) FROM credit_notes.credit_notes WHERE created_by = 'Bench'"))
        ).scalar_one()
    if loaded < rows:
        started = time.perf_counter()
        async with sessions() as session, session.begin():
            await session.execute(text("DELETE FROM credit_notes.credit_notes WHERE created_by = 'Bench'"))
            await session.execute(text(LOAD), {"rows": rows})
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("VACUUM ANALYZE credit_notes.credit_notes"))
        print(f"loaded {rows:,} credit notes (with all indexes) in {time.perf_counter() - started:.1f}s")
    print(f"\nsearch at {rows:,} rows, one page of 50, median of {repeats} runs:")
    async with sessions() as session:
        for name, filters in QUERIES.items():
            median, count = await timed(session, filters, repeats)
            print(f"  {median:8.1f} ms  {count:3d} rows  {name}\n              plan: {await plan_of(session, filters)}")
        _, cursor = await queries.search_credit_notes(session, queries.CreditNoteFilters(), limit=50)
        deep = 0
        started = time.perf_counter()
        while cursor is not None and deep < 200:
            _, cursor = await queries.search_credit_notes(session, queries.CreditNoteFilters(), cursor=cursor)
            deep += 1
        per_page = (time.perf_counter() - started) * 1000 / max(deep, 1)
        print(f"  {per_page:8.1f} ms  per page, keyset paging {deep} pages deep")
    await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL")
    postgres = None
    if not url:
        postgres = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="paydesk-bench-")) / "pgdata", delete_on_stop=True)
        url = postgres.start()
    try:
        upgrade("credit_notes", url)
        asyncio.run(bench(url, args.rows, args.repeats))
    finally:
        if postgres is not None:
            postgres.stop()


if __name__ == "__main__":
    main()
