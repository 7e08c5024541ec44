"""Benchmark of the kpi service: event-to-KPI lag under sustained load, and `GET /kpi/summary` at 10M payments.

Starts its own embedded PostgreSQL and Apache Kafka (Tansu with PAYDESK_BROKER=tansu), or uses DATABASE_URL /
KAFKA_BOOTSTRAP_SERVERS, runs the kpi service as a separate process, and prints:

1. Lag: `payment.posted` events are published at a steady rate (default 500/s for 20 s); a watcher polls the
   kpi schema is told of each inbox row as the consumer's transaction commits it, together with the
   aggregates (a LISTEN/NOTIFY trigger added for the benchmark only): lag = that moment - publish time.
2. Summary: aggregate rows equivalent to N payments (default 10,000,000 over two years, every channel, method
   and type) are inserted directly into the kpi schema in bulk (going through Kafka would take hours here),
   plus N rows in the per-payment read model, then `GET /kpi/summary` is timed over HTTP.

    .venv/bin/python scripts/bench_kpi.py [--rate 500] [--seconds 20] [--payments 10000000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx
from aiokafka import AIOKafkaProducer
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from paydesk.embedded import EmbeddedPostgres, broker_from_environment, free_port  # noqa: E402
from paydesk.migrations import upgrade  # noqa: E402
from shared.auth import Role, mint_token  # noqa: E402
from shared.contracts import CONTENT_TYPE, Topic, new_envelope  # noqa: E402
from shared.contracts.events import ConsumerSnapshot, ItemSnapshot, Money, PaymentPosted, PaymentType  # noqa: E402
from shared.messaging import provision_topics  # noqa: E402

SECRET = "bench-secret-long-enough-for-hs256-signatures"
CHANNELS = ["Walk-in", "Online", "Bank Lockbox", "POS"]
METHODS = ["Cash", "Credit Card", "Debit Card", "Check", "Bank Transfer"]
TYPES = ["bill", "service", "installment"]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def event(n: int, run: str) -> tuple[str, bytes]:
    account = f"BENCH-{n % 5000}"
    now = datetime.now(UTC)
    data = PaymentPosted(
        payment_id=f"PAY-{run}-{n}",
        transaction_id=f"TXN-{run}-{n}",
        receipt_number=f"R-{run}-{n}",
        consumer=ConsumerSnapshot(account_number=account, name="Bench Consumer", service_address="1 Load Street"),
        item=ItemSnapshot(
            payment_type=PaymentType.BILL,
            item_reference=f"INV-{n}",
            description="Bill",
            issued_on=now.date() - timedelta(days=n % 30),
            due=Money(amount=Decimal("42.50")),
        ),
        channel=CHANNELS[n % len(CHANNELS)],
        method=METHODS[n % len(METHODS)],
        amount=Money(amount=Decimal("42.50")),
        payment_date=now.date(),
        posted_at=now,
        received_by="Bench",
        status="Posted",
        verification="Verified",
        difference=Money(amount=Decimal("0.00")),
        outcome="exact",
    )
    envelope = new_envelope("payment.posted", source="payments", subject=account, data=data)
    return str(envelope.id), envelope.to_bytes()


async def lag(bootstrap: str, dsn: str, rate: int, seconds: float) -> None:
    run = uuid.uuid4().hex[:8]
    total = int(rate * seconds)
    sent_at: dict[str, float] = {}
    seen_at: dict[str, float] = {}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=1)
    await producer.start()
    watcher = await asyncpg.connect(dsn)
    # Bench-only instrumentation: a notification per inbox row, delivered when the consumer's transaction
    # (inbox row and aggregates together) commits, i.e. the moment the KPI reflects the payment.
    await watcher.execute(
        "CREATE OR REPLACE FUNCTION kpi.bench_notify() RETURNS trigger LANGUAGE plpgsql AS "
        "$$BEGIN PERFORM pg_notify('kpi_bench', NEW.event_id::text); RETURN NEW; END$$"
    )
    await watcher.execute(
        "CREATE OR REPLACE TRIGGER bench_notify AFTER INSERT ON kpi.inbox "
        "FOR EACH ROW EXECUTE FUNCTION kpi.bench_notify()"
    )
    all_seen = asyncio.Event()
    warmed_up = asyncio.Event()
    warm_up_id, warm_up_value = event(0, f"{run}-warm-up")

    def on_notify(_: object, __: int, ___: str, event_id: str) -> None:
        if event_id == warm_up_id:
            warmed_up.set()
            return
        seen_at.setdefault(event_id, time.monotonic())
        if len(seen_at) >= total:
            all_seen.set()

    await watcher.add_listener("kpi_bench", on_notify)
    # Untimed warm-up: one payment all the way through first, so the figures are the steady state and not the
    # consumers' first join (on a fresh Apache Kafka that includes creating its offsets topic: seconds).
    await producer.send_and_wait(
        Topic.PAYMENTS_EVENTS, warm_up_value, key=b"BENCH-0", headers=[("content-type", CONTENT_TYPE.encode())]
    )
    await asyncio.wait_for(warmed_up.wait(), timeout=120)

    async def watch() -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_seen.wait(), timeout=seconds + 180)

    watching = asyncio.create_task(watch())
    start = time.monotonic()
    for n in range(total):
        target = start + n / rate
        delay = target - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        event_id, value = event(n, run)
        sent_at[event_id] = time.monotonic()
        await producer.send(
            Topic.PAYMENTS_EVENTS,
            value,
            key=f"BENCH-{n % 5000}".encode(),
            headers=[("content-type", CONTENT_TYPE.encode())],
        )

    await producer.flush()
    achieved = total / (time.monotonic() - start)
    await watching
    await producer.stop()
    await watcher.execute("DROP TRIGGER bench_notify ON kpi.inbox")
    await watcher.close()
    lags = [(seen_at[i] - sent_at[i]) * 1000 for i in sent_at if i in seen_at]
    missing = total - len(lags)
    print(f"lag: {total} payment.posted at {achieved:.0f}/s sustained for {seconds:.0f}s (target {rate}/s)")
    print(
        f"lag: payment.posted -> KPI reflects it: p50 {percentile(lags, 50):.0f} ms, "
        f"p99 {percentile(lags, 99):.0f} ms, max {max(lags):.0f} ms (target p99 < 1000 ms)"
        + (f"; {missing} not seen" if missing else "")
    )


SEED_SQL = """
WITH days AS (SELECT d::date AS day FROM generate_series($1::date, $2::date, interval '1 day') AS d),
combos AS (
  SELECT c, m, t FROM unnest($3::text[]) AS c CROSS JOIN unnest($4::text[]) AS m CROSS JOIN unnest($5::text[]) AS t
)
INSERT INTO kpi.daily_collections
  (day, currency, channel, method, payment_type, payments, collected, timed_payments, collection_days)
