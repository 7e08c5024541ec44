"""Pure helpers of `bench/e2e.py`: percentiles, rates, the printed table and the paced run's memory verdict (no I/O,
unit-tested)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from bench.e2e_workload import Tracker


def percentile(values: Sequence[float], pct: float) -> float | None:
    """The nearest-rank percentile (`pct` in 0..100) of `values`, or None when there are none."""
    if not values:
        return None
    if not 0 <= pct <= 100:
        raise ValueError(f"a percentile is between 0 and 100, not {pct}")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil(n * p / 100), at least the first
    return float(ordered[int(rank) - 1])


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    return {"p50": percentile(values, 50), "p95": percentile(values, 95), "p99": percentile(values, 99)} | {
        "max": max(values) if values else None
    }


def rate(count: int, start: float, end: float | None) -> float | None:
    """Events per second between `start` and `end` (None without events or without time between)."""
    if count <= 0 or end is None or end <= start:
        return None
    return count / (end - start)


def per_second(timestamps: Sequence[float], origin: float) -> list[int]:
    """How many of `timestamps` fell in each whole second after `origin` (for the chart)."""
    buckets: list[int] = []
    for stamp in timestamps:
        second = int(stamp - origin)
        if second < 0:
            continue
        if second >= len(buckets):
            buckets.extend([0] * (second + 1 - len(buckets)))
        buckets[second] += 1
    return buckets


def number(value: float | int | str | None, digits: int = 1) -> str:
    """A figure for the table: thousands separated, `-` for nothing."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, its columns padded to the widest cell (text left, figures right)."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            str(cell).ljust(width) if index == 0 else str(cell).rjust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (width + 2) if i == 0 else "-" * (width + 1) + ":" for i, width in enumerate(widths))
    return "\n".join([line(headers), rule + "|", *(line(row) for row in rows)])


class Sample(NamedTuple):
    """One process (with its children) at one moment, as the benchmark's sampler saw it."""

    at: float  # epoch seconds
    cpu_percent: float  # of one core, over the second before
    rss_mib: float
    cpu_seconds: float  # CPU used since the sampler started, processes that exited since included
    memory_mib: float  # what the memory check judges: PSS; for Postgres, its USS plus its shared pages once
    shared_mib: float = 0.0  # of `memory_mib`, the pages shared between the group's processes (Postgres's)
    shmem_mib: float = 0.0  # of `memory_mib`, shared memory (Postgres's shared buffers) once, however it is mapped
    processes: int = 0  # how many processes the group had (Postgres: the postmaster and every backend)


class Rollup(NamedTuple):
    """One process's memory from /proc/<pid>/smaps_rollup, in MiB."""

    rss: float  # every resident page it maps, shared ones in full
    pss: float  # proportional: a page shared by n processes counts 1/n
    uss: float  # unique: the pages no other process maps
    shmem: float = 0.0  # its proportional share of shared memory (Pss_Shmem): summed over the sharers, counted once


def rollup_of(text: str) -> Rollup:
    """Parse /proc/<pid>/smaps_rollup (lines like `Pss:  1234 kB`)."""
    kilobytes: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        figures = rest.split()
        if len(figures) == 2 and figures[1] == "kB" and figures[0].isdigit():
            kilobytes[name.strip()] = int(figures[0])
    private = sum(kilobytes.get(name, 0) for name in ("Private_Clean", "Private_Dirty", "Private_Hugetlb"))
    return Rollup(
        kilobytes.get("Rss", 0) / 1024,
        kilobytes.get("Pss", 0) / 1024,
        private / 1024,
        kilobytes.get("Pss_Shmem", 0) / 1024,
    )


def proportional_memory(rollups: Sequence[Rollup]) -> float:
    """A service (with its children), the broker or the benchmark: the sum of their PSS, so a library page shared
    with other processes counts only for its share."""
    return sum(r.pss for r in rollups)


def shared_once_memory(rollups: Sequence[Rollup]) -> tuple[float, float]:
    """Postgres: (the sum of its processes' USS, their shared pages once). Its shared buffers are mapped by every
    backend that touched them, so summed RSS counts them once per backend; a process's PSS less its USS is its share
    of the pages it shares, so summed over the processes sharing them each such page counts once."""
    private = sum(r.uss for r in rollups)
    shared = sum(max(0.0, r.pss - r.uss) for r in rollups)
    return private, shared


