"""Payments' lockbox pipeline as a process: commands fetched from Kafka, posted, committed, relayed (a benchmark,
never a test; prints figures).

Starts an embedded Postgres and Apache Kafka, migrates the payments schema, runs payments as its own process (as
`paydesk service payments` does, with `make run`'s settings), loads `--accounts` accounts with a bill each through
`billing.receivables.v1`, then publishes `--commands` `payment.record_requested` commands at once (the ones
`bench/e2e.py`'s lockbox sends) and waits until every one is posted and every outbox row it staged is acknowledged
by Kafka. No other service runs, so the figures are the lockbox path's own:

- commands per second (follows the machine's load) and payments' CPU per command, raw and less its idle rate
  (measured for `--idle-seconds` before), plus its Postgres backends' CPU per command: these do not follow the load;
- from the process itself (timers the bench wraps around the code, written to a file): what one batch of the
  commands consumer spends in the fetch, the transaction and the offset commit, the gap between batches, the
  relay's batches and how long they take, and how late the event loop wakes a timer (the process short of CPU);
- from the tables: batch sizes and gaps (inbox `processed_at`) and how long a row waits in the outbox;
- a table of the steps of one commands batch (the inbox claim, then `post_batch`'s reads, number drawing, key
  claims, balance updates, payment and audit inserts, outbox staging; the rest is parsing, allocating, building
  rows and the commit) and of one relay batch (select, produce until acknowledged, mark published and commit):
  ms per batch, total seconds, share of the batch and microseconds per command.

    .venv/bin/python bench/lockbox_pipeline.py [--accounts 2000] [--commands 10000] [--idle-seconds 5] [--repeat 1]
        [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import psutil  # noqa: E402
from aiokafka import AIOKafkaProducer  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench.consumer_meter import _postgres_cpu  # noqa: E402
from bench.e2e_report import number, percentiles  # noqa: E402
from bench.e2e_workload import bills_of, lockbox_command, plan  # noqa: E402
from bench.payments_tellers import busiest  # noqa: E402
from paydesk.embedded import EmbeddedKafka, EmbeddedPostgres, free_port  # noqa: E402
from paydesk.launcher import publish_reference_data  # noqa: E402
from paydesk.migrations import upgrade  # noqa: E402
from shared.contracts import CONTENT_TYPE, Topic  # noqa: E402
from shared.kafka_clients import provision_topics  # noqa: E402

COMMANDS_GROUP = "paydesk.payments.commands"
# The steps of one commands batch (`post_batch` and the inbox claim before it), in the order they run, and of one
# relay batch: each timed on its own in the payments process.
COMMAND_PHASES = [
    ("shared.messaging", "claim_many"),
    ("services.payments.external_commands", "load_settings"),
    ("services.payments.arrangements", "any_held"),
    ("services.payments.external_commands", "_accounts"),
    ("services.payments.external_commands", "_lock_items"),
    ("services.payments.external_commands", "_draw_numbers"),
    ("services.payments.external_commands", "_claim_keys"),
    ("services.payments.external_commands", "_apply_to_balances"),
    ("services.payments.external_commands", "_insert_payments"),
    ("services.payments.external_commands", "_stage_events"),
]
RELAY_PHASES = ["_pending", "_produce", "_mark_sent"]


# --- the payments process, with timers around the pipeline's steps (`--serve`) ---


def serve(stats_path: Path) -> None:
    """Run payments as `paydesk service payments` does, recording how long each step of the pipeline takes."""
    from aiokafka.producer.sender import Sender
    from faststream.kafka.subscriber.usecase import BatchSubscriber
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from services.payments.app import create_service
    from shared.kafka_clients import ObservedConsumer
    from shared.messaging import EventConsumer
    from shared.outbox import OutboxRelay
    from shared.service import run_http

    stats: dict[str, list[list[float]]] = {
        "fetch": [],
        "deliver": [],
        "commit": [],
        "relay": [],
        "produce": [],
        "loop_lag": [],
    }
    statements = [0]

    def timed(cls: Any, name: str, key: str, wanted: Any, size: Any = lambda result, args: 0) -> None:
        original = getattr(cls, name)

        async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            result = await original(self, *args, **kwargs)
            if wanted(self):
                stats.setdefault(key, []).append([started, time.monotonic() - started, float(size(result, args))])
            return result

        setattr(cls, name, wrapper)

    def timed_function(module_name: str, name: str, key: str) -> None:
        """A step of `post_batch` (looked up in its module at each call, so replacing it there times it)."""
        module = importlib.import_module(module_name)
        original = getattr(module, name)

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            result = await original(*args, **kwargs)
            stats.setdefault(key, []).append([started, time.monotonic() - started, 0.0])
            return result

        setattr(module, name, wrapper)

    timed(
        BatchSubscriber,
        "get_msg",
        "fetch",
        lambda s: s.group_id == COMMANDS_GROUP,
        lambda result, args: len(result),
    )
    timed(EventConsumer, "deliver", "deliver", lambda s: s.group_id == COMMANDS_GROUP, lambda result, args: len(result))
    timed(ObservedConsumer, "commit", "commit", lambda s: s._group_id == COMMANDS_GROUP)
    timed(OutboxRelay, "_publish_batch", "relay", lambda s: True, lambda result, args: result)
    timed(Sender, "_send_produce_req", "produce", lambda s: True, lambda result, args: len(args[1]))
    timed(EventConsumer, "_apply_together", "phase:transaction", lambda s: s.group_id == COMMANDS_GROUP)
    for step in RELAY_PHASES:
        timed(OutboxRelay, step, f"relay:{step}", lambda s: True)
    for module, step in COMMAND_PHASES:
        timed_function(module, step, f"phase:{step}")

    @event.listens_for(Engine, "before_cursor_execute")
    def count(*args: Any) -> None:
        statements[0] += 1

    async def watch_loop() -> None:
        while True:
            asked = time.monotonic()
            await asyncio.sleep(0.01)
            stats["loop_lag"].append([asked, time.monotonic() - asked - 0.01, 0.0])

    service = create_service()
    original_start = service.start

    async def start() -> None:
        await original_start()
        service._bench_watch = asyncio.create_task(watch_loop())  # type: ignore[attr-defined]

    service.start = start  # type: ignore[method-assign]

    def dump(*_: Any) -> None:
        # On the bench's signal, in the main thread: a thread dumping on a timer held the GIL from the loop.
        snapshot: dict[str, Any] = dict(stats)
        snapshot["statements"] = [[time.monotonic(), float(statements[0]), 0.0]]
        stats_path.with_suffix(".tmp").write_text(json.dumps(snapshot))
        stats_path.with_suffix(".tmp").replace(stats_path)

    signal.signal(signal.SIGUSR1, dump)
    dump()
    run_http(lambda: service, service.settings)


# --- the bench ---


def cpu_of(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


async def wait_for(dsn: str, query: str, wanted: int, limit: float, *args: Any) -> float:
    """Seconds until `query` (one number) reaches `wanted`; exits if it takes longer than `limit`."""
    connection = await asyncpg.connect(dsn)
    started = time.monotonic()
    try:
        while time.monotonic() - started < limit:
            if (await connection.fetchval(query, *args)) >= wanted:
                return time.monotonic() - started
            await asyncio.sleep(0.1)
    finally:
        await connection.close()
    raise SystemExit(f"not reached within {limit:.0f} s: {query} >= {wanted}")


async def publish_commands(bootstrap: str, accounts: int, count: int, skip: int) -> float:
    """`count` lockbox commands at once (after the `skip` first ones of the plan: earlier rounds); epoch sent."""
    today = datetime.now(UTC).date()
    work = itertools.islice(plan(bills_of(accounts)), skip, None)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        pending = []
        for _ in range(count):
            bill, overpay = next(work)
            value, _ = lockbox_command(bill, overpay, f"bench-lockbox-{uuid.uuid4().hex}", today)
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
    return time.time()


async def table_figures(dsn: str, since: float) -> dict[str, Any]:
    """Batch sizes and gaps of the commands consumer, the relay's batches and outbox waits, from the tables."""
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT extract(epoch FROM processed_at) AS at, count(*) AS n FROM payments.inbox "
            "WHERE consumer = 'commands' AND processed_at >= to_timestamp($1) GROUP BY processed_at ORDER BY 1",
            since,
        )
        starts = [float(r["at"]) for r in rows]
        waits = await connection.fetch(
            "SELECT extract(epoch FROM published_at - created_at) * 1000 AS ms FROM payments.outbox "
            "WHERE created_at >= to_timestamp($1) AND published_at IS NOT NULL",
            since,
        )
        relay_batches = await connection.fetch(
            "SELECT count(*) AS n FROM payments.outbox WHERE created_at >= to_timestamp($1) "
            "AND published_at IS NOT NULL GROUP BY published_at",
            since,
        )
        return {
            "batch": percentiles([float(r["n"]) for r in rows]),
            "batches": len(rows),
            "gap_ms": percentiles([(b - a) * 1000 for a, b in itertools.pairwise(starts)]),
            "relay_batch": percentiles([float(r["n"]) for r in relay_batches]),
            "relay_batches": len(relay_batches),
            "staged_to_acked_ms": percentiles([float(r["ms"]) for r in waits]),
            "rows": len(waits),
        }
    finally:
        await connection.close()


