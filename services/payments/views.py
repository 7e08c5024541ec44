"""What staff see: the payment details and list views, the consumer view, the settings, and the list exported."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row

from services.payments import domain
from services.payments.intents import Intent
from shared.contracts import PaymentStatus
from shared.contracts.events import PaymentType
from shared.export import Cell
from shared.money import money_json
from shared.receivables import parse_installment_reference

if TYPE_CHECKING:
    from services.payments.queries import PaymentContext

_OUTCOME_WORDS = {"exact": "Exact payment", "over": "Over paid", "under": "Under paid"}
_DUE_LABELS = {"bill": "Billed amount", "service": "Service amount", "installment": "Installment amount"}


def _item_details(row: PaymentContext) -> dict[str, Any]:
    if row.payment_type == PaymentType.BILL:
        return {"invoice_id": row.item_reference, "service_period": row.period_or_date}
    if row.payment_type == PaymentType.SERVICE:
        return {"service_name": row.item_description, "service_date": row.period_or_date}
    installment = parse_installment_reference(row.item_reference)
    return {"plan_id": installment.plan_id, "installment_number": installment.number, "due_date": row.period_or_date}


def _credit_note(note: Row[Any]) -> dict[str, Any]:
    return {
        "credit_note_number": note.credit_note_number,
        "amount": money_json(note.amount, note.currency),
        "remaining": money_json(note.remaining, note.currency),
        "status": note.status,
        "reason": note.reason,
        "expires_at": note.expires_at.isoformat(),
        "links": {
            "self": f"/credit-notes/{note.credit_note_number}",
            "pdf": f"/credit-notes/{note.credit_note_number}.pdf",
        },
    }


def dispute_view(dispute: Row[Any], attachments: list[Row[Any]]) -> dict[str, Any]:
    """A dispute, its evidence and where it stands: Open, Under review, Won or Lost."""
    return {
        "dispute_id": dispute.dispute_id,
        "payment_id": dispute.payment_id,
        "account_number": dispute.account_number,
        "source": dispute.source,
        "status": dispute.status,
        "amount": money_json(dispute.amount, dispute.currency),
        "reason": dispute.reason,
        "evidence_notes": dispute.evidence_notes,
        "opened_by": dispute.opened_by,
        "opened_at": dispute.opened_at.isoformat(),
        "closed_by": dispute.closed_by,
        "closed_at": dispute.closed_at.isoformat() if dispute.closed_at else None,
        "outcome": dispute.outcome,
        "attachments": [
            {
                "attachment_id": a.attachment_id,
                "filename": a.filename,
                "content_type": a.content_type,
                "size": a.size,
                "link": f"/disputes/{dispute.dispute_id}/attachments/{a.attachment_id}",
            }
            for a in attachments
            if a.dispute_id == dispute.dispute_id
        ],
    }


def adjustment_view(adjustment: Row[Any]) -> dict[str, Any]:
    """An adjustment: what was asked, by whom, and whether it was applied or waits for approval."""
    return {
        "adjustment_id": adjustment.adjustment_id,
        "payment_id": adjustment.payment_id,
        "kind": adjustment.kind,
        "status": adjustment.status,
        "request": adjustment.request,
        "before": adjustment.before,
        "after": adjustment.after,
        "reason": adjustment.reason,
        "requested_by": adjustment.requested_by,
        "requested_at": adjustment.requested_at.isoformat(),
        "approval_id": adjustment.approval_id,
        "approved_by": adjustment.approved_by,
        "applied_at": adjustment.applied_at.isoformat() if adjustment.applied_at else None,
    }


def payment_detail(row: PaymentContext, now: datetime, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The seed's payment details view; the `POST /payments` response is the same document (`row`: a
    `queries.payment_with_context` row, or `queries.posted_with_context` for a payment posted just now)."""
    analysis = domain.Analysis(due=row.due, paid=row.amount)
    currency = row.currency
    extra = extra or {"credit_notes": [], "disputes": [], "attachments": [], "adjustments": []}
    # Billed: the item's own amount as billing issued it; what earlier payments settled of it is "paid before".
    billed = row.item_amount if row.item_amount is not None else row.due
    settlement = domain.NOT_SETTLED if row.status in domain.MONEY_WENT_BACK else row.settlement_status
    is_cash = row.method == "Cash" and row.cash_received is not None
    processing_time = domain.processing_time(
        online=row.online, started_at=row.recorded_at, settled_at=row.settled_at, now=now
    )
    return {
        # DESIGN's response fields, flat.
        "payment_id": row.payment_id,
        "transaction_id": row.transaction_id,
        "receipt_number": row.receipt_number,
        "status": row.status,
        "verification": row.verification,
        "processing_time": processing_time,
        "amount": f"{row.amount:.2f}",
        "currency": currency,
        "change_given": f"{row.change_given:.2f}" if row.change_given is not None else None,
        "received_by": row.received_by,
        "analysis": {
            "due": f"{analysis.due:.2f}",
            "paid": f"{analysis.paid:.2f}",
            "difference": f"{analysis.difference:.2f}",
            "outcome": analysis.outcome.value,
        },
        # The details view, section by section.
        "payment_information": {
            "payment_id": row.payment_id,
            "status": row.status,
            "amount_paid": money_json(row.amount, currency),
            "payment_method": row.method,
            "payment_type": row.payment_type,
            "channel": row.channel,
            "webhook_status": row.webhook_status,
            "settlement_status": settlement,
        },
        "payment_details": {"payment_type": row.payment_type, **_item_details(row)},
        "amount_analysis": {
            "due_label": _DUE_LABELS[row.payment_type],
            "billed": money_json(billed, currency),
            "paid_before": money_json(max(billed - row.due, Decimal(0)), currency),
            "due": money_json(analysis.due, currency),
            "paid": money_json(analysis.paid, currency),
            "difference": money_json(analysis.difference, currency),
            "outcome": _OUTCOME_WORDS[analysis.outcome],
        },
        "credit_note": (
            {"credit_note_number": row.credit_note_number, "amount": money_json(row.credit_note_amount, currency)}
            if row.credit_note_number
            else None
        ),
        # Every credit note made from the payment (the receipt lists them all too).
        "credit_notes": [_credit_note(n) for n in extra["credit_notes"]],
        "ledger": {
            "applied": money_json(row.applied, currency),
            "credited": money_json(row.credited, currency),
            "refunded": money_json(row.refunded, currency),
        },
        "receipt_version": row.receipt_version,
        "disputes": [dispute_view(d, extra["attachments"]) for d in extra["disputes"]],
        "adjustments": [adjustment_view(a) for a in extra["adjustments"]],
        "cash": (
            {
                "amount_received": money_json(row.cash_received, currency),
                "change_given": money_json(row.change_given, currency),
            }
            if is_cash
            else None
        ),
        "transaction": {
            "transaction_id": row.transaction_id,
            "receipt_number": row.receipt_number,
            "payment_date": row.payment_date.isoformat(),
        },
        "processing": {
            "received_by": row.received_by,
            "processing_time": processing_time,
            "verification": row.verification,
            "verified_by": row.verified_by,
            "can_verify": row.online and row.verification == domain.Verification.PENDING,
        },
        "consumer": {
            "name": row.consumer_name,
            "account_number": row.account_number,
            "service_address": row.service_address,
            "phone": row.phone,
            "email": row.email,
        },
        "notes": row.notes,
        # What the counter offers next (AC 13-15): the receipt (receipts service), another payment, the dashboard
        # (kpi service).
        "links": {
            "self": f"/payments/{row.payment_id}",
            "receipt_print": f"/receipts/{row.receipt_number}",
            "receipt_pdf": f"/receipts/{row.receipt_number}.pdf",
            "record_another": "/payments",
            "dashboard": "/",
        },
        "cancellation": (
            {"reason": row.cancel_reason, "cancelled_by": row.cancelled_by, "cancelled_at": row.cancelled_at}
            if row.cancelled_at
            else None
        ),
    }


