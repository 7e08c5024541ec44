"""Credit notes' response shapes: the tab's rows, the details view, command results, settings and export lines."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field

from services.credit_notes import domain
from shared.audit import AuditEntry
from shared.export import Cell
from shared.money import format_money


class ExpiryPeriodBody(BaseModel):
    count: int = Field(ge=1, examples=[1])
    unit: domain.PeriodUnit = Field(examples=["years"])


# The credit-note settings, as shown and as an admin sends them. (No docstring: it would become the schema's
# description in the OpenAPI document.)
class PolicyBody(BaseModel):
    expiry: ExpiryPeriodBody
    reasons: list[str] = Field(min_length=1, examples=[list(domain.DEFAULT_REASONS)])
    approval_limit: Decimal | None = Field(
        default=None,
        ge=0,
        decimal_places=2,
        max_digits=12,
        description="Manual credit notes above this wait for a billing manager's approval (kept if omitted).",
        examples=["500.00"],
    )
    auto_apply_credit: domain.AutoApply | None = Field(
        default=None,
        description="Apply available credit to a new bill: off or oldest_first (kept if omitted).",
    )


def _money(amount: Decimal) -> str:
    return format(amount, "f")


def _usage(note: dict[str, Any]) -> str:
    return str(domain.usage_percentage(note["applied"], note["amount"]))


def policy_view(policy: domain.Policy) -> PolicyBody:
    return PolicyBody(
        expiry=ExpiryPeriodBody(count=policy.expiry.count, unit=policy.expiry.unit),
        reasons=list(policy.reasons),
        approval_limit=policy.approval_limit,
        auto_apply_credit=policy.auto_apply_credit,
    )


def row_view(row: dict[str, Any], zone: ZoneInfo) -> dict[str, Any]:
    """One line of the credit-notes tab."""
    currency = row["currency"]
    return {
        "credit_note_number": row["credit_note_number"],
        "consumer": {"name": row["consumer_name"], "account_number": row["account_number"]},
        "amount": _money(row["amount"]),
        "remaining": _money(row["remaining"]),
        "currency": currency,
        "amount_display": format_money(row["amount"], currency),
        "remaining_display": format_money(row["remaining"], currency),
        "reason": row["reason"],
        "status": row["status"],
        "created_at": row["created_at"].isoformat(),
        "created_date": row["created_at"].astimezone(zone).date().isoformat(),
        "linked_payment": row["receipt_number"],
    }


def account_row_view(row: dict[str, Any]) -> dict[str, Any]:
    """One of the customer's own credit notes: what is left of it and until when."""
    return {
        "credit_note_number": row["credit_note_number"],
        "amount": _money(row["amount"]),
        "remaining": _money(row["remaining"]),
        "currency": row["currency"],
        "status": row["status"],
        "reason": row["reason"],
        "created_at": row["created_at"].isoformat(),
        "expires_at": row["expires_at"].isoformat(),
        "linked_payment": row["receipt_number"],
    }


def detail_view(note: dict[str, Any]) -> dict[str, Any]:
    """The credit-note details view: header and status, consumer, dates, financial details, reason, linked payment."""
    currency = note["currency"]
    payment = note["payment"] or {}
    return {
        "credit_note_number": note["credit_note_number"],
        "status": note["status"],
        "consumer": {"name": note["consumer_name"], "account_number": note["account_number"]},
        "dates": {
            "created_at": note["created_at"].isoformat(),
            "expires_at": note["expires_at"].isoformat(),
            "expired_at": note["expired_at"].isoformat() if note["expired_at"] else None,
        },
        "financial": {
            "currency": currency,
            "original_amount": _money(note["amount"]),
            "applied_amount": _money(note["applied"]),
            "remaining_balance": _money(note["remaining"]),
            "voided_amount": _money(note["voided"]),
            "refunded_amount": _money(note["refunded"]),
            "usage_percentage": _usage(note),
            "original_amount_display": format_money(note["amount"], currency),
            "applied_amount_display": format_money(note["applied"], currency),
            "remaining_balance_display": format_money(note["remaining"], currency),
        },
        "reason": note["reason"],
        "remarks": note["remarks"],
        "created_by": note["created_by"],
        "linked_payment": {
            "receipt_number": note["receipt_number"],
            "payment_id": note["payment_id"],
            "amount": _money(payment["amount"]) if payment else None,
            "payment_date": payment["payment_date"].isoformat() if payment else None,
            "method": payment.get("method"),
        },
        "applications": [
            {
                "id": a["id"],
                "payment_type": a["payment_type"],
                "item_reference": a["item_reference"],
                "amount": _money(a["amount"]),
                "applied_by": a["applied_by"],
                "applied_at": a["applied_at"].isoformat(),
                "reversed": _money(a["reversed"]),
                "automatic": a["automatic"],
            }
            for a in note["applications"]
        ],
    }


