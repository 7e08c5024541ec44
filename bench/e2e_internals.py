"""What happened inside the pipeline during a `bench/e2e.py` run, read back from the services' own tables.

No instrumentation is needed: an inbox row's `processed_at` and an outbox row's `created_at` are `now()`, the start
of the transaction that applied or staged them, so rows sharing one are one consumer batch; the relay marks a whole
batch published with one timestamp. From these:

- each consumer's batch sizes (records applied per transaction) and how far apart its batches start while it has a
  backlog (what one batch costs, fetch and offset commit included);
- each relay's batch sizes and how long a row waits in the outbox (staged to acknowledged by Kafka);
- the hop from `payment.posted` acknowledged by Kafka (payments' outbox) to receipts starting to apply it.
"""

from __future__ import annotations

import itertools
from typing import Any

import asyncpg

from bench.e2e_report import number, percentiles

# (schema, inbox consumer name): the lockbox path's consumers.
CONSUMERS = (("payments", "commands"), ("receipts", "payments"), ("credit_notes", "payments"), ("kpi", "payments"))
RELAYS = ("payments", "receipts")


async def internals(dsn: str, since: float) -> dict[str, Any]:
    """Figures for everything applied or staged after `since` (epoch seconds)."""
    connection = await asyncpg.connect(dsn)
    try:
        figures: dict[str, Any] = {"consumers": {}, "relays": {}}
        for schema, consumer in CONSUMERS:
            rows = await connection.fetch(
                f"SELECT extract(epoch FROM processed_at) AS at, count(*) AS n FROM {schema}.inbox "
                "WHERE consumer = $1 AND processed_at >= to_timestamp($2) GROUP BY processed_at ORDER BY 1",
                consumer,
                since,
            )
            sizes = [float(r["n"]) for r in rows]
            starts = [float(r["at"]) for r in rows]
            gaps = [(b - a) * 1000 for a, b in itertools.pairwise(starts)]
            figures["consumers"][f"{schema}.{consumer}"] = {
                "batches": len(sizes),
                "records": int(sum(sizes)),
                "size": percentiles(sizes),
                "mean_size": sum(sizes) / len(sizes) if sizes else None,
                "gap_ms": percentiles(gaps),
            }
        for schema in RELAYS:
            waits = await connection.fetch(
                f"SELECT extract(epoch FROM published_at - created_at) * 1000 AS ms FROM {schema}.outbox "
                "WHERE created_at >= to_timestamp($1) AND published_at IS NOT NULL",
                since,
            )
            batches = await connection.fetch(
                f"SELECT count(*) AS n FROM {schema}.outbox WHERE created_at >= to_timestamp($1) "
                "AND published_at IS NOT NULL GROUP BY published_at",
                since,
            )
            sizes = [float(r["n"]) for r in batches]
            figures["relays"][schema] = {
                "batches": len(sizes),
                "size": percentiles(sizes),
                "mean_size": sum(sizes) / len(sizes) if sizes else None,
                "wait_ms": percentiles([float(r["ms"]) for r in waits]),
            }
        hop = await connection.fetch(
            "SELECT extract(epoch FROM i.processed_at - o.published_at) * 1000 AS ms FROM payments.outbox o "
            "JOIN receipts.inbox i ON i.event_id = o.event_id AND i.consumer = 'payments' "
            "WHERE o.created_at >= to_timestamp($1) AND o.published_at IS NOT NULL",
            since,
        )
        figures["posted_to_receipts_ms"] = percentiles([float(r["ms"]) for r in hop])
        return figures
    finally:
        await connection.close()


def lines(figures: dict[str, Any]) -> list[str]:
    """The figures as a few printed lines."""

    def dist(found: dict[str, float | None]) -> str:
        return " / ".join(number(found[k]) for k in ("p50", "p99", "max"))

    out = ["| consumer | batches | records | mean batch | batch p50 / p99 / max | ms between batches p50 / p99 / max |"]
    out.append("|---|--:|--:|--:|--:|--:|")
    for name, f in figures["consumers"].items():
        out.append(
            f"| {name} | {f['batches']:,} | {f['records']:,} | {number(f['mean_size'])} | {dist(f['size'])} "
            f"| {dist(f['gap_ms'])} |"
        )
    out.append("")
    out.append("| relay | batches | mean batch | batch p50 / p99 / max | staged -> acknowledged ms p50 / p99 / max |")
    out.append("|---|--:|--:|--:|--:|")
    for name, f in figures["relays"].items():
        out.append(
            f"| {name} | {f['batches']:,} | {number(f['mean_size'])} | {dist(f['size'])} | {dist(f['wait_ms'])} |"
        )
    out.append("")
    out.append(
        "payment.posted acknowledged by Kafka -> receipts starts applying it, ms p50 / p99 / max: "
        + dist(figures["posted_to_receipts_ms"])
    )
    return out
