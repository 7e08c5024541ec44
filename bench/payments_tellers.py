"""`POST /payments` with N tellers in a closed loop over keep-alive connections, against payments as a process.

A benchmark, never a test; it prints figures. Issue 17's HTTP target: p99 < 100 ms with 16 tellers.

    .venv/bin/python bench/payments_tellers.py [--tellers 16] [--seconds 30] [--accounts 2000] [--profile]
        [--api-processes N]

It starts an embedded Postgres and Apache Kafka, migrates payments, runs `paydesk service payments` with the
settings `make run` gives it (spans exported to Postgres, INFO logs, the default pool) unless told otherwise,
loads the accounts through `billing.receivables.v1`, and then each teller posts a payment against its own bills,
one request after the other, for `--seconds`. Besides the answer's latency it reads `payments.events.v1` and
reports how long each accepted payment took to reach Kafka (the outbox relay). Payments runs as `paydesk run` starts
it (`paydesk.launcher.service_processes`: api processes on one port and a workers process), or with
`--api-processes 0` as one process doing everything. After the run it prints each process's event-loop lag
(`paydesk_event_loop_lag_seconds`). With `--profile`, py-spy samples every payments process during the run and the
busiest functions of each are printed (the raw stacks go to `--out`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
import httpx  # noqa: E402
import psutil  # noqa: E402
from aiokafka import AIOKafkaConsumer  # noqa: E402

from bench.payments import percentile, publish_accounts, wait_for_bills  # noqa: E402
from paydesk.embedded import EmbeddedPostgres, broker_from_environment, free_port  # noqa: E402
from paydesk.launcher import ServiceProcess, service_processes  # noqa: E402
from paydesk.migrations import upgrade  # noqa: E402
from shared.auth import Role, mint_token  # noqa: E402
from shared.contracts import Topic  # noqa: E402
from shared.messaging import provision_topics  # noqa: E402

SECRET = "benchmark-secret-that-is-long-enough-for-hs256"


def start_payments(
    workdir: Path,
    url: str,
    bootstrap: str,
    port: int,
    api_processes: int | None,
    extra_env: dict[str, str],
    started: dict[ServiceProcess, Any],
) -> None:
    """Payments' processes as `paydesk run` starts them (or `api_processes` of them and a workers process), each
    put in `started` at once (the caller stops them, even when one never became ready)."""
    env = os.environ | {
        "DATABASE_URL": url,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "PAYDESK_JWT_SECRET": SECRET,
        "PAYMENTS_HTTP_PORT": str(port),
        "PAYMENTS_WORKERS_HTTP_PORT": str(free_port()),
        **({"PAYMENTS_API_PROCESSES": str(api_processes)} if api_processes is not None else {}),
        **extra_env,
    }
    for role in service_processes("payments", env):
        log = open(workdir / f"{role.name}.log", "wb")  # noqa: SIM115 - held open for the process lifetime
        started[role] = subprocess.Popen(
            [sys.executable, "-m", "paydesk.cli", "service", "payments"],
            env=env | role.environment(),
            stdout=log,
            stderr=log,
        )
    deadline = time.monotonic() + 90
    for role in started:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{role.port}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{role.name} did not start; see {workdir / (role.name + '.log')}")
            time.sleep(0.2)


def loop_lag(port: int) -> dict[float, float]:
    """The event-loop lag histogram of the process answering on `port`: cumulative count per bucket bound."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    buckets = {}
    for line in text.splitlines():
        if line.startswith("paydesk_event_loop_lag_seconds_bucket"):
            bound = line.split('le="')[1].split('"')[0]
            buckets[float("inf") if bound == "+Inf" else float(bound)] = float(line.rsplit(" ", 1)[1])
    return buckets


def lag_quantile(before: dict[float, float], after: dict[float, float], q: float) -> str:
    """The bucket bound under which a share `q` of the run's lag samples fell (from the two scrapes' difference)."""
    counts = {bound: after[bound] - before.get(bound, 0.0) for bound in sorted(after)}
    total = counts.get(float("inf"), 0.0)
    if not total:
        return "-"
    for bound, count in counts.items():
        if count >= q * total:
            return f"<= {1000 * bound:g} ms" if bound != float("inf") else "> 2.5 s"
    return "-"


