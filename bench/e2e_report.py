"""Pure helpers of `bench/e2e.py`: percentiles, rates and the printed table (no I/O, unit-tested)."""

from __future__ import annotations

from collections.abc import Sequence


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