def read_stats(payments: psutil.Process, path: Path) -> dict[str, Any]:
    """Ask the payments process for its timers (SIGUSR1) and read them."""
    written = path.stat().st_mtime_ns
    payments.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 30
    while path.stat().st_mtime_ns == written and time.monotonic() < deadline:
        time.sleep(0.05)
    return dict(json.loads(path.read_text()))


def process_figures(stats: dict[str, Any], since: float, until: float) -> dict[str, Any]:
    """The timers the payments process recorded within [since, until] (its monotonic clock)."""

    def within(key: str) -> list[list[float]]:
        return [s for s in stats[key] if since <= s[0] <= until]

    fetches = [s for s in within("fetch") if s[2] > 0]
    delivers = within("deliver")
    # A gap: from the end of one batch's transaction to the start of the next one's (commit, fetch, the loop).
    gaps = [(b[0] - (a[0] + a[1])) * 1000 for a, b in itertools.pairwise(delivers)]
    relay = [s for s in within("relay") if s[2] > 0]
    return {
        "fetch_ms": percentiles([s[1] * 1000 for s in fetches]),
        "deliver_ms": percentiles([s[1] * 1000 for s in delivers]),
        "deliver_size": percentiles([s[2] for s in delivers]),
        "commit_ms": percentiles([s[1] * 1000 for s in within("commit")]),
        "between_ms": percentiles(gaps),
        "relay_ms": percentiles([s[1] * 1000 for s in relay]),
        "relay_size": percentiles([s[2] for s in relay]),
        "produce_ms": percentiles([s[1] * 1000 for s in within("produce")]),
        "produce_requests": len(within("produce")),
        "relay_busy_share": sum(s[1] for s in relay) / max(until - since, 1e-9),
        "deliver_busy_share": sum(s[1] for s in delivers) / max(until - since, 1e-9),
        "loop_lag_ms": percentiles([s[1] * 1000 for s in within("loop_lag")]),
        "statements": stats["statements"][0][1],
    }