async def watch_posted(bootstrap: str, seen: dict[str, float], stop: asyncio.Event) -> None:
    """Note when each payment.posted event is read from Kafka (the relay's latency, plus a fetch)."""
    consumer = AIOKafkaConsumer(
        Topic.PAYMENTS_EVENTS, bootstrap_servers=bootstrap, auto_offset_reset="latest", fetch_max_wait_ms=20
    )
    await consumer.start()
    try:
        await consumer.seek_to_end()
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100)
            now = time.perf_counter()
            for records in batches.values():
                for record in records:
                    event = json.loads(record.value)
                    if event.get("type") == "payment.posted":
                        seen.setdefault(event["data"]["payment_id"], now)
    finally:
        await consumer.stop()


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process and every child it has or had (ended children once reaped)."""
    process = psutil.Process(pid)
    times = process.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in process.children(recursive=True):
        try:
            child_times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += child_times.user + child_times.system
    return float(total)


def postmaster(data_dir: Path) -> int:
    """This run's Postgres server (not another Postgres on the box): its backends are its children."""
    for process in psutil.process_iter(["name", "cmdline"]):
        if process.info["name"] == "postgres" and str(data_dir) in " ".join(process.info["cmdline"] or []):
            return int(process.pid)
    raise SystemExit(f"no Postgres found for {data_dir}")


async def database_sessions(dsn: str) -> int:
    """Connections the database has accepted so far (a pool that keeps re-connecting shows here)."""
    connection = await asyncpg.connect(dsn)
    try:
        return int(await connection.fetchval("SELECT sessions FROM pg_stat_database WHERE datname = 'paydesk'"))
    finally:
        await connection.close()


