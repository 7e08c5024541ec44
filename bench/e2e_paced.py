"""The paced mode of `bench/e2e.py` (issue 17: "memory of every process flat within 10% over a 10-minute run at half
the maximum"): an open loop at a fixed rate instead of a closed-loop burst, and a memory verdict per process.

Open loop: each payment is sent at its scheduled moment whether or not earlier ones were answered, as a bank's
lockbox feed or a queue at the counters would bring them; a system that cannot keep up shows it as a backlog (and
as memory), not as a slower benchmark. A send that leaves later than its moment (the benchmark itself was starved
of CPU) is counted, so a run that did not deliver its rate says so.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import date
from typing import Any

import aiohttp
from aiokafka import AIOKafkaProducer

from bench.e2e_report import Memory, Sample, memory_over_run, memory_rows, number, percentiles, table
from bench.e2e_workload import Bill, Payment, Tracker, lockbox_command, plan, post_payment
from shared.contracts import CONTENT_TYPE, Topic

LATE_SECONDS = 1.0  # a send this much behind its moment counts as late


async def until(moment: float) -> None:
    """Sleep until the wall-clock `moment` (at once if it passed)."""
    delay = moment - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


def acknowledged(payment: Payment) -> Callable[[asyncio.Future[Any]], None]:
    """Marks a lockbox payment accepted when Kafka acknowledged its command."""

    def mark(sent: asyncio.Future[Any]) -> None:
        if not sent.cancelled() and sent.exception() is None:
            payment.accepted = time.time()

    return mark


def lateness(delays: list[float]) -> dict[str, Any]:
    """How far behind their moments the sends left: percentiles in ms, and how many were over a second late."""
    return {
        "late_ms": percentiles([d * 1000 for d in delays]),
        "late_sends": sum(1 for d in delays if d > LATE_SECONDS),
    }


async def paced_lockbox(
    bootstrap: str, tracker: Tracker, bills: list[Bill], rate: float, seconds: float, today: date
) -> dict[str, Any]:
    """`rate` `payment.record_requested` commands per second on `payments.commands.v1` for `seconds`, open loop.
    A command counts as accepted when Kafka acknowledged it (acks=all)."""
    work = plan(bills)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    started = time.time()
    delays: list[float] = []
    pending: list[asyncio.Future[Any]] = []
    try:
        for index in range(int(rate * seconds)):
            moment = started + index / rate
            await until(moment)
            bill, overpay = next(work)
            key = f"bench-lockbox-{uuid.uuid4().hex}"
            value, amount = lockbox_command(bill, overpay, key, today)
            payment = Payment(key, "lockbox", time.time(), amount)
            delays.append(payment.requested - moment)
            tracker.payments[key] = payment
            headers = [("content-type", CONTENT_TYPE.encode())]
            sent = await producer.send(Topic.PAYMENTS_COMMANDS, value, key=bill.account.encode(), headers=headers)
            sent.add_done_callback(acknowledged(payment))
            pending.append(sent)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return {"started": started, "ended": time.time(), "rate": rate, **lateness(delays)}


async def paced_tellers(
    base: str,
    token: str,
    tracker: Tracker,
    bills: list[Bill],
    count: int,
    per_teller: float,
    seconds: float,
    today: date,
) -> dict[str, Any]:
    """`count` tellers, each sending `per_teller` payments per second for `seconds` (staggered so the counters do not
    send together), open loop: a payment goes at its moment whether the teller's last one was answered or not."""
    work = plan(bills)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    delays: list[float] = []
    in_flight = most_in_flight = 0
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)  # open loop: no pool to queue behind
    async with aiohttp.ClientSession(
        base_url=base, connector=connector, headers=headers, timeout=aiohttp.ClientTimeout(60)
    ) as client:

        async def post(bill: Bill, overpay: bool) -> None:
            nonlocal in_flight, most_in_flight
            in_flight += 1
            most_in_flight = max(most_in_flight, in_flight)
            try:
                status, elapsed_ms = await post_payment(client, tracker, bill, overpay, today)
            finally:
                in_flight -= 1
            latencies.append(elapsed_ms)
            statuses[status] = statuses.get(status, 0) + 1

        async def teller(offset: float) -> None:
            sends: list[asyncio.Task[None]] = []
            for index in range(int(per_teller * seconds)):
                moment = started + offset + index / per_teller
                await until(moment)
                delays.append(time.time() - moment)
                sends.append(asyncio.create_task(post(*next(work))))
            await asyncio.gather(*sends)

        started = time.time()
        await asyncio.gather(*(teller(n / (count * per_teller)) for n in range(count)))
        ended = time.time()
    return {
        "started": started,
        "ended": ended,
        "rate": count * per_teller,
        "latency_ms": percentiles(latencies),
        "statuses": statuses,
        "most_in_flight": most_in_flight,
        **lateness(delays),
    }