def cpu_used(samples: Sequence[tuple[float, float]], start: float, end: float) -> float | None:
    """CPU seconds used between `start` and `end`, from (time, CPU seconds so far) samples taken about once a second,
    linear between two samples (and flat before the first and after the last). None without samples."""
    if not samples:
        return None
    ordered = sorted(samples)

    def at(moment: float) -> float:
        if moment <= ordered[0][0]:
            return ordered[0][1]
        for (t0, v0), (t1, v1) in itertools.pairwise(ordered):
            if moment <= t1:
                return v0 + (v1 - v0) * (moment - t0) / (t1 - t0) if t1 > t0 else v1
        return ordered[-1][1]

    return max(0.0, at(end) - at(start))


def cpu_per_payment(
    samples: Mapping[str, Sequence[tuple[float, float]]], start: float, end: float, payments: int
) -> dict[str, float]:
    """Milliseconds of CPU per payment of each process between `start` and `end` (idle work included: it is what
    the box spends while it processes `payments`). Empty when no payment was processed."""
    if payments <= 0:
        return {}
    found = {name: cpu_used(rows, start, end) for name, rows in samples.items()}
    return {name: used * 1000 / payments for name, used in found.items() if used is not None}


def ceiling(cores: int, ms_per_payment: float) -> float | None:
    """Payments per second the machine's cores could carry if CPU were the only limit (None for no CPU)."""
    return cores * 1000 / ms_per_payment if ms_per_payment > 0 else None


def cpu_rows(
    per_phase: Mapping[str, Mapping[str, float]], cores: int, load_generator: str = "bench"
) -> tuple[list[list[str]], dict[str, dict[str, float | None]]]:
    """The CPU table: ms per payment of each process in each phase, the totals with and without the load generator,
    and the throughput ceiling each total implies on `cores`; and the same as figures."""
    phases = list(per_phase)
    names = sorted({name for figures in per_phase.values() for name in figures})
    rows = [[name, *(number(per_phase[phase].get(name)) for phase in phases)] for name in names]
    totals: dict[str, dict[str, float | None]] = {}
    for phase in phases:
        everything = sum(per_phase[phase].values())
        system = everything - per_phase[phase].get(load_generator, 0.0)
        totals[phase] = {
            "total_ms": everything,
            "system_ms": system,
            "ceiling_per_second": ceiling(cores, everything),
            "system_ceiling_per_second": ceiling(cores, system),
        }
    rows += [
        ["total", *(number(totals[phase]["total_ms"]) for phase in phases)],
        [f"total without {load_generator}", *(number(totals[phase]["system_ms"]) for phase in phases)],
        [f"ceiling on {cores} cores (payments/s)", *(number(totals[phase]["ceiling_per_second"]) for phase in phases)],
        [
            f"ceiling without {load_generator} (payments/s)",
            *(number(totals[phase]["system_ceiling_per_second"]) for phase in phases),
        ],
    ]
    return rows, totals


FLAT_WITHIN = 0.10  # issue 17: memory of every process flat within 10% over a 10-minute run


@dataclass(frozen=True)
class Memory:
    """One process's memory over a paced run: after warm-up, at the end of the load, and the most after warm-up."""

    process: str
    warm: float
    end: float
    most: float

    @property
    def growth(self) -> float:
        """The most it grew after warm-up, as a fraction of its memory at warm-up (0.1 is 10%)."""
        return self.most / self.warm - 1 if self.warm > 0 else 0.0

    @property
    def flat(self) -> bool:
        """Flat: it never grew more than 10% above its memory at warm-up (shrinking is fine)."""
        return self.most <= self.warm * (1 + FLAT_WITHIN)


def memory_over_run(
    process: str, samples: Sequence[tuple[float, float]], warm_at: float, end_at: float
) -> Memory | None:
    """`samples` are (time, memory MiB); the warm-up figure is the first sample at or after `warm_at`, the end the
    last at or before `end_at`. None when no sample falls between them."""
    window = sorted((stamp, mib) for stamp, mib in samples if warm_at <= stamp <= end_at)
    if not window:
        return None
    return Memory(process, warm=window[0][1], end=window[-1][1], most=max(mib for _, mib in window))


def memory_rows(memories: Sequence[Memory], not_judged: Sequence[str] = ()) -> list[list[str]]:
    """Rows of the memory table; a process in `not_judged` (the benchmark itself) gets no verdict."""
    return [
        [
            m.process,
            number(m.warm, 0),
            number(m.end, 0),
            number(m.most, 0),
            f"{m.growth * 100:+.1f}%",
            "-" if m.process in not_judged else ("yes" if m.flat else "no"),
        ]
        for m in memories
    ]


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