def payment_row(row: Row[Any]) -> dict[str, Any]:
    """One line of the payments table: Receipt #, Consumer, Amount, Method, Date, Type, Status."""
    return {
        "receipt_number": row.receipt_number,
        "payment_id": row.payment_id,
        "consumer": {"name": row.consumer_name, "account_number": row.account_number},
        "amount": money_json(row.amount, row.currency),
        "method": row.method,
        "date": row.payment_date.isoformat(),
        "type": row.payment_type,
        "status": row.status,
        "links": {"details": f"/payments/{row.receipt_number}", "receipt": f"/receipts/{row.receipt_number}"},
    }


def consumer_view(
    account: Row[Any], items: list[Row[Any]], history: list[Row[Any]], credit: list[Row[Any]] | None = None
) -> dict[str, Any]:
    """A consumer, their open items by type, their balance, available credit and latest payments."""
    credit = credit or []
    open_items = [i for i in items if i.outstanding > 0]
    open_total = sum((i.outstanding for i in open_items), Decimal(0))
    balance = domain.current_balance(account.reported_balance, account.collected_since_report, open_total)

    def item(i: Row[Any]) -> dict[str, Any]:
        return {
            "item_reference": i.item_reference,
            "description": i.description,
            "period_or_date": i.period_or_date,
            "due_date": i.due_date.isoformat(),
            "amount": money_json(i.amount, i.currency),
            "outstanding": money_json(i.outstanding, i.currency),
        }

    by_type = {t: [item(i) for i in open_items if i.payment_type == t] for t in PaymentType}
    return {
        "name": account.name,
        "account_number": account.account_number,
        "service_address": account.service_address,
        "phone": account.phone,
        "email": account.email,
        "current_balance": money_json(balance, account.currency),
        "unpaid_bills": by_type[PaymentType.BILL],
        "unpaid_services": by_type[PaymentType.SERVICE],
        "unpaid_installments": by_type[PaymentType.INSTALLMENT],
        "payment_history": [payment_row(p) for p in history],
        "available_credit": {
            "total": money_json(sum((n.remaining for n in credit), Decimal(0)), account.currency),
            "credit_notes": [_credit_note(n) for n in credit],
        },
    }


