"""Benchmark the gateway bridge's Stripe webhook endpoint: acceptance throughput and latency.

Runs the bridge as its own process (as in production) on embedded Postgres and Apache Kafka (Tansu with
PAYDESK_BROKER=tansu), unless DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS point at running servers, and payments
beside it (consuming the gateway's events, as in production). It drives them from this process with aiohttp
on uvloop, a sender cheap enough that the two cores go to the system under test, not to the load generator:

1. a steady phase at `--rate` webhooks/s (open loop: latency counts from each request's scheduled time, so
   queueing is not hidden), printing p50/p95/p99/max acceptance latency (target: p99 < 50 ms at 200/s);
2. a closed-loop phase at `--concurrency` to find the maximum acceptance throughput;
3. webhook-to-published lag: from sending a webhook to its event being readable on gateway.events.v1;
4. webhook-to-posted lag: from sending a succeeded webhook to payments' `payment.posted` for it.

    .venv/bin/python scripts/bench_gateway.py [--rate 200] [--seconds 20] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import uvloop
from aiokafka import AIOKafkaConsumer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from paydesk.embedded import EmbeddedPostgres, broker_from_environment, free_port  # noqa: E402
from paydesk.migrations import upgrade  # noqa: E402
from shared.contracts import Topic  # noqa: E402
from shared.messaging import provision_topics  # noqa: E402
from tests.support import stripe_fake as sf  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def events(n: int, accounts: int) -> list[dict[str, Any]]:
    """Realistic traffic: mostly new payment intents (processing then succeeded), 30% Stripe retries."""
    unique: list[dict[str, Any]] = []
    prefix = uuid.uuid4().hex[:8]
    while len(unique) < int(n * 0.7):
        intent = f"pi_bench{prefix}{len(unique):07d}"
        meta = sf.metadata(f"BENCH-{random.randrange(accounts):04d}", f"INV-{len(unique)}")
        for event_type in random.choice(
            [["payment_intent.processing", "payment_intent.succeeded"], ["payment_intent.succeeded"]]
        ):
            unique.append(sf.payment_intent_event(event_type, intent, meta, amount=random.randrange(100, 90_000)))
    traffic = unique + random.choices(unique, k=n - len(unique))
    random.shuffle(traffic)
    return traffic


async def post(client: aiohttp.ClientSession, body: bytes, signature: str | None = None) -> int:
    """One signed delivery; 0 for a timeout or connection error."""
    headers = {"stripe-signature": signature or sf.sign(body), "content-type": "application/json"}
    try:
        async with client.post("/webhooks/stripe", data=body, headers=headers) as response:
            await response.read()
            return response.status
    except (aiohttp.ClientError, TimeoutError):
        return 0


async def steady(
    client: aiohttp.ClientSession, rate: float, seconds: float
) -> tuple[list[float], dict[int, int], float]:
    # Signed up front (well inside Stripe's 300 s tolerance), so the sender spends its time sending.
    traffic = [(body, sf.sign(body)) for body in (sf.body_of(e) for e in events(int(rate * seconds), accounts=500))]
    latencies: list[float] = []
    codes: dict[int, int] = {}
    start = time.perf_counter() + 0.2

    async def one(i: int, body: bytes, signature: str) -> None:
        scheduled = start + i / rate
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
        code = await post(client, body, signature)
        latencies.append(time.perf_counter() - scheduled)
        codes[code] = codes.get(code, 0) + 1

    await asyncio.gather(*(one(i, body, signature) for i, (body, signature) in enumerate(traffic)))
    return latencies, codes, time.perf_counter() - start


async def closed_loop(client: aiohttp.ClientSession, n: int, concurrency: int) -> float:
    traffic = [sf.body_of(e) for e in events(n, accounts=500)]
    gate = asyncio.Semaphore(concurrency)

    async def one(body: bytes) -> None:
        async with gate:
            await post(client, body)

    started = time.perf_counter()
    await asyncio.gather(*(one(b) for b in traffic))
    return n / (time.perf_counter() - started)


async def publish_lag(client: aiohttp.ClientSession, bootstrap: str, n: int, rate: float) -> list[float]:
    """Seconds from sending a webhook to reading its gateway event from the topic."""
    consumer = AIOKafkaConsumer(
        Topic.GATEWAY_EVENTS, bootstrap_servers=bootstrap, auto_offset_reset="latest", fetch_max_wait_ms=20
    )
    await consumer.start()
    try:
        await asyncio.sleep(1.0)  # partitions assigned, positioned at the end
        sent: dict[str, float] = {}
        lags: list[float] = []
        done = asyncio.Event()

        async def read() -> None:
            async for record in consumer:
                data = json.loads(record.value)["data"]
                at = sent.get(data.get("gateway_event_id"))
                if at is not None:
                    lags.append(time.perf_counter() - at)
                    if len(lags) == n:
                        done.set()
                        return

        reader = asyncio.create_task(read())
        for i in range(n):
            intent = f"pi_lag{uuid.uuid4().hex[:16]}"
            event = sf.payment_intent_event("payment_intent.succeeded", intent, sf.metadata(f"LAG-{i % 50}"))
            sent[event["id"]] = time.perf_counter()
            await post(client, sf.body_of(event))
            await asyncio.sleep(1 / rate)
        try:
            await asyncio.wait_for(done.wait(), timeout=60)
        finally:
            reader.cancel()
        return lags
    finally:
        await consumer.stop()


async def posted_lag(
    client: aiohttp.ClientSession, bootstrap: str, database_url: str, n: int, rate: float
) -> list[float]:
    """Seconds from sending a succeeded webhook to payments' `payment.posted` for it (through gateway events)."""
    from datetime import date

    from sqlalchemy import text

    from shared.contracts import new_envelope
    from shared.contracts.events import AccountUpserted, BillIssued, Money
    from shared.db import create_engine
    from tests.support.helpers import publish

    run = uuid.uuid4().hex[:6].upper()
    accounts = [f"LAGP-{run}-{i:02d}" for i in range(20)]
    bills = [(accounts[i % len(accounts)], f"INV-LAG-{run}-{i:05d}") for i in range(n)]
    billing = [
        new_envelope(
            "account.upserted",
            source="billing",
            subject=a,
            data=AccountUpserted(account_number=a, name=f"Bench {a}", service_address="1 Bench Street"),
        )
        for a in accounts
    ] + [
        new_envelope(
            "bill.issued",
            source="billing",
            subject=a,
            data=BillIssued(
                account_number=a,
                invoice_number=ref,
                billing_period="2025-04",
                amount=Money(amount=Decimal("145.50")),
                issued_on=date(2025, 4, 1),
                due_date=date(2025, 4, 15),
            ),
        )
        for a, ref in bills
    ]
    await publish(bootstrap, Topic.BILLING_RECEIVABLES, billing)
    engine = create_engine(database_url, pool_size=1)
    try:
        for _ in range(600):  # payments has the bills in its read model
            async with engine.connect() as conn:
                known = (
                    await conn.execute(
                        text("SELECT count(*) FROM payments.receivables WHERE item_reference LIKE :p"),
                        {"p": f"INV-LAG-{run}-%"},
                    )
                ).scalar_one()
            if known == n:
                break
            await asyncio.sleep(0.1)
    finally:
        await engine.dispose()

    consumer = AIOKafkaConsumer(
        Topic.PAYMENTS_EVENTS, bootstrap_servers=bootstrap, auto_offset_reset="latest", fetch_max_wait_ms=20
    )
    await consumer.start()
    try:
        await asyncio.sleep(1.0)
        sent: dict[str, float] = {}
        lags: list[float] = []
        done = asyncio.Event()

        async def read() -> None:
            async for record in consumer:
                envelope = json.loads(record.value)
                if envelope.get("type") != "payment.posted":
                    continue
                at = sent.get(envelope["data"]["item"]["item_reference"])
                if at is not None:
                    lags.append(time.perf_counter() - at)
                    if len(lags) == n:
                        done.set()
                        return

        reader = asyncio.create_task(read())

        async def pay(account: str, ref: str) -> None:
            intent = f"pi_lagp{uuid.uuid4().hex[:16]}"
            event = sf.payment_intent_event("payment_intent.succeeded", intent, sf.metadata(account, ref))
            sent[ref] = time.perf_counter()
            await post(client, sf.body_of(event))

        # Warm-up: the first payment waits for payments' gateway consumer to join its group; not measured.
        await pay(*bills[0])
        for _ in range(600):
            if lags:
                break
            await asyncio.sleep(0.1)
        lags.clear()
        n -= 1
        for account, ref in bills[1:]:
            await pay(account, ref)
            await asyncio.sleep(1 / rate)
        try:
            await asyncio.wait_for(done.wait(), timeout=120)
        except TimeoutError:
            print(f"  only {len(lags)} of {n} payments were posted within 120 s")
        finally:
            reader.cancel()
        return lags
    finally:
        await consumer.stop()