def issued_view(note: dict[str, Any], summary: dict[str, Decimal]) -> dict[str, Any]:
    """The answer to issuing: the new credit note and what is left of its payment."""
    return {
        "credit_note_number": note["credit_note_number"],
        "amount": _money(note["amount"]),
        "remaining": _money(note["remaining"]),
        "currency": note["currency"],
        "status": note["status"],
        "reason": note["reason"],
        "remarks": note["remarks"],
        "created_by": note["created_by"],
        "created_at": note["created_at"].isoformat(),
        "expires_at": note["expires_at"].isoformat(),
        "receipt_number": note["receipt_number"],
        "summary": {
            "original_payment_amount": _money(summary["original_payment_amount"]),
            "credit_note_amount": _money(summary["credit_note_amount"]),
            "remaining_payment_value": _money(summary["remaining_payment_value"]),
            "full_reversal": summary["remaining_payment_value"] == 0,
        },
    }


def applied_view(note: dict[str, Any], application_id: str) -> dict[str, Any]:
    """The answer to applying: this application and the credit note's balances after it."""
    application = next(a for a in note["applications"] if a["id"] == application_id)
    return {
        "application_id": application_id,
        "credit_note_number": note["credit_note_number"],
        "payment_type": application["payment_type"],
        "item_reference": application["item_reference"],
        "applied": _money(application["amount"]),
        "applied_total": _money(note["applied"]),
        "remaining": _money(note["remaining"]),
        "usage_percentage": _usage(note),
        "status": note["status"],
    }


def payment_for_credit_view(payment: dict[str, Any], policy: domain.Policy) -> dict[str, Any]:
    """The read-only payment block of the create form, with the maximum credit it still allows."""
    return {
        "consumer_name": payment["consumer_name"],
        "account_number": payment["account_number"],
        "receipt_number": payment["receipt_number"],
        "payment_id": payment["payment_id"],
        "payment_amount": _money(payment["amount"]),
        "currency": payment["currency"],
        "payment_date": payment["payment_date"].isoformat(),
        "payment_method": payment["method"],
        "status": payment["status"],
        "credited": _money(payment["credited"]),
        "maximum_credit": _money(payment["creditable"]),
        "maximum_credit_display": format_money(payment["creditable"], payment["currency"]),
        "reasons": list(policy.reasons),
    }


def history_view(entries: list[AuditEntry]) -> list[dict[str, Any]]:
    """An audit trail, oldest first."""
    return [e.as_json() for e in entries]


# --- export ---

EXPORT_COLUMNS = (
    "Credit Note #",
    "Consumer",
    "Account Number",
    "Amount",
    "Remaining",
    "Currency",
    "Reason",
    "Status",
    "Created Date",
    "Linked Payment",
)


def export_line(row: dict[str, Any], zone: ZoneInfo) -> list[Cell]:
    """One credit note in the export's columns; amounts stay numbers, so a spreadsheet can sum them."""
    return [
        row["credit_note_number"],
        row["consumer_name"],
        row["account_number"],
        row["amount"],
        row["remaining"],
        row["currency"],
        row["reason"],
        row["status"],
        row["created_at"].astimezone(zone).date().isoformat(),
        row["receipt_number"],
    ]