async def sample_waits(dsn: str, stop: asyncio.Event, every: float = 0.05) -> None:
    """What the payments process's database sessions are doing, sampled every 50 ms: each sample counts every
    backend of the `paydesk` database but this one by state and wait event, and names the statements that wait
    on a lock. Where the time of a request goes that the CPU figures do not show."""
    connection = await asyncpg.connect(dsn)
    seen: collections.Counter[str] = collections.Counter()
    locked: collections.Counter[str] = collections.Counter()
    busy: list[int] = []
    samples = 0
    try:
        while not stop.is_set():
            rows = await connection.fetch(
                "SELECT state, wait_event_type, wait_event, left(query, 90) AS query FROM pg_stat_activity"
                " WHERE datname = 'paydesk' AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            )
            samples += 1
            busy.append(sum(1 for r in rows if r["state"] != "idle"))
            for r in rows:
                seen[f"{r['state']} / {r['wait_event_type'] or '-'}:{r['wait_event'] or '-'}"] += 1
                if r["wait_event_type"] == "Lock":
                    locked[" ".join(r["query"].split())] += 1
            await asyncio.sleep(every)
    finally:
        await connection.close()
    if not samples:
        return
    print(
        f"pg_stat_activity, {samples} samples every {1000 * every:.0f} ms: backends not idle per sample "
        f"p50 {percentile(busy, 50)}, max {max(busy)}; mean backends per sample by state / wait:",
        flush=True,
    )
    for what, count in seen.most_common(12):
        print(f"  {count / samples:6.2f}  {what}", flush=True)
    for query, count in locked.most_common(5):
        print(f"  lock wait {count / samples:5.2f}  {query}", flush=True)


async def tellers(
    base: str,
    bootstrap: str,
    bills: list[tuple[str, str]],
    count: int,
    seconds: float,
    payments: dict[ServiceProcess, int],
    data_dir: Path,
    dsn: str,
) -> None:
    token = mint_token(SECRET, user="Bench Clerk", roles=[Role.CUSTOMER_EXECUTIVE])
    latencies: list[float] = []
    answered: dict[str, float] = {}
    committed: dict[str, float] = {}  # when the answer came: the transaction had committed
    statuses: collections.Counter[int] = collections.Counter()
    posted: dict[str, float] = {}
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_posted(bootstrap, posted, stop))
    waits_done = asyncio.Event()
    await asyncio.sleep(2)  # the watcher has its partitions before the first payment

    async def teller(n: int, until: float, record: bool) -> None:
        # One keep-alive connection per teller, as a counter's browser would hold.
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(base_url=base, connector=connector) as client:
            turn = 0
            while time.perf_counter() < until:
                account, invoice = bills[(n + turn * count) % len(bills)]
                turn += 1
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
                async with client.post("/payments", json=body, headers=headers) as response:
                    payload = await response.read()
                    status = response.status
                finished = time.perf_counter()
                if not record:
                    continue
                statuses[status] += 1
                latencies.append((finished - started) * 1000)
                if status == 201:
                    payment_id = json.loads(payload)["payment_id"]
                    answered[payment_id], committed[payment_id] = started, finished

    warm_until = time.perf_counter() + 3
    await asyncio.gather(*(teller(n, warm_until, record=False) for n in range(count)))  # connections and plans
    # CPU per accepted payment: less at the mercy of other processes on the machine than the latencies are.
    measured = {process.name: pid for process, pid in payments.items()} | {"postgres": postmaster(data_dir)}
    # What the processes burn with no request (consumers polling, the relay, spans): taken off below, so the
    # CPU per payment does not grow just because a loaded machine let fewer payments through.
    idle_before = {name: cpu_seconds(pid) for name, pid in measured.items()}
    idle_started = time.perf_counter()
    await asyncio.sleep(5)
    idle_rate = {
        name: (cpu_seconds(pid) - idle_before[name]) / (time.perf_counter() - idle_started)
        for name, pid in measured.items()
    }
    cpu_before = {name: cpu_seconds(pid) for name, pid in measured.items()}
    sessions_before = await database_sessions(dsn)
    # One scrape per process: api processes share a port, so only one of them is read (the kernel picks it).
    lag_ports = {process.port: process.name for process in payments}
    lag_before = {port: await asyncio.to_thread(loop_lag, port) for port in lag_ports}
    started = time.perf_counter()
    sampler = asyncio.create_task(sample_waits(dsn, waits_done))
    await asyncio.gather(*(teller(n, started + seconds, record=True) for n in range(count)))
    elapsed = time.perf_counter() - started
    waits_done.set()
    lag_after = {port: await asyncio.to_thread(loop_lag, port) for port in lag_ports}
    cpu_used = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in measured.items()}
    new_sessions = await database_sessions(dsn) - sessions_before - 3  # the counting and sampling connections
    deadline = time.perf_counter() + 60
    while time.perf_counter() < deadline and any(p not in posted for p in answered):  # noqa: ASYNC110 - polls a dict
        await asyncio.sleep(0.2)
    stop.set()
    await watcher
    await sampler
    relay = [(posted[p] - t) * 1000 for p, t in answered.items() if p in posted]
    after_answer = [(posted[p] - t) * 1000 for p, t in committed.items() if p in posted]
    print(f"statuses {dict(statuses)}; accepted {statuses[201] / elapsed:.1f}/s over {elapsed:.1f} s", flush=True)
    for title, values in (
        ("POST /payments answered", latencies),
        ("payment -> posted on Kafka", relay),
        ("answer -> posted on Kafka", after_answer),
    ):
        print(
            f"{title:<28} n={len(values):>6}  p50={percentile(values, 50):8.1f} ms  "
            f"p95={percentile(values, 95):8.1f} ms  p99={percentile(values, 99):8.1f} ms  "
            f"max={max(values):8.1f} ms",
            flush=True,
        )
    accepted = max(1, statuses[201])
    print(
        "CPU per accepted payment (during the tellers' run, relay included): "
        + ", ".join(f"{name} {1000 * used / accepted:.1f} ms" for name, used in cpu_used.items())
        + "; less the idle rate ("
        + ", ".join(f"{name} {100 * rate:.1f}% of a core" for name, rate in idle_rate.items())
        + "): "
        + ", ".join(
            f"{name} {1000 * (used - idle_rate[name] * elapsed) / accepted:.1f} ms" for name, used in cpu_used.items()
        ),
        flush=True,
    )
    print(f"database connections opened during the run: {new_sessions}", flush=True)
    for port, name in lag_ports.items():
        print(
            f"event-loop lag of {name} (a 100 ms timer, during the run): "
            + ", ".join(f"p{q:g} {lag_quantile(lag_before[port], lag_after[port], q / 100)}" for q in (50, 95, 99)),
            flush=True,
        )
    missing = len(answered) - len(relay)
    if missing:
        print(f"{missing} accepted payments not seen on Kafka within 60 s", flush=True)


