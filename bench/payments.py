"""Benchmark of the payments service: recording through HTTP at a steady rate, and searching a million payments.

Runs on demand, not in the test suite:

    .venv/bin/python scripts/bench_payments.py                       # both parts, defaults below
    .venv/bin/python scripts/bench_payments.py --payments 6000 --rate 200 --skip-search

It starts its own embedded PostgreSQL and Apache Kafka (Tansu with PAYDESK_BROKER=tansu), migrates, and runs
payments as a real process
(`paydesk service payments`) on loopback, so the figures include HTTP, auth, the database and the outbox.
Accounts come in through `billing.receivables.v1` like in production. For the search part the million
payments are bulk-loaded straight into the payments table with COPY (posting a million through HTTP would take
far longer than the measurement); the rows look like real ones and every index is built as in production.
Targets (2 cores): record p99 < 100 ms at 100 requests/s; search p99 < 50 ms at 1M rows.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import httpx

from paydesk.embedded import EmbeddedPostgres, broker_from_environment, free_port
from paydesk.migrations import upgrade
from paydesk.sample_data import generate_accounts
from shared.auth import Role, mint_token
from shared.contracts import CONTENT_TYPE, Topic
from shared.messaging import provision_topics

SECRET = "benchmark-secret-that-is-long-enough-for-hs256"


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def report(title: str, latencies_ms: list[float], elapsed: float | None = None, errors: int = 0) -> None:
    line = (
        f"{title:<34} n={len(latencies_ms):>6}  p50={percentile(latencies_ms, 50):7.2f} ms  "
        f"p99={percentile(latencies_ms, 99):7.2f} ms  max={max(latencies_ms):7.2f} ms"
    )
    if elapsed:
        line += f"  throughput={len(latencies_ms) / elapsed:7.1f}/s"
    if errors:
        line += f"  errors={errors}"
    print(line, flush=True)


async def publish_accounts(bootstrap: str, count: int) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        pending = []
        for envelope in generate_accounts(count, seed=11, today=date(2025, 4, 20)):
            pending.append(
                await producer.send(
                    Topic.BILLING_RECEIVABLES,
                    envelope.to_bytes(),
                    key=envelope.subject.encode(),
                    headers=[("content-type", CONTENT_TYPE.encode())],
                )
            )
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def wait_for_bills(dsn: str, count: int) -> list[tuple[str, str]]:
    connection = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + 300
        while True:
            rows = await connection.fetch(
                "SELECT account_number, item_reference FROM payments.receivables WHERE payment_type = 'bill'"
            )
            if len(rows) >= count or time.monotonic() > deadline:
                return [(r["account_number"], r["item_reference"]) for r in rows]
            await asyncio.sleep(0.5)
    finally:
        await connection.close()


async def bench_record(base: str, bills: list[tuple[str, str]], payments: int, rate: float) -> None:
    token = mint_token(SECRET, user="Bench Clerk", roles=[Role.CUSTOMER_EXECUTIVE])
    latencies: list[float] = []
    errors = 0
    # aiohttp, not httpx: the sender shares the two cores with the system under test and must stay cheap.
    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(base_url=base, connector=connector, timeout=aiohttp.ClientTimeout(30)) as client:

        async def one(n: int) -> None:
            nonlocal errors
            account, invoice = bills[n % len(bills)]
            body = {
                "account_number": account,
                "payment_type": "bill",
                "item_reference": invoice,
                "method": "Cash",
                "amount": "1.00",
                "cash_received": "5.00",
                "payment_date": "2025-04-20",
            }
            headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": f"bench-{uuid.uuid4()}"}
            started = time.perf_counter()
            try:
                async with client.post("/payments", json=body, headers=headers) as response:
                    await response.read()
                    ok = response.status == 201
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            latencies.append((time.perf_counter() - started) * 1000)
            errors += not ok

        await asyncio.gather(*(one(n) for n in range(min(20, payments))))  # warm up connections and plans
        latencies.clear()
        # Open loop: requests start on schedule whatever the latency, as real counters would send them.
        tasks = []
        started = time.perf_counter()
        for n in range(payments):
            delay = started + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(n)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    report(f"record POST /payments @ {rate:g}/s", latencies, elapsed, errors)


_FIRST = ["Ava", "Liam", "Noah", "Emma", "Mia", "Lucas", "Zoe", "Omar", "Priya", "Chen", "Sofia", "Diego", "John"]
_LAST = ["Smith", "Garcia", "Nguyen", "Patel", "Kim", "Okafor", "Rossi", "Muller", "Haddad", "Silva", "Doe"]
METHODS = ["Cash", "Credit Card", "Debit Card", "Cheque", "Bank Transfer"]


async def load_million(dsn: str, rows: int) -> None:
    rng = random.Random(3)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    names = [f"{rng.choice(_FIRST)} {rng.choice(_LAST)}" for _ in range(50_000)]

    def records() -> Any:
        for n in range(rows):
            recorded = start + timedelta(seconds=n * 60)
            amount = Decimal(rng.randint(500, 50_000)).scaleb(-2)
            status = "Cancelled" if n % 500 == 0 else ("Pending" if n % 97 == 0 else "Posted")
            yield (
                f"PAY-B-{n:08d}",
                f"TXN-B-{n:08d}",
                f"RB-{n + 1:07d}",
                f"BA-{n % 200_000:07d}",
                names[n % len(names)],
                rng.choice(["bill", "bill", "bill", "service", "installment"]),
                f"INV-B-{n:08d}",
                "Walk-in",
                rng.choice(METHODS),
                amount,
                "USD",
                recorded.date(),
                status,
                "Verified",
                "Bench Clerk",
                amount,
                amount,
                "exact",
                recorded,
                recorded,
            )

    columns = [
        "payment_id", "transaction_id", "receipt_number", "account_number", "consumer_name", "payment_type",
        "item_reference", "channel", "method", "amount", "currency", "payment_date", "status", "verification",
        "received_by", "due", "applied", "outcome", "recorded_at", "posted_at",
    ]  # fmt: skip
    connection = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        existing = await connection.fetchval("SELECT count(*) FROM payments.payments WHERE payment_id LIKE 'PAY-B-%'")
        if existing < rows:
            batch: list[tuple[Any, ...]] = []
            for record in records():
                batch.append(record)
                if len(batch) == 50_000:
                    await connection.copy_records_to_table(
                        "payments", schema_name="payments", columns=columns, records=batch
                    )
                    batch.clear()
            if batch:
                await connection.copy_records_to_table(
                    "payments", schema_name="payments", columns=columns, records=batch
                )
            await connection.execute("ANALYZE payments.payments")
        total = await connection.fetchval("SELECT count(*) FROM payments.payments")
        print(f"loaded {rows:,} payments with COPY in {time.perf_counter() - started:.1f} s (table has {total:,})")
    finally:
        await connection.close()


async def bench_search(base: str, searches: int) -> None:
    token = mint_token(SECRET, user="Bench Manager", roles=[Role.BILLING_MANAGER])
    headers = {"Authorization": f"Bearer {token}"}
    rng = random.Random(5)
    kinds: dict[str, Any] = {
        "newest page": lambda: {},
        "name fragment (common)": lambda: {"q": rng.choice(["john", "SMITH", "priya pa", "ava"])},
        "name fragment (rare)": lambda: {"q": rng.choice(["zoe mul", "diego had", "omar oka"])},
        "receipt number": lambda: {"q": f"RB-{rng.randint(1, 999_999):07d}"},
        "account number": lambda: {"q": f"BA-{rng.randint(0, 199_999):07d}"},
        "method + date range": lambda: {
            "method": rng.choice(METHODS),
            "date_from": "2024-06-01",
            "date_to": "2024-09-30",
        },
        "status Cancelled": lambda: {"status": "Cancelled"},
        "type service, by amount": lambda: {"type": "service", "sort": "-amount"},
    }
    async with httpx.AsyncClient(base_url=base, timeout=30, headers=headers) as client:
        everything: list[float] = []
        for title, params in kinds.items():
            latencies = []
            for _ in range(max(1, searches // len(kinds))):
                query = params()
                started = time.perf_counter()
                response = await client.get("/payments", params=query)
                page = response.json()
                if page.get("next_cursor"):  # the next page too: keyset paging must stay as fast
                    await client.get("/payments", params=query | {"cursor": page["next_cursor"]})
                latencies.append((time.perf_counter() - started) * 1000 / (2 if page.get("next_cursor") else 1))
                assert response.status_code == 200, response.text
            report(f"search: {title}", latencies)
            everything += latencies
        report("search: all kinds", everything)


def resident_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def bench_export(base: str, pid: int, export_format: str) -> None:
    """The whole million through the streamed export, watching the server's resident memory."""
    token = mint_token(SECRET, user="Bench Manager", roles=[Role.BILLING_MANAGER])
    before = peak = resident_mib(pid)
    size = 0
    started = time.perf_counter()
    async with (
        httpx.AsyncClient(base_url=base, timeout=600) as client,
        client.stream(
            "GET", "/payments/export", params={"format": export_format}, headers={"Authorization": f"Bearer {token}"}
        ) as response,
    ):
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            peak = max(peak, resident_mib(pid))
    elapsed = time.perf_counter() - started
    print(
        f"export {export_format:<4} {size / 2**20:8.1f} MiB in {elapsed:6.1f} s; "
        f"server memory {before:.0f} MiB before, {peak:.0f} MiB at peak",
        flush=True,
    )