def phase_table(stats: dict[str, Any], since: float, until: float, commands: int) -> str:
    """Per step of a commands batch and of a relay batch: ms per batch p50/p99/max, the total, its share."""

    def within(key: str) -> list[float]:
        return [s[1] for s in stats.get(key, []) if since <= s[0] <= until]

    lines = [f"{'step':<34} {'ms p50 / p99 / max':>24} {'total s':>8} {'share':>6} {'us/command':>10}"]

    def line(name: str, durations: list[float], whole: float) -> None:
        found = percentiles([d * 1000 for d in durations])
        total = sum(durations)
        lines.append(
            f"{name:<34} {dist(found):>24} {total:>8.2f} {100 * total / max(whole, 1e-9):>5.0f}% "
            f"{1e6 * total / commands:>10.0f}"
        )

    transaction = within("phase:transaction")
    whole = sum(transaction)
    line(f"commands batch ({len(transaction)} batches)", transaction, whole)
    for _, step in COMMAND_PHASES:
        line(f"  {step}", within(f"phase:{step}"), whole)
    rest = whole - sum(sum(within(f"phase:{step}")) for _, step in COMMAND_PHASES)
    lines.append(
        f"{'  rest (parse, allocate, rows, commit)':<34} {'':>24} {rest:>8.2f} {100 * rest / max(whole, 1e-9):>5.0f}%"
    )
    relay = [s for s in stats.get("relay", []) if since <= s[0] <= until and s[2] > 0]
    relay_whole = sum(s[1] for s in relay)
    line(f"relay batch ({len(relay)} batches)", [s[1] for s in relay], relay_whole)
    for step in RELAY_PHASES:
        line(f"  {step}", within(f"relay:{step}"), relay_whole)
    return "\n".join(lines)