def memory_table(
    samples: dict[str, list[Sample]], warm_at: float, end_at: float
) -> tuple[list[list[str]], dict[str, dict[str, Any]]]:
    """Per process: memory (PSS; Postgres: USS plus shared pages once) after warm-up, at the end of the load and the
    most between, and whether it stayed flat."""
    memories: list[Memory] = []
    for name, rows in sorted(samples.items()):
        found = memory_over_run(name, [(sample.at, sample.memory_mib) for sample in rows], warm_at, end_at)
        if found is not None:
            memories.append(found)
    figures = {
        m.process: {"memory_warm_mib": m.warm, "memory_end_mib": m.end, "memory_max_mib": m.most, "flat": m.flat}
        for m in memories
    }
    return memory_rows(memories, not_judged=("bench",)), figures


def shared_line(samples: dict[str, list[Sample]], end_at: float) -> str | None:
    """Postgres's memory at the end of the load in its two parts, or None without a sample of it."""
    found = [sample for sample in samples.get("postgres", []) if sample.at <= end_at]
    if not found:
        return None
    last = found[-1]
    first = found[0]
    return (
        f"Postgres at the end of the load: {last.memory_mib - last.shared_mib:,.0f} MiB private (its processes' USS) "
        f"+ {last.shared_mib:,.0f} MiB shared once = {last.memory_mib:,.0f} MiB; the sum of their RSS was "
        f"{last.rss_mib:,.0f} MiB. Of it shared memory (shared buffers, bounded by shared_buffers) "
        f"{first.shmem_mib:,.0f} -> {last.shmem_mib:,.0f} MiB and processes {first.processes} -> {last.processes} "
        "from the first sample."
    )


def paced_report(
    phases: dict[str, dict[str, Any]],
    samples: dict[str, list[Sample]],
    origin: float,
    warmup: float,
    load_ended: float,
) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """The paced run's lines for the report (did it keep its pace; memory per process) and the memory figures."""
    rows, memory = memory_table(samples, origin + warmup, load_ended)
    flat = all(m["flat"] for name, m in memory.items() if name != "bench")
    kept = []
    for path, phase in phases.items():
        line = f"{path} at {phase['rate']:g}/s: {phase['late_sends']:,} sends more than {LATE_SECONDS:g} s late"
        line += f" (p99 {number(phase['late_ms']['p99'])} ms behind their moment)"
        if "most_in_flight" in phase:
            line += f", at most {phase['most_in_flight']:,} requests in flight"
        kept.append(line)
    lines = [
        *kept,
        "",
        table(["process", "memory MiB after warm-up", "at the end", "max", "growth", "flat within 10%"], rows),
        "",
        "Memory: each process's PSS (proportional set size, /proc/<pid>/smaps_rollup; a service with its children), "
        "so a shared page counts for its share; Postgres: the sum of its processes' USS plus the pages they share "
        "(shared buffers) once, where summed RSS counted shared buffers once per backend that touched them.",
        *([found] if (found := shared_line(samples, load_ended)) else []),
        f"After warm-up: the first sample from {warmup:g} s; at the end: the last before the paced load stopped "
        f"({load_ended - origin:.0f} s); growth: the max over the memory after warm-up. The benchmark's own process "
        "keeps every payment it tracks, so it is not judged.",
        f"Memory flat within 10% in every process: {'yes' if flat else 'no'}",
        "",
    ]
    return lines, memory