def start_service(workdir: Path, dsn_url: str, bootstrap: str, port: int) -> subprocess.Popen[bytes]:
    env = os.environ | {
        "DATABASE_URL": dsn_url,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "PAYDESK_JWT_SECRET": SECRET,
        "PAYDESK_LOG_LEVEL": "WARNING",
        "PAYDESK_OTEL_EXPORTER": "none",
        "DATABASE_POOL_SIZE": "40",
        "PAYMENTS_HTTP_PORT": str(port),
    }
    log = open(workdir / "payments.log", "wb")  # noqa: SIM115 - held open for the process lifetime
    process = subprocess.Popen(
        [sys.executable, "-m", "paydesk.cli", "service", "payments"], env=env, stdout=log, stderr=log
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"payments did not start; see {workdir / 'payments.log'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--payments", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--search-rows", type=int, default=1_000_000)
    parser.add_argument("--searches", type=int, default=400)
    parser.add_argument("--skip-record", action="store_true")
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--export", action="store_true", help="also export the million as CSV and XLSX")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="paydesk-bench-"))
    postgres = EmbeddedPostgres(workdir / "pgdata", delete_on_stop=True)
    kafka = broker_from_environment(workdir)
    url = postgres.start()
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    bootstrap = kafka.start()
    process = None
    try:
        asyncio.run(provision_topics(bootstrap, partitions=3))
        upgrade("payments", url)
        port = free_port()
        process = start_service(workdir, url, bootstrap, port)
        base = f"http://127.0.0.1:{port}"
        print(f"payments at {base}; cores: {os.cpu_count()}", flush=True)
        if not args.skip_record:
            asyncio.run(publish_accounts(bootstrap, args.accounts))
            bills = asyncio.run(wait_for_bills(dsn, args.accounts))
            print(f"{len(bills)} bills from billing events", flush=True)
            asyncio.run(bench_record(base, bills, args.payments, args.rate))
        if not args.skip_search:
            asyncio.run(load_million(dsn, args.search_rows))
            asyncio.run(bench_search(base, args.searches))
            if args.export:
                for export_format in ("csv", "xlsx"):
                    asyncio.run(bench_export(base, process.pid, export_format))
    finally:
        if process is not None:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
        kafka.stop()
        postgres.stop()


if __name__ == "__main__":
    main()
