"""Payouts' response shapes: payees, lines, totals, run previews and runs, payouts, export lines."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from services.payouts import planning
from shared.export import Cell
from shared.money import money_json


def _iso(value: date | datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def payee_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "payee_id": row["payee_id"],
        "name": row["name"],
        "payee_type": row["payee_type"],
        "country": row["country"],
        "payout_currency": row["payout_currency"],
        "method": row["method"],
        "stripe_account": row["stripe_account"],
        "iban": row["iban"],
        "bic": row["bic"],
        "tax_id": row["tax_id"],
        "email": row["email"],
        "status": row["status"],
        "payee_group": row["payee_group"],
        "schedule": row["schedule"],
        "agent_channel": row["agent_channel"],
        "agent_user": row["agent_user"],
        "account_number": row["account_number"],
        "external_id": row["external_id"],
        "created_at": _iso(row["created_at"]),
    }


def line_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "line_id": row["line_id"],
        "payee_id": row["payee_id"],
        "kind": row["kind"],
        "amount": money_json(row["amount"], row["currency"]),
        "earned_on": _iso(row["earned_on"]),
        "status": row["status"],
        "source_ref": row["source_ref"],
        "description": row["description"],
        "reason": row["reason"],
        "rule_id": row["rule_id"],
        "calculation": row["calculation"],
        "blocked_reason": row["blocked_reason"],
        "reverses_line_id": row["reverses_line_id"],
        "approval_id": row["approval_id"],
        "payout_id": row["payout_id"],
        "created_by": row["created_by"],
        "created_at": _iso(row["created_at"]),
        "invoices": [
            {k: v for k, v in f.items() if k in ("invoice_id", "filename", "content_type", "size")}
            for f in row.get("invoices", [])
        ],
    }


def totals_view(totals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "currency": t["currency"],
            "total_earned": money_json(t["earned"], t["currency"]),
            "pending": money_json(t["pending"], t["currency"]),
            "paid_this_year": money_json(t["paid_this_year"], t["currency"]),
        }
        for t in totals
    ]


def plan_view(plan: planning.RunPlan, payees: dict[str, planning.RunPayee]) -> dict[str, Any]:
    """A run's preview: per payee and currency what would be paid, each line's conversion, and who is held."""
    return {
        "totals": [money_json(amount, currency) for currency, amount in plan.totals().items()],
        "payouts": [
            {
                "payee_id": p.payee_id,
                "name": payees[p.payee_id].name,
                "method": p.method.value,
                "amount": money_json(p.amount, p.currency),
                "lines": [{"line_id": i.line.line_id, **i.conversion.as_json()} for i in p.items],
            }
            for p in plan.payouts
        ],
        "held": [
            {"payee_id": h.payee_id, "code": h.code, "detail": h.detail, "field": h.field, "line_ids": list(h.line_ids)}
            for h in plan.held
        ],
    }


def payout_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "payout_id": row["payout_id"],
        "run_id": row["run_id"],
        "payee_id": row["payee_id"],
        "payee_name": row.get("name"),
        "amount": money_json(row["amount"], row["currency"]),
        "method": row["method"],
        "status": row["status"],
        "reference": row["reference"],
        "bank_file_id": row["bank_file_id"],
        "failure_reason": row["failure_reason"],
        "created_at": _iso(row["created_at"]),
        "sent_at": _iso(row["sent_at"]),
        "paid_at": _iso(row["paid_at"]),
        "failed_at": _iso(row["failed_at"]),
    }


def run_view(run: dict[str, Any]) -> dict[str, Any]:
    return {
        "run_id": run["run_id"],
        "status": run["status"],
        "as_of": _iso(run["as_of"]),
        "filters": run["filters"],
        "totals": [money_json(Decimal(t["amount"]), t["currency"]) for t in run["totals"]],
        "held": run["held"],
        "approval_id": run["approval_id"],
        "created_by": run["created_by"],
        "created_at": _iso(run["created_at"]),
        "approved_by": run["approved_by"],
        "approved_at": _iso(run["approved_at"]),
        "executed_by": run["executed_by"],
        "executed_at": _iso(run["executed_at"]),
        "payouts": [payout_view(p) for p in run.get("payouts", [])],
        "bank_files": [
            {
                "file_id": f["file_id"],
                "debtor_account": f["debtor_account"],
                "payouts": f["payouts"],
                "control_sum": money_json(f["control_sum"], f["currency"]),
                "message_id": f["message_id"],
            }
            for f in run.get("bank_files", [])
        ],
    }


def rule_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        **{
            k: (format(v, "f") if isinstance(v, Decimal) else _iso(v) if isinstance(v, date) else v)
            for k, v in row.items()
        },
    }


def rate_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "base": row["base"],
        "quote": row["quote"],
        "rate": format(row["rate"].normalize(), "f"),
        "as_of": _iso(row["as_of"]),
        "source": row["source"],
    }


EXPORT_COLUMNS = (
    "Payout",
    "Run",
    "Payee",
    "Payee name",
    "Amount",
    "Currency",
    "Method",
    "Status",
    "Reference",
    "Created",
    "Sent",
    "Paid",
    "Failure reason",
)


def export_line(row: dict[str, Any]) -> list[Cell]:
    return [
        row["payout_id"],
        row["run_id"],
        row["payee_id"],
        row["name"],
        row["amount"],
        row["currency"],
        row["method"],
        row["status"],
        row["reference"],
        row["created_at"],
        row["sent_at"],
        row["paid_at"],
        row["failure_reason"],
    ]
