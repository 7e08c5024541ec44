"""Collections' response shapes: money as `money_json`, dates as ISO strings, field names in snake_case."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import Any

from services.collections import domain
from shared.audit import AuditEntry
from shared.export import Cell
from shared.money import money_json
from shared.receivables import installment_reference


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def worklist_row(row: dict[str, Any], today: date) -> dict[str, Any]:
    days = domain.days_overdue(row["oldest_overdue_due"], today)
    currency = row["currency"]
    return {
        "account_number": row["account_number"],
        "name": row["name"],
        "amount_owed": money_json(row["amount_owed"], currency),
        "amount_overdue": money_json(row["amount_overdue"], currency),
        "oldest_overdue_due": _iso(row["oldest_overdue_due"]),
        "days_overdue": days,
        "aging_bucket": domain.aging_bucket(days).value if row["amount_overdue"] > 0 else None,
        "has_plan": row["plan_status"] in [s.value for s in domain.OPEN_STATUSES],
        "arrangement_id": row["arrangement_id"],
        "plan_status": row["plan_status"],
        "executive": row["executive"],
        "last_contact_at": _iso(row["last_contact_at"]),
        "disconnection": row["disconnection"],
    }


EXPORT_COLUMNS = [
    "Account",
    "Name",
    "Amount overdue",
    "Amount owed",
    "Days overdue",
    "Aging bucket",
    "Plan status",
    "Arrangement",
    "Executive",
    "Last contact",
    "Disconnection",
]


def worklist_line(row: dict[str, Any], today: date) -> list[Cell]:
    view = worklist_row(row, today)
    return [
        row["account_number"],
        row["name"],
        row["amount_overdue"],
        row["amount_owed"],
        view["days_overdue"],
        view["aging_bucket"],
        row["plan_status"],
        row["arrangement_id"],
        row["executive"],
        row["last_contact_at"],
        row["disconnection"],
    ]


RECOVERY_COLUMNS = ["Date", "Arrangement", "Account", "Receipt", "Executive", "Amount"]


def recovery_line(row: dict[str, Any]) -> list[Cell]:
    return [
        row["recovered_on"],
        row["arrangement_id"],
        row["account_number"],
        row["receipt_number"],
        row["executive"],
        row["amount"],
    ]


def disconnection_view(row: dict[str, Any], today: date) -> dict[str, Any]:
    return {
        "account_number": row["account_number"],
        "state": row["disconnection"],
        "may_disconnect": row["disconnection"] == domain.Disconnection.ELIGIBLE.value,
        "reason": row["disconnection_reason"],
        "arrangement_id": row["arrangement_id"],
        "plan_status": row["plan_status"],
        "amount_overdue": money_json(row["amount_overdue"], row["currency"]),
        "days_overdue": domain.days_overdue(row["oldest_overdue_due"], today),
        "since": _iso(row["disconnection_since"]),
        "as_of": today.isoformat(),
    }


def arrangement_view(row: dict[str, Any], today: date) -> dict[str, Any]:
    currency = row["currency"]
    missed = row.get("missed", set())
    schedule = []
    for i in row.get("installments", []):
        state = domain.InstallmentState(
            i["number"], i["amount"], i["due_date"], i["paid"], i["paid_on"], i["superseded"]
        )
        outcome = domain.evaluate(state, grace_days=row["grace_days"], today=today)
        if (i["plan_id"], i["number"]) in missed and outcome is domain.Outcome.IN_GRACE:
            outcome = domain.Outcome.MISSED
        schedule.append(
            {
                "item_reference": installment_reference(i["plan_id"], i["number"]),
                "number": i["number"],
                "amount": money_json(i["amount"], currency),
                "paid": money_json(i["paid"], currency),
                "due_date": i["due_date"].isoformat(),
                "paid_on": _iso(i["paid_on"]),
                "down_payment": i["down_payment"],
                "superseded": i["superseded"],
                "status": outcome.value,
            }
        )
    return {
        "arrangement_id": row["arrangement_id"],
        "account_number": row["account_number"],
        "status": row["status"],
        "plan_id": row["plan_id"],
        "version": row["version"],
        "total": money_json(row["total"], currency),
        "down_payment": money_json(row["down_payment"], currency),
        "paid": money_json(row["paid"], currency),
        "remaining": money_json(max(row["total"] - row["paid"], Decimal(0)), currency),
        "installments_count": row["installment_count"],
        "frequency": row["frequency"],
        "first_due_date": row["first_due_date"].isoformat(),
        "grace_days": row["grace_days"],
        "missed_count": row["missed_count"],
        "notes": row["notes"],
        "covered_items": row["covered"],
        "executive": row["executive"],
        "created_by": row["created_by"],
        "created_at": _iso(row["created_at"]),
        "approval_id": row["approval_id"],
        "approved_by": row["approved_by"],
        "reaged_from": row["reaged_from"],
        "closed_at": _iso(row["closed_at"]),
        "closed_reason": row["closed_reason"],
        "installments": schedule,
    }


def customer_arrangement_view(row: dict[str, Any] | None, today: date) -> dict[str, Any]:
    """The customer's own arrangement (no staff notes or names) and the installment to pay next."""
    if row is None:
        return {"arrangement": None, "next_installment": None}
    full = arrangement_view(row, today)
    shown = ("arrangement_id", "status", "total", "down_payment", "paid", "remaining", "installments_count")
    states = [
        (
            domain.InstallmentState(i["number"], i["amount"], i["due_date"], i["paid"], i["paid_on"], i["superseded"]),
            domain.Outcome(shown_row["status"]),
            i["plan_id"],
        )
        for i, shown_row in zip(row.get("installments", []), full["installments"], strict=True)
    ]
    upcoming = domain.next_due([(state, outcome) for state, outcome, _ in states])
    following = None
    if upcoming is not None:
        plan_id = next(p for state, _, p in states if state is upcoming)
        following = {
            "item_reference": installment_reference(plan_id, upcoming.number),
            "number": upcoming.number,
            "due_date": upcoming.due_date.isoformat(),
            "amount": money_json(upcoming.unpaid, row["currency"]),
            "status": next(o for state, o, _ in states if state is upcoming).value,
        }
    return {
        "arrangement": {
            **{k: full[k] for k in shown},
            "frequency": full["frequency"],
            "first_due_date": full["first_due_date"],
            "installments": [
                {k: i[k] for k in ("item_reference", "number", "amount", "paid", "due_date", "status")}
                for i in full["installments"]
                if not i["superseded"]
            ],
        },
        "next_installment": following,
    }


