"""One chaos run: start the system, load the accounts, drive the workload while the faults land, drain, check.

The drain has no time budget: it waits while the figures keep moving and gives up only when nothing has changed
for `stall_seconds` (a bound for a stuck system, generous enough for a busy machine).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from paydesk.sample_data import generate_accounts
from shared.contracts import CONTENT_TYPE, Topic
from tests.chaos.faults import DEFAULT_KINDS, Injector, plan_faults
from tests.chaos.invariants import Invariant, account_positions, check_all, signature
from tests.chaos.report import Report
from tests.chaos.system import ChaosSystem
from tests.chaos.workload import Driver, Input, bills_of, plan_inputs


@dataclass
class ChaosSettings:
    seed: int = 7
    minutes: float = 10.0
    payments: int = 20_000
    accounts: int = 2_000
    faults: tuple[str, ...] = DEFAULT_KINDS
    faults_per_minute: float = 6.0
    instances: int = 2
    stall_seconds: float = 900.0
    out: Path = field(default_factory=lambda: Path("chaos-results"))
    keep: bool = False

    def echo(self) -> dict[str, object]:
        return {
            "minutes": self.minutes,
            "payments": self.payments,
            "accounts": self.accounts,
            "faults": ",".join(self.faults),
            "faults_per_minute": self.faults_per_minute,
            "instances": self.instances,
        }


async def load_accounts(system: ChaosSystem, accounts: int, seed: int) -> None:
    """The billing system's accounts and bills, published once, then waited for in payments and credit_notes."""
    producer = AIOKafkaProducer(bootstrap_servers=system.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        sent = [
            await producer.send(
                Topic.BILLING_RECEIVABLES,
                e.to_bytes(),
                key=e.subject.encode(),
                headers=[("content-type", CONTENT_TYPE.encode())],
            )
            for e in generate_accounts(accounts, seed=seed)
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    connection = await asyncpg.connect(system.dsn)
    try:
        while True:
            known = await connection.fetchval(
                "SELECT (SELECT count(*) FROM payments.receivables WHERE payment_type = 'bill') "
                "+ (SELECT count(*) FROM credit_notes.open_items WHERE payment_type = 'bill')"
            )
            if known >= 2 * accounts:
                return
            system.supervisor.check()
            await asyncio.sleep(0.5)
    finally:
        await connection.close()


async def run_chaos(settings: ChaosSettings, say: Callable[[str], None] = print) -> Report:
    seconds = settings.minutes * 60
    # The harness's own clients retry through every fault; their connection errors are expected, not news.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    report = Report(settings.seed, settings.echo())
    say(
        f"chaos seed {settings.seed}: {settings.payments:,} payments over {settings.accounts:,} accounts, "
        f"{seconds:.0f} s of faults ({', '.join(settings.faults)})"
    )
    system = ChaosSystem(instances_per_service=settings.instances, keep=settings.keep)
    stop = asyncio.Event()
    supervising: asyncio.Task[None] | None = None
    driver: Driver | None = None
    wall = time.monotonic()
    try:
        await system.start()
        say(f"system up: {len(system.instances)} service instances, Kafka {system.bootstrap}, logs {system.logs}")
        report.timings["start"] = time.monotonic() - wall
        supervising = asyncio.create_task(system.supervise(stop))
        bills = bills_of(settings.accounts, settings.seed)
        await load_accounts(system, settings.accounts, settings.seed)
        report.timings["accounts loaded"] = time.monotonic() - wall
        connection = await asyncpg.connect(system.dsn)
        try:
            baseline = await account_positions(connection)
        finally:
            await connection.close()

        inputs = plan_inputs(settings.seed, seconds=seconds, payments=settings.payments, accounts=len(bills))
        faults = plan_faults(
            settings.seed,
            kinds=settings.faults,
            seconds=seconds,
            per_minute=settings.faults_per_minute,
            targets=[i.name for i in system.instances],
        )
        digest = hashlib.sha256(repr((inputs, faults)).encode()).hexdigest()[:16]
        say(f"schedule {digest}: {len(inputs):,} inputs, {len(faults)} faults (derived from the seed alone)")
        driver = Driver(system, bills, date.today(), say=say)
        await driver.start()
        injector = Injector(system, driver, settings.seed, say=say)
        started = time.monotonic()
        await asyncio.gather(driver.run(inputs, started), injector.run(faults, started))
        report.timings["workload and faults"] = time.monotonic() - started
        say("fault window closed; draining")

        drained = time.monotonic()
        checks = await drain(system, inputs, driver, injector, baseline, settings, report, say)
        report.timings["drain"] = time.monotonic() - drained
        report.invariants = checks
        report.faults = [
            {"at": round(at, 1), "kind": f.kind, "target": f.target, "seconds": f.seconds, "note": note}
            for at, f, note in sorted(injector.applied, key=lambda a: a[0])
        ]
        by_kind: dict[str, Counter[str]] = {}
        for item in inputs:
            by_kind.setdefault(item.kind, Counter())[driver.outcomes[item.key].status] += 1
            outcome = driver.outcomes[item.key]
            shown = report.not_accepted.setdefault(item.kind, [])
            if outcome.status != "accepted" and len(shown) < 3:
                shown.append(f"{item.key}: {outcome.status} {outcome.detail[:200]}")
        report.not_accepted = {k: v for k, v in report.not_accepted.items() if v}
        by_kind["malformed"] = Counter({"published": len(injector.malformed)})
        report.inputs = {k: dict(v) for k, v in by_kind.items()}
        report.http_statuses = {k: {str(c): n for c, n in v.items()} for k, v in driver.statuses.items()}
        report.payments = await payment_counts(system.dsn)
    finally:
        # Also on Ctrl-C (this task cancelled): every process the run started is stopped.
        stop.set()
        if supervising is not None:
            supervising.cancel()
            await asyncio.gather(supervising, return_exceptions=True)
        if driver is not None:
            await asyncio.gather(driver.stop(), return_exceptions=True)
        await system.stop()
        report.timings["wall"] = time.monotonic() - wall
    settings.out.mkdir(parents=True, exist_ok=True)
    path = settings.out / f"chaos-seed{settings.seed}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    report.write_json(path)
    say("\n" + report.text() + f"\nreport written to {path}")
    return report


async def drain(
    system: ChaosSystem,
    inputs: list[Input],
    driver: Driver,
    injector: Injector,
    baseline: dict[str, Decimal],
    settings: ChaosSettings,
    report: Report,
    say: Callable[[str], None],
) -> list[Invariant]:
    """Check every 5 s until every invariant holds, nothing has moved for `stall_seconds`, or Ctrl-C (then the
    report still shows where each invariant stood)."""
    started = time.monotonic()
    last, moved = "", time.monotonic()
    checks: list[Invariant] = []
    try:
        while True:
            try:
                checks = await check_all(
                    system.dsn, system.bootstrap, inputs, driver.outcomes, injector.malformed, baseline
                )
            except (KafkaError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                # A read that timed out on a loaded machine is "not yet", never the end of the run (a long run
                # once died here: the DLQ's end offsets took over 40 s to come back).
                say(f"  drain {time.monotonic() - started:5.0f} s: could not read the state yet ({exc!r:.200}); again")
                if time.monotonic() - moved > settings.stall_seconds:
                    report.drain = f"gave up: nothing readable for {settings.stall_seconds:.0f} s"
                    return checks
                await asyncio.sleep(5)
                continue
            if all(c.holds for c in checks):
                report.drain = "every invariant holds"
                return checks
            now = signature(checks)
            if now != last:
                last, moved = now, time.monotonic()
                waiting = [f"{c.name} ({_brief(c)})" for c in checks if not c.holds]
                say(f"  drain {time.monotonic() - started:5.0f} s: waiting for " + "; ".join(waiting))
            elif time.monotonic() - moved > settings.stall_seconds:
                report.drain = f"gave up: nothing changed for {settings.stall_seconds:.0f} s"
                return checks
            await asyncio.sleep(5)
    except asyncio.CancelledError:
        report.drain = f"interrupted after {time.monotonic() - started:.0f} s of draining"
        return checks


def _brief(check: Invariant) -> str:
    return ", ".join(f"{k.strip()} {v}" for k, v in list(check.figures.items())[:4])


async def payment_counts(dsn: str) -> dict[str, int]:
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch("SELECT status, count(*) AS n FROM payments.payments GROUP BY 1 ORDER BY 1")
        channels = await connection.fetch("SELECT channel, count(*) AS n FROM payments.payments GROUP BY 1 ORDER BY 1")
    finally:
        await connection.close()
    return {
        "total": sum(r["n"] for r in rows),
        **{r["status"]: r["n"] for r in rows},
        **{f"channel {r['channel']}": r["n"] for r in channels},
    }