def payments_consumes_gateway_events() -> bool:
    return "GATEWAY_EVENTS" in (ROOT / "services" / "payments" / "app.py").read_text()


async def wait_ready(base: str, process: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession(base_url=base) as client:
        for _ in range(300):
            if process.poll() is not None:
                raise SystemExit(f"gateway_bridge exited with {process.returncode}")
            try:
                async with client.get("/health/ready") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("gateway_bridge did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200.0, help="webhooks per second in the steady phase")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the steady phase")
    parser.add_argument("--concurrency", type=int, default=32, help="in-flight requests in the closed-loop phase")
    parser.add_argument("--max-requests", type=int, default=4000, help="requests in the closed-loop phase")
    parser.add_argument("--lag-only", action="store_true", help="skip the load phases, measure the lags only")
    args = parser.parse_args()

    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="paydesk-bench-gw-") as tmp:
        database_url = os.environ.get("DATABASE_URL")
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not database_url:
            postgres = EmbeddedPostgres(Path(tmp) / "pgdata", delete_on_stop=True)
            database_url = postgres.start()
            stack.callback(postgres.stop)
        if not bootstrap:
            kafka = broker_from_environment(Path(tmp))
            bootstrap = kafka.start()
            stack.callback(kafka.stop)
        asyncio.run(provision_topics(bootstrap, partitions=6))
        upgrade("gateway_bridge", database_url)
        with_payments = payments_consumes_gateway_events()
        if with_payments:
            upgrade("payments", database_url)

        port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "STRIPE_WEBHOOK_SECRET": sf.SECRET,
            "GATEWAY_BRIDGE_HTTP_PORT": str(port),
            "DATABASE_POOL_SIZE": os.environ.get("DATABASE_POOL_SIZE", "20"),
            "PAYDESK_LOG_LEVEL": "WARNING",
        }
        log = (Path(tmp) / "gateway_bridge.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "paydesk.cli", "service", "gateway_bridge"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=log,
        )

        def stop() -> None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()

        stack.callback(stop)
        base = f"http://127.0.0.1:{port}"
        payments: subprocess.Popen[bytes] | None = None
        if with_payments:
            payments_env = {**env, "PAYMENTS_HTTP_PORT": str(free_port())}
            payments_log = (Path(tmp) / "payments.log").open("wb")
            payments = subprocess.Popen(
                [sys.executable, "-m", "paydesk.cli", "service", "payments"],
                env=payments_env,
                cwd=ROOT,
                stdout=payments_log,
                stderr=payments_log,
            )

            def stop_payments() -> None:
                assert payments is not None
                payments.terminate()
                try:
                    payments.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    payments.kill()

            stack.callback(stop_payments)

        async def run() -> None:
            await wait_ready(base, process)
            # In-flight requests are bounded like a real sender's pool; waiting for a connection counts in the
            # latency (measured from each request's scheduled time), it is never a failure.
            connector = aiohttp.TCPConnector(limit=64)
            timeout = aiohttp.ClientTimeout(total=30)
            async with aiohttp.ClientSession(base_url=base, connector=connector, timeout=timeout) as client:
                if not args.lag_only:
                    await closed_loop(client, 300, 16)  # warm-up: connections, prepared statements
                    latencies, codes, took = await steady(client, args.rate, args.seconds)
                    ms = [x * 1000 for x in latencies]
                    achieved = len(ms) / took
                    print(f"steady phase: {len(ms)} webhooks at {args.rate:.0f}/s offered, {achieved:.0f}/s achieved")
                    print(f"  responses: {codes}" + ("  (0 = timeout or connection error)" if 0 in codes else ""))
                    print(
                        f"  acceptance latency ms: p50 {statistics.median(ms):.1f}  p95 {percentile(ms, 95):.1f}  "
                        f"p99 {percentile(ms, 99):.1f}  max {max(ms):.1f}   (target p99 < 50 ms)"
                    )
                    rate = await closed_loop(client, args.max_requests, args.concurrency)
                    print(
                        f"max acceptance throughput: {rate:.0f} webhooks/s (closed loop, {args.concurrency} in flight)"
                    )
                lags = [x * 1000 for x in await publish_lag(client, bootstrap, 500, 100)]
                print(
                    f"webhook-to-published lag ms (500 at 100/s): p50 {statistics.median(lags):.1f}  "
                    f"p99 {percentile(lags, 99):.1f}"
                )
                if with_payments:
                    posted = [x * 1000 for x in await posted_lag(client, bootstrap, database_url, 300, 20)]
                    if posted:
                        print(
                            f"webhook-to-posted lag ms ({len(posted)} succeeded payments at 20/s, through "
                            f"payments): p50 {statistics.median(posted):.1f}  p99 {percentile(posted, 99):.1f}"
                        )
            if not with_payments:
                print("webhook-to-posted lag: n/a (payments does not consume gateway.events.v1 yet)")

        uvloop.run(run())


if __name__ == "__main__":
    main()