def activity_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "activity_id": row["activity_id"],
        "account_number": row["account_number"],
        "name": row.get("name"),
        "arrangement_id": row["arrangement_id"],
        "activity_type": row["kind"],
        "outcome": row["outcome"],
        "customer_response": row["customer_response"],
        "notes": row["notes"],
        "promise_amount": money_json(row["promise_amount"], "USD") if row["promise_amount"] is not None else None,
        "promise_date": _iso(row["promise_date"]),
        "promise_status": row["promise_status"],
        "follow_up_on": _iso(row["follow_up_on"]),
        "follow_up_done": row["follow_up_done"],
        "executive": row["executive"],
        "created_at": _iso(row["created_at"]),
    }


def alert_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "alert_id": row["alert_id"],
        "executive": row["executive"],
        "account_number": row["account_number"],
        "kind": row["kind"],
        "message": row["message"],
        "arrangement_id": row["arrangement_id"],
        "raised_at": _iso(row["raised_at"]),
    }


def history_view(entries: Sequence[AuditEntry]) -> list[dict[str, Any]]:
    return [e.as_json() for e in entries]


def report_view(report: dict[str, Any], currency: str = "USD") -> dict[str, Any]:
    return {
        "period": report["period"],
        "plans_by_status": report["plans_by_status"],
        "installments_due": report["installments_due"],
        "kept_rate": str(report["kept_rate"]) if report["kept_rate"] is not None else None,
        "recovered_total": money_json(report["recovered_total"], currency),
        "recovered_by_executive": [
            {"executive": executive, "amount": money_json(amount, currency)}
            for executive, amount in report["recovered_by_executive"]
        ],
        "aging": {bucket: money_json(amount, currency) for bucket, amount in report["aging"].items()},
    }