def start_profiler(pid: int, raw: Path) -> subprocess.Popen[bytes]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    record = ["record", "--pid", str(pid), "--format", "raw", "--output", str(raw), "--rate", "200"]
    return subprocess.Popen([spy, *record], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def dist(found: dict[str, float | None]) -> str:
    return " / ".join(number(found[k]) for k in ("p50", "p99", "max"))


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f} {five:.1f}"


async def one_round(
    args: argparse.Namespace, dsn: str, bootstrap: str, payments: psutil.Process, stats: Path, round_no: int
) -> None:
    postgres_dir = Path(args.pgdata)
    print(f"round {round_no}: load {load()} (uptime load average)", flush=True)
    idle_cpu, idle_pg, idle_at = cpu_of(payments), _postgres_cpu(postgres_dir), time.monotonic()
    await asyncio.sleep(args.idle_seconds)
    idle_rate = (cpu_of(payments) - idle_cpu) / (time.monotonic() - idle_at)
    idle_pg_rate = (_postgres_cpu(postgres_dir) - idle_pg) / (time.monotonic() - idle_at)
    before = read_stats(payments, stats)["statements"][0][1]
    connection = await asyncpg.connect(dsn)
    base = await connection.fetchval("SELECT count(*) FROM payments.payments")
    await connection.close()
    since_epoch, since_mono = time.time(), time.monotonic()
    cpu0, pg0 = cpu_of(payments), _postgres_cpu(postgres_dir)
    profiler = None
    if args.profile:
        raw = Path(args.pgdata).parent / f"payments-{round_no}.raw.txt"
        profiler = start_profiler(payments.pid, raw)
    sent = await publish_commands(bootstrap, args.accounts, args.commands, round_no * args.commands)
    published = sent - since_epoch
    await wait_for(dsn, "SELECT count(*) FROM payments.payments", base + args.commands, args.limit)
    posted = time.monotonic() - since_mono
    await wait_for(
        dsn,
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM payments.outbox WHERE published_at IS NULL) THEN 0 ELSE 1 END",
        1,
        args.limit,
    )
    relayed = time.monotonic() - since_mono
    cpu, pg = cpu_of(payments) - cpu0, _postgres_cpu(postgres_dir) - pg0
    until_mono = time.monotonic()
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)
        profiler.wait(60)
    recorded = read_stats(payments, stats)
    inside = process_figures(recorded, since_mono, until_mono)
    tables = await table_figures(dsn, since_epoch)
    n = args.commands
    less_idle = cpu - idle_rate * relayed
    print(
        f"commands    {n:,} published in {published:.2f} s; all posted after {posted:.2f} s ({n / posted:,.1f}/s), "
        f"all relayed after {relayed:.2f} s ({n / relayed:,.1f}/s)\n"
        f"cpu         payments {1000 * cpu / n:.3f} ms/command ({1000 * less_idle / n:.3f} less idle "
        f"{100 * idle_rate:.1f}% of a core), postgres {1000 * pg / n:.3f} ms/command "
        f"({1000 * (pg - idle_pg_rate * relayed) / n:.3f} less idle)\n"
        f"statements {(inside['statements'] - before) / n:.2f} per command\n"
        f"consumer    batches {tables['batches']:,}, size p50/p99/max {dist(tables['batch'])}; ms between batch "
        f"starts p50/p99/max {dist(tables['gap_ms'])}\n"
        f"  inside    transaction (deliver) ms {dist(inside['deliver_ms'])}; offset commit ms "
        f"{dist(inside['commit_ms'])}; fetch (getmany) ms {dist(inside['fetch_ms'])}; end of one transaction -> "
        f"start of the next ms {dist(inside['between_ms'])}; busy in transactions "
        f"{100 * inside['deliver_busy_share']:.0f}% of the time\n"
        f"relay       batches {tables['relay_batches']:,}, size p50/p99/max {dist(tables['relay_batch'])}; batch ms "
        f"{dist(inside['relay_ms'])}; busy {100 * inside['relay_busy_share']:.0f}% of the time; staged -> acked ms "
        f"p50/p99/max {dist(tables['staged_to_acked_ms'])} ({tables['rows']:,} rows)\n"
        f"produce     {inside['produce_requests']:,} requests to the broker "
        f"({inside['produce_requests'] / max(tables['relay_batches'], 1):.1f} per relay batch), ms p50/p99/max "
        f"{dist(inside['produce_ms'])}\n"
        f"loop        a 10 ms timer woke late by ms p50/p99/max {dist(inside['loop_lag_ms'])}\n"
        f"load        {load()} (uptime load average, after)",
        flush=True,
    )
    print(phase_table(recorded, since_mono, until_mono, n), flush=True)
    if profiler is not None:
        busiest(raw, top=40)


