"""Response shapes of reconciliation's routes: money as `money_json`, dates ISO 8601."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row

from services.reconciliation import domain
from shared.export import Cell
from shared.money import money_json


def statement_view(row: Row[Any], lines: list[Row[Any]]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for line in lines:
        counts[line.status] = counts.get(line.status, 0) + 1
    return {
        "statement_id": row.statement_id,
        "statement_ref": row.statement_ref,
        "account": row.account,
        "source": row.source,
        "opening_balance": money_json(row.opening_balance, row.currency),
        "closing_balance": money_json(row.closing_balance, row.currency),
        "from_date": row.from_date.isoformat() if row.from_date else None,
        "to_date": row.to_date.isoformat() if row.to_date else None,
        "line_count": row.line_count,
        "imported_by": row.imported_by,
        "imported_at": row.imported_at.isoformat(),
        "status_counts": counts,
        "lines": [line_view(line) for line in lines],
    }


def line_view(line: Row[Any]) -> dict[str, Any]:
    return {
        "line_id": line.line_id,
        "source_line": line.source_line,
        "booking_date": line.booking_date.isoformat(),
        "amount": money_json(line.amount, line.currency),
        "reference": line.reference,
        "bank_reference": line.bank_reference,
        "text": line.text,
        "type_code": line.type_code,
        "status": line.status,
        "match_id": line.match_id,
        "rule": getattr(line, "rule", None),
        "score": format(line.score, "f") if getattr(line, "score", None) is not None else None,
        "item_ids": getattr(line, "item_ids", None),
        "differences": getattr(line, "differences", None),
    }


def match_view(row: Row[Any]) -> dict[str, Any]:
    return {
        "match_id": row.match_id,
        "rule": row.rule,
        "score": format(row.score, "f"),
        "bank_line_ids": row.line_ids,
        "item_ids": row.item_ids,
        "line_total": money_json(row.line_total, row.currency),
        "item_total": money_json(row.item_total, row.currency),
        "differences": row.differences,
        "matched_by": row.matched_by,
        "matched_at": row.matched_at.isoformat(),
    }


def exception_view(row: Row[Any], now: datetime) -> dict[str, Any]:
    return {
        "exception_id": row.exception_id,
        "kind": row.kind,
        "subject": row.subject,
        "amount": money_json(row.amount, row.currency),
        "detail": row.detail,
        "raised_at": row.raised_at.isoformat(),
        "age": domain.age_bucket(row.raised_at, now),
        "age_days": (now - row.raised_at).days,
        "owner": row.owner,
        "status": row.status,
        "resolution": row.resolution,
        "resolved_by": row.resolved_by,
        "resolved_at": row.resolved_at.isoformat() if row.resolved_at else None,
        "reason": row.reason,
    }


def item_view(row: Row[Any]) -> dict[str, Any]:
    return {
        "item_id": row.item_id,
        "kind": row.kind,
        "channel": row.channel,
        "reference": row.reference,
        "group": row.group_key,
        "amount": money_json(row.amount, row.currency),
        "origin_date": row.origin_date.isoformat(),
        "window_days": row.window_days,
        "status": row.status,
        "payment_id": row.payment_id,
    }


def settlement_view(row: Row[Any]) -> dict[str, Any]:
    return {
        "payment_id": row.payment_id,
        "receipt_number": row.receipt_number,
        "channel": row.channel,
        "method": row.method,
        "amount": money_json(row.amount, row.currency),
        "payment_intent_id": row.payment_intent_id,
        "settlement_status": row.settlement_status,
        "settled_at": row.settled_at.isoformat() if row.settled_at else None,
    }


def till_view(row: Row[Any]) -> dict[str, Any]:
    c = row.currency
    return {
        "teller": row.teller,
        "business_date": row.business_date.isoformat(),
        "expected_cash": money_json(row.expected_cash, c),
        "expected_cheques": money_json(row.expected_cheques, c),
        "counted_cash": money_json(row.counted_cash, c),
        "counted_cheques": money_json(row.counted_cheques, c),
        "variance": money_json(row.variance, c),
        "payments": row.payments,
        "closed_by": row.closed_by,
        "closed_at": row.closed_at.isoformat(),
        "exception_id": row.exception_id,
    }


def summary_view(summary: domain.Summary, currency: str) -> dict[str, Any]:
    return {
        "bank_lines": summary.lines,
        "reconciled": summary.matched,
        "matched_percent": format(summary.matched_percent, "f"),
        "unreconciled_amount": money_json(summary.unreconciled_amount, currency),
        "open_exceptions_by_age": summary.exceptions_by_age,
    }


REPORT_COLUMNS: Sequence[str] = (
    "Booking date",
    "Account",
    "Bank line",
    "Bank reference",
    "Reference",
    "Amount",
    "Currency",
    "Status",
    "Rule",
    "Score",
    "Matched items",
    "Differences",
    "Matched by",
)


def report_line(row: Row[Any]) -> list[Cell]:
    return [
        row.booking_date,
        row.account,
        row.line_id,
        row.bank_reference,
        row.reference,
        row.amount,
        row.currency,
        row.status,
        row.rule,
        format(row.score, "f") if row.score is not None else None,
        " ".join(row.item_ids or []),
        " ".join(f"{k}={v}" for k, v in (row.differences or {}).items()),
        row.matched_by,
    ]
