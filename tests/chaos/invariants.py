"""What must hold once the system has drained, read straight from every service's tables and the DLQ topics.

Each check returns its figures and the first few offending ids, so a failing run says what and where.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.contracts.events import COLLECTED_STATUSES
from shared.contracts.topics import dlq
from shared.messaging import DLQ_REASON_HEADER
from tests.chaos.faults import INPUT_TOPICS, MALFORMED_HEADER, Malformed
from tests.chaos.workload import PAYMENT_KINDS, Input, Outcome

SHOWN = 10  # offending ids listed per invariant


@dataclass
class Invariant:
    name: str
    holds: bool
    figures: dict[str, Any]
    problems: list[str] = field(default_factory=list)


@dataclass
class DeadLetter:
    topic: str
    key: str
    reason: str
    malformed: str


async def read_dead_letters(bootstrap: str) -> list[DeadLetter]:
    """Every record in every input topic's DLQ, from the beginning up to the current end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=4 << 20
    )
    await consumer.start()
    found: list[DeadLetter] = []
    try:
        partitions = [
            TopicPartition(dlq(topic), p)
            for topic in INPUT_TOPICS
            for p in (consumer.partitions_for_topic(dlq(topic)) or await _partitions(consumer, dlq(topic)))
        ]
        if not partitions:
            return found
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        remaining = {tp for tp, end in ends.items() if end > 0}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=2000)
            for tp, records in batches.items():
                for record in records:
                    headers = {k: v.decode(errors="replace") for k, v in record.headers or ()}
                    found.append(
                        DeadLetter(
                            tp.topic,
                            (record.key or b"").decode(errors="replace"),
                            headers.get(DLQ_REASON_HEADER, ""),
                            headers.get(MALFORMED_HEADER, ""),
                        )
                    )
                if records and records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return found


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return consumer.partitions_for_topic(topic) or set()


async def check_all(
    dsn: str,
    bootstrap: str,
    inputs: list[Input],
    outcomes: dict[str, Outcome],
    malformed: list[Malformed],
    baseline: dict[str, Decimal],
) -> list[Invariant]:
    connection = await asyncpg.connect(dsn)
    try:
        payments = await connection.fetch(
            "SELECT payment_id, receipt_number, account_number, amount, status, outcome, notes, payment_intent_id, "
            "receipt_version FROM payments.payments"
        )
        checks = [
            exactly_one_payment(inputs, outcomes, payments),
            await ledger(connection, payments, baseline),
            await one_credit_note_per_overpayment(connection, payments),
            await one_current_receipt(connection, payments),
            await kpi_totals(connection, payments),
            await outbox_published(connection),
        ]
    finally:
        await connection.close()
    checks.append(dead_letters(malformed, await read_dead_letters(bootstrap)))
    return checks


def exactly_one_payment(inputs: list[Input], outcomes: dict[str, Outcome], payments: list[Any]) -> Invariant:
    by_key = Counter(p["payment_intent_id"] or p["notes"] for p in payments)
    problems: list[str] = []
    counts: Counter[str] = Counter()
    known = set()
    for item in inputs:
        if item.kind not in PAYMENT_KINDS:
            continue
        known.add(item.key)
        outcome = outcomes[item.key].status
        counts[f"{item.kind} {outcome}"] += 1
        found = by_key.get(item.key, 0)
        if (outcome == "accepted" and found != 1) or (outcome != "accepted" and found > 1):
            problems.append(f"{item.kind} {item.key} ({outcome}): {found} payments")
        if outcome == "rejected" and found:
            problems.append(f"{item.kind} {item.key} was refused but has a payment")
    strays = [key for key in by_key if key not in known]
    problems += [f"payment from no input: {key}" for key in strays]
    accepted = sum(1 for i in inputs if i.kind in PAYMENT_KINDS and outcomes[i.key].status == "accepted")
    return Invariant(
        "every accepted input produced exactly one payment",
        not problems,
        {"payments": len(payments), "accepted inputs": accepted, **dict(sorted(counts.items()))},
        problems[:SHOWN],
    )


async def account_positions(connection: asyncpg.Connection) -> dict[str, Decimal]:
    """Per account: what its items were paid (billed - outstanding), across every item."""
    rows = await connection.fetch(
        "SELECT account_number, sum(amount - outstanding) AS paid FROM payments.receivables GROUP BY account_number"
    )
    return {r["account_number"]: Decimal(r["paid"]) for r in rows}


async def ledger(connection: asyncpg.Connection, payments: list[Any], baseline: dict[str, Decimal]) -> Invariant:
    """allocations + active credit = received - returned, per account (received - returned: what is still
    collected, i.e. Posted or Disputed; a cancelled payment's money went back)."""
    allocations = await account_positions(connection)
    credit = {
        r["account_number"]: Decimal(r["credit"])
        for r in await connection.fetch(
            "SELECT account_number, sum(remaining) AS credit FROM credit_notes.credit_notes "
            "WHERE status = 'Active' GROUP BY account_number"
        )
    }
    received: dict[str, Decimal] = defaultdict(Decimal)
    for p in payments:
        if p["status"] in COLLECTED_STATUSES:
            received[p["account_number"]] += Decimal(p["amount"])
    problems = []
    accounts = set(received) | set(credit) | {a for a, v in allocations.items() if v != baseline.get(a, Decimal(0))}
    totals = {"allocations": Decimal(0), "active credit": Decimal(0), "received - returned": Decimal(0)}
    for account in sorted(accounts):
        allocated = allocations.get(account, Decimal(0)) - baseline.get(account, Decimal(0))
        left = allocated + credit.get(account, Decimal(0))
        totals["allocations"] += allocated
        totals["active credit"] += credit.get(account, Decimal(0))
        totals["received - returned"] += received.get(account, Decimal(0))
        if left != received.get(account, Decimal(0)):
            problems.append(
                f"{account}: allocations {allocated} + credit {credit.get(account, 0)} != {received.get(account, 0)}"
            )
    return Invariant(
        "per account: allocations + active credit = received - returned",
        not problems,
        {"accounts": len(accounts), **{k: str(v) for k, v in totals.items()}, "accounts off": len(problems)},
        problems[:SHOWN],
    )