async def run(args: argparse.Namespace, dsn: str, bootstrap: str, payments: psutil.Process, stats: Path) -> None:
    await publish_reference_data(bootstrap, args.accounts)
    await wait_for(dsn, "SELECT count(*) FROM payments.receivables WHERE payment_type = 'bill'", args.accounts, 600)
    for round_no in range(args.repeat):
        await one_round(args, dsn, bootstrap, payments, stats, round_no)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--commands", type=int, default=10000)
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=1, help="rounds of --commands, one after another")
    parser.add_argument("--limit", type=float, default=900, help="longest wait for a round")
    parser.add_argument("--profile", action="store_true", help="sample payments with py-spy, print the busiest")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # the payments process itself
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    with tempfile.TemporaryDirectory(prefix="paydesk-bench-pipeline-") as workdir:
        root = Path(workdir)
        args.pgdata = str(root / "pgdata")
        postgres = EmbeddedPostgres(root / "pgdata", delete_on_stop=True)
        kafka = EmbeddedKafka(port=free_port(), data_dir=root / "kafka", log_file=root / "kafka.log")
        url = postgres.start()
        bootstrap = kafka.start()
        child: subprocess.Popen[bytes] | None = None
        try:
            upgrade("payments", url)
            asyncio.run(provision_topics(bootstrap, partitions=6))
            stats = root / "stats.json"
            env = {
                **os.environ,
                "DATABASE_URL": url,
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "PAYMENTS_HTTP_PORT": str(free_port()),
                "PAYDESK_DEVELOPMENT": "true",
            }
            with open(root / "payments.log", "wb") as log_file:
                child = subprocess.Popen(
                    [sys.executable, __file__, "--serve", str(stats)], env=env, stdout=log_file, stderr=log_file
                )
            deadline = time.monotonic() + 120
            while not stats.exists():
                if time.monotonic() > deadline or child.poll() is not None:
                    raise SystemExit(f"payments did not start: {(root / 'payments.log').read_text()[-2000:]}")
                time.sleep(0.2)
            dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
            asyncio.run(run(args, dsn, bootstrap, psutil.Process(child.pid), stats))
        finally:
            if child is not None:
                child.terminate()
                try:
                    child.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    child.kill()
            kafka.stop()
            postgres.stop()


if __name__ == "__main__":
    main()