def busiest_lines(raw: Path, top: int = 25) -> list[str]:
    """The functions py-spy saw most in its raw stacks, by own samples and by samples with the function on the stack."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples = int(count)
        frames = [f.split(" (")[0] + " " + f.split("(")[-1].split(":")[0] for f in stack.split(";")]
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    lines = [f"py-spy: {total} samples"]
    for title, counter in (("own", own), ("on the stack", inclusive)):
        lines.append(f"  busiest ({title}):")
        lines += [f"    {100 * samples / total:5.1f}%  {frame}" for frame, samples in counter.most_common(top)]
    return lines


def busiest(raw: Path, top: int = 25) -> None:
    for line in busiest_lines(raw, top):
        print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--tellers", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument(
        "--api-processes",
        type=int,
        default=None,
        help="payments' api processes besides its workers process (0: one process doing everything); "
        "default: as `paydesk run` starts it",
    )
    parser.add_argument(
        "--api-nice",
        type=int,
        default=None,
        help="a diagnosis, not a setting: run payments' api processes at this niceness (below 0 needs root), to "
        "tell how much of the latency is the process waiting for a core behind other processes",
    )
    parser.add_argument("--profile", action="store_true", help="sample the payments processes with py-spy")
    parser.add_argument("--idle", action="store_true", help="with --profile: count waiting stacks too")
    parser.add_argument("--out", type=Path, default=None, help="where py-spy's stacks go")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="extra settings for the payments process"
    )
    args = parser.parse_args()
    extra_env = dict(item.split("=", 1) for item in args.env)

    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="paydesk-tellers-"))
    postgres = EmbeddedPostgres(workdir / "pgdata", delete_on_stop=True)
    kafka = broker_from_environment(workdir)
    url = postgres.start()
    bootstrap = kafka.start()
    processes: dict[ServiceProcess, Any] = {}
    profilers: dict[str, tuple[Any, Path]] = {}
    try:
        asyncio.run(provision_topics(bootstrap, partitions=3))
        upgrade("payments", url)
        port = free_port()
        start_payments(workdir, url, bootstrap, port, args.api_processes, extra_env, processes)
        asyncio.run(publish_accounts(bootstrap, args.accounts))
        bills = asyncio.run(wait_for_bills(url.replace("postgresql+asyncpg://", "postgresql://"), args.accounts))
        if args.api_nice is not None:
            for role, child in processes.items():
                if role.role != "workers":
                    psutil.Process(child.pid).nice(args.api_nice)
        roles = ", ".join(f"{p.name} ({p.role}, nice {psutil.Process(c.pid).nice()})" for p, c in processes.items())
        print(f"{len(bills)} bills; {args.tellers} tellers, {args.seconds:g} s; {roles}; env {extra_env}", flush=True)
        if args.profile:
            out = args.out or Path(f"bench-results/tellers-{time.strftime('%Y%m%d-%H%M%S')}")
            out.mkdir(parents=True, exist_ok=True)
            spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            for role, child in processes.items():
                raw = out / f"{role.name}.raw.txt"
                record = ["record", "--pid", str(child.pid), "--format", "raw", "--output", str(raw), "--rate", "200"]
                profilers[role.name] = (
                    subprocess.Popen(
                        [spy, *record, *(["--idle"] if args.idle else [])],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    ),
                    raw,
                )
        asyncio.run(
            tellers(
                f"http://127.0.0.1:{port}",
                bootstrap,
                bills,
                args.tellers,
                args.seconds,
                {role: child.pid for role, child in processes.items()},
                workdir / "pgdata",
                url.replace("postgresql+asyncpg://", "postgresql://"),
            )
        )
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
        for name, (profiler, raw) in profilers.items():
            profiler.send_signal(signal.SIGINT)
            profiler.wait(60)
            print(f"{name}:", flush=True)
            busiest(raw)
    finally:
        for child in processes.values():
            child.send_signal(signal.SIGTERM)
        for child in processes.values():
            child.wait(30)
        kafka.stop()
        postgres.stop()


if __name__ == "__main__":
    main()