SELECT day, 'USD', c, m, t, $6::int, $6::int * 57.25, $6::int, $6::int * 9 FROM days CROSS JOIN combos
"""


async def seed_ten_million(dsn: str, payments: int, with_rows: bool) -> None:
    first, last = date(2024, 1, 1), date(2025, 12, 31)
    days = (last - first).days + 1
    combos = len(CHANNELS) * len(METHODS) * len(TYPES)
    per_row = max(1, -(-payments // (days * combos)))  # rounded up: at least `payments` in all
    conn = await asyncpg.connect(dsn)
    try:
        started = time.monotonic()
        await conn.execute(SEED_SQL, first, last, CHANNELS, METHODS, TYPES, per_row)
        await conn.execute(
            "INSERT INTO kpi.daily_dues SELECT d::date, 'USD', t, $1::int, $1::int * 60.00 "
            "FROM generate_series($2::date, $3::date, interval '1 day') d CROSS JOIN unnest($4::text[]) t",
            per_row * combos // 3 + 1,
            first,
            last,
            TYPES,
        )
        await conn.execute(
            "INSERT INTO kpi.daily_receipts SELECT d::date, 'USD', $1::int, $1::int * 57.25 "
            "FROM generate_series($2::date, $3::date, interval '1 day') d",
            per_row * combos,
            first,
            last,
        )
        await conn.execute(
            "INSERT INTO kpi.daily_events SELECT d::date, e, 'USD', 25, 250.00 "
            "FROM generate_series($1::date, $2::date, interval '1 day') d CROSS JOIN unnest($3::text[]) e",
            first,
            last,
            [
                "online_payments_failed",
                "payments_cancelled",
                "payments_refunded",
                "credit_notes_issued",
                "credit_notes_applied",
            ],
        )
        seeded = per_row * days * combos
        rows_note = ""
        if with_rows:
            # The per-payment read model too (every 1000th awaiting verification), so its size is real as well.
            await conn.execute(
                "INSERT INTO kpi.payments SELECT 'SEED-' || n, 'R-S-' || n, 'WU-' || (n % 100000), 'Seed Consumer', "
                "'bill', 'Walk-in', 'Cash', 57.25, 'USD', date '2024-01-01' + (n % 730), "
                "timestamptz '2024-01-01' + (n % 730) * interval '1 day', date '2024-01-01' + (n % 730), 9, "
                "'Posted', CASE WHEN n % 1000 = 0 THEN 'Pending' ELSE 'Verified' END, true "
                "FROM generate_series(1, $1) n",
                seeded,
            )
            rows_note = f" and {seeded:,} rows in kpi.payments"
        await conn.execute("ANALYZE")
        print(
            f"summary: seeded aggregates for {seeded:,} payments ({days * combos:,} daily rows){rows_note} "
            f"directly into the kpi schema in bulk (not through Kafka), in {time.monotonic() - started:.0f}s"
        )
    finally:
        await conn.close()


async def summary_latency(url: str, requests: int) -> None:
    token = mint_token(SECRET, user="Bench Manager", roles=[Role.BILLING_MANAGER])
    headers = {"Authorization": f"Bearer {token}"}
    timings: list[float] = []
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as client:
        check = (await client.get("/kpi/summary?period=2025-06")).json()
        print(
            f"summary: 2025-06 total collected {check['kpis']['total_collected']['value']} "
            f"({check['kpis']['total_collected']['payments']:,} payments)"
        )
        for n in range(requests):
            period = f"{2024 + n % 2}-{n % 12 + 1:02d}"
            started = time.perf_counter()
            response = await client.get(f"/kpi/summary?period={period}")
            timings.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.text
    print(
        f"summary: GET /kpi/summary over HTTP, {requests} requests: p50 {statistics.median(timings):.1f} ms, "
        f"p99 {percentile(timings, 99):.1f} ms (target p99 < 20 ms)"
    )


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("kpi service exited")
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("kpi service not ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=500, help="payment.posted per second")
    parser.add_argument("--seconds", type=float, default=20, help="how long to sustain the rate")
    parser.add_argument("--payments", type=int, default=10_000_000, help="payments the summary benchmark stands for")
    parser.add_argument("--requests", type=int, default=2000, help="summary requests to time")
    parser.add_argument("--no-payment-rows", action="store_true", help="seed only aggregates, not kpi.payments")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-kpi-"))
    postgres = kafka = None
    database_url = os.environ.get("DATABASE_URL")
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not database_url:
        postgres = EmbeddedPostgres(workdir / "pgdata", delete_on_stop=True)
        database_url = postgres.start()
    if not bootstrap:
        kafka = broker_from_environment(workdir)
        bootstrap = kafka.start()
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    port = free_port()
    service = None
    try:
        asyncio.run(provision_topics(bootstrap, partitions=int(os.environ.get("KAFKA_PARTITIONS", "6"))))
        upgrade("kpi", database_url)
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "PAYDESK_JWT_SECRET": SECRET,
            "KPI_HTTP_PORT": str(port),
        }
        log = open(workdir / "kpi.log", "wb")  # noqa: SIM115 - held for the process lifetime
        spawned = time.monotonic()
        service = subprocess.Popen(
            [sys.executable, "-m", "paydesk.cli", "service", "kpi"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, service)
        ready_after = time.monotonic() - spawned
        print(f"kpi service on {url}, ready {ready_after:.1f} s after start; {os.cpu_count()} cores; logs in {workdir}")
        asyncio.run(lag(bootstrap, dsn, args.rate, args.seconds))
        asyncio.run(seed_ten_million(dsn, args.payments, not args.no_payment_rows))
        asyncio.run(summary_latency(url, args.requests))
    finally:
        if service is not None:
            service.terminate()
            service.wait(30)
        if kafka is not None:
            kafka.stop()
        if postgres is not None:
            postgres.stop()


if __name__ == "__main__":
    main()