def settings_view(current: domain.PaymentSettings) -> dict[str, Any]:
    """The settings in force, as `GET /settings` shows them."""
    return {
        "channels": list(current.channels),
        "default_channel": current.default_channel,
        "payment_methods": list(current.payment_methods),
        "overpayment_threshold": str(current.overpayment_threshold),
        "adjustment_approval_limit": str(current.adjustment_approval_limit),
        "number_formats": {kind: asdict(current.format_for(kind)) for kind in domain.NUMBER_KINDS},
    }


# --- the payments list exported (shared/export.py streams it) ---

EXPORT_COLUMNS = ["Receipt #", "Payment ID", "Consumer", "Account", "Amount", "Currency", "Method", "Date", "Type"]
EXPORT_COLUMNS += ["Status", "Channel", "Received by"]


def export_cells(row: Row[Any]) -> list[Cell]:
    """One payment as a line of the export; the amount stays a Decimal, so a sheet can sum it."""
    return [
        row.receipt_number,
        row.payment_id,
        row.consumer_name,
        row.account_number,
        row.amount,
        row.currency,
        row.method,
        row.payment_date,
        row.payment_type,
        row.status,
        row.channel,
        row.received_by,
    ]


# --- the customer's own pages (self-service) ---


def account_view(account: Row[Any], items: list[Row[Any]]) -> dict[str, Any]:
    """`GET /accounts/{account_number}`: who, where, the balance and every open item, earliest due first."""
    open_items = [i for i in items if i.outstanding > 0]
    open_total = sum((i.outstanding for i in open_items), Decimal(0))
    balance = domain.current_balance(account.reported_balance, account.collected_since_report, open_total)
    return {
        "name": account.name,
        "account_number": account.account_number,
        "service_address": account.service_address,
        "current_balance": money_json(balance, account.currency),
        "open_items": [
            {
                "payment_type": i.payment_type,
                "item_reference": i.item_reference,
                "description": i.description,
                "due_date": i.due_date.isoformat(),
                "amount": money_json(i.amount, i.currency),
                "outstanding": money_json(i.outstanding, i.currency),
            }
            for i in open_items
        ],
    }


def account_payment_row(row: Row[Any]) -> dict[str, Any]:
    """One line of the customer's payment history."""
    return {
        "payment_id": row.payment_id,
        "receipt_number": row.receipt_number,
        "date": row.payment_date.isoformat(),
        "amount": money_json(row.amount, row.currency),
        "method": row.method,
        "channel": row.channel,
        "payment_type": row.payment_type,
        "item_reference": row.item_reference,
        "status": row.status,
        "settlement_status": domain.NOT_SETTLED if row.status in domain.MONEY_WENT_BACK else row.settlement_status,
    }


def intent_created(intent: Intent) -> dict[str, Any]:
    """`POST /accounts/{account_number}/payment-intents`: what the browser needs to confirm the payment."""
    return {
        "payment_intent_id": intent.payment_intent_id,
        "client_secret": intent.client_secret,
        "amount": money_json(intent.amount, intent.currency),
        "currency": intent.currency,
        "payment_type": intent.metadata.get("payment_type"),
        "item_reference": intent.metadata.get("item_reference"),
        "status": "Pending",
    }


def intent_status(payment_intent_id: str, payment: Row[Any] | None) -> dict[str, Any]:
    """Pending until the gateway's payment has arrived; then the payment's status, with its receipt once posted."""
    if payment is None or payment.status == PaymentStatus.PENDING:
        return {
            "payment_intent_id": payment_intent_id,
            "status": "Pending",
            "receipt_number": None,
            "settlement_status": None,
        }
    failed = payment.status == PaymentStatus.FAILED
    return {
        "payment_intent_id": payment_intent_id,
        "status": payment.status,
        "receipt_number": None if failed else payment.receipt_number,
        "settlement_status": account_payment_row(payment)["settlement_status"],
    }


def preview_view(assessment: domain.Assessment, currency: str | None) -> dict[str, Any]:
    """`POST /payments/preview`: the analysis and change `POST /payments` would record, and what it would refuse."""
    analysis = assessment.analysis
    return {
        "valid": not assessment.problems,
        "currency": currency,
        "analysis": (
            {
                "due": f"{analysis.due:.2f}",
                "paid": f"{analysis.paid:.2f}",
                "difference": f"{analysis.difference:.2f}",
                "outcome": analysis.outcome.value,
            }
            if analysis
            else None
        ),
        "change_given": f"{assessment.change:.2f}" if assessment.change is not None else None,
        "problems": [{"code": p.code, "detail": p.detail, "field": p.field} for p in assessment.problems],
    }