async def one_credit_note_per_overpayment(connection: asyncpg.Connection, payments: list[Any]) -> Invariant:
    automatic = Counter(
        r["payment_id"]
        for r in await connection.fetch("SELECT payment_id FROM credit_notes.credit_notes WHERE automatic")
    )
    overpaid = {p["payment_id"] for p in payments if p["outcome"] == "over" and p["status"] != "Pending"}
    problems = [f"{pid}: {automatic.get(pid, 0)} credit notes" for pid in sorted(overpaid) if automatic.get(pid) != 1]
    problems += [f"{pid}: a credit note but no overpayment" for pid in sorted(set(automatic) - overpaid)]
    return Invariant(
        "exactly one credit note per overpayment",
        not problems,
        {"overpayments": len(overpaid), "automatic credit notes": sum(automatic.values())},
        problems[:SHOWN],
    )


async def one_current_receipt(connection: asyncpg.Connection, payments: list[Any]) -> Invariant:
    receipts = {
        r["payment_id"]: r
        for r in await connection.fetch("SELECT payment_id, receipt_number, version FROM receipts.receipts")
    }
    problems = []
    posted = [p for p in payments if p["status"] not in ("Pending", "Failed")]
    for p in posted:
        receipt = receipts.get(p["payment_id"])
        if receipt is None:
            problems.append(f"{p['payment_id']}: no receipt")
        elif (receipt["receipt_number"], receipt["version"]) != (p["receipt_number"], p["receipt_version"]):
            problems.append(
                f"{p['payment_id']}: receipt {receipt['receipt_number']} v{receipt['version']}, payments says "
                f"{p['receipt_number']} v{p['receipt_version']}"
            )
    extra = set(receipts) - {p["payment_id"] for p in payments}
    problems += [f"{pid}: a receipt for no payment" for pid in sorted(extra)]
    return Invariant(
        "one current receipt per payment",
        not problems,
        {"posted payments": len(posted), "receipts": len(receipts)},
        problems[:SHOWN],
    )


async def kpi_totals(connection: asyncpg.Connection, payments: list[Any]) -> Invariant:
    row = await connection.fetchrow(
        "SELECT count(*) FILTER (WHERE counted) AS n, coalesce(sum(amount) FILTER (WHERE counted), 0) AS total "
        "FROM kpi.payments"
    )
    collected = [p for p in payments if p["status"] in COLLECTED_STATUSES]
    total = sum((Decimal(p["amount"]) for p in collected), Decimal(0))
    holds = (row["n"], Decimal(row["total"])) == (len(collected), total)
    figures = {
        "kpi payments": row["n"],
        "kpi total": str(row["total"]),
        "posted": len(collected),
        "posted total": str(total),
    }
    return Invariant("KPI totals equal the sum of posted payments", holds, figures)


async def outbox_published(connection: asyncpg.Connection) -> Invariant:
    schemas = [
        r["table_schema"]
        for r in await connection.fetch(
            "SELECT table_schema FROM information_schema.tables WHERE table_name = 'outbox' ORDER BY 1"
        )
    ]
    left = {}
    for schema in schemas:
        left[schema] = await connection.fetchval(f'SELECT count(*) FROM "{schema}".outbox WHERE published_at IS NULL')
    problems = [f"{schema}: {n} unpublished" for schema, n in left.items() if n]
    return Invariant(
        "no outbox row left unpublished",
        not problems,
        {"services": len(schemas), **{k: v for k, v in left.items() if v}},
        problems,
    )


def dead_letters(malformed: list[Malformed], found: list[DeadLetter]) -> Invariant:
    reasons: dict[str, list[str]] = defaultdict(list)
    valid = []
    for letter in found:
        if letter.malformed:
            reasons[letter.malformed].append(letter.reason)
        else:
            valid.append(letter)
    problems = []
    for bad in malformed:
        if not reasons.get(bad.marker):
            problems.append(f"{bad.marker} ({bad.variant}) not in {dlq(bad.topic)}")
        elif not all(reasons[bad.marker]):
            problems.append(f"{bad.marker} ({bad.variant}) dead-lettered without a reason")
    problems += [f"valid record in {v.topic} (key {v.key}): {v.reason[:200]}" for v in valid]
    by_variant = Counter(b.variant for b in malformed)
    return Invariant(
        "every malformed input is in a DLQ with its reason and nothing valid is",
        not problems,
        {
            "malformed sent": len(malformed),
            **{f"  {k}": v for k, v in sorted(by_variant.items())},
            "dead-lettered": sum(1 for b in malformed if reasons.get(b.marker)),
            "DLQ records": len(found),
            "valid records in a DLQ": len(valid),
        },
        problems[:SHOWN],
    )


def signature(checks: list[Invariant]) -> str:
    """What the drain watches for progress: the figures of every check."""
    return json.dumps([c.figures for c in checks], sort_keys=True, default=str)
