"""Payload models of every event type, keyed by the envelope's `type`.

Money travels as a decimal string plus an ISO 4217 currency, never as a JSON number.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, TypeVar

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from shared.contracts.envelope import Envelope


def _decimal_string(value: Any) -> Any:
    if isinstance(value, float):
        raise ValueError("money must be a decimal string, not a float")
    return value


DecimalString = Annotated[
    Decimal,
    BeforeValidator(_decimal_string),
    PlainSerializer(lambda d: format(d, "f"), return_type=str, when_used="json"),
]


class Contract(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Money(Contract):
    amount: DecimalString = Field(description="Decimal string.", examples=["145.50"])
    currency: str = Field(default="USD", min_length=3, max_length=3, examples=["USD"])


class PaymentType(StrEnum):
    BILL = "bill"
    SERVICE = "service"
    INSTALLMENT = "installment"


class PaymentStatus(StrEnum):
    """A payment's status as events and screens spell it; the values are wire strings and never change."""

    PENDING = "Pending"  # online: the gateway has not confirmed it yet
    FAILED = "Failed"  # online: the gateway refused it; nothing was collected
    POSTED = "Posted"  # allocated to its item
    DISPUTED = "Disputed"  # the cardholder disputed it at their bank; the outcome is open
    REFUNDED = "Refunded"  # the money went back to the customer
    CANCELLED = "Cancelled"  # an admin reversed it; it never happened
    CHARGED_BACK = "Charged back"  # the utility lost the dispute: the bank took the money back


# Disputed counts: while the outcome is open the utility holds the money, and payments keeps the item allocated.
# A dispute ends Won (the payment is Posted again: still counted, nothing moves) or Lost (Charged back: reversed
# like a refund, so it leaves the figures in the period it was counted). Counting Disputed means neither outcome
# ever double-counts: Won changes nothing, Lost takes the money out once.
COLLECTED_STATUSES = frozenset({PaymentStatus.POSTED, PaymentStatus.DISPUTED})


def counts_as_collected(status: str) -> bool:
    """Whether a payment in `status` is money collected (the one rule for balances, KPIs and documents)."""
    return status in COLLECTED_STATUSES


# --- billing.receivables.v1 (published by the billing / customer-information system) ---


class AccountUpserted(Contract):
    account_number: str = Field(examples=["WU-10001"])
    name: str = Field(examples=["John Doe"])
    service_address: str = Field(examples=["123 Main Street, Cityville"])
    phone: str | None = Field(default=None, examples=["(555) 123-4567"])
    email: str | None = Field(default=None, examples=["john.doe@email.com"])
    currency: str = "USD"
    current_balance: Money | None = Field(
        default=None, description="The balance on billing's books when it sent this event, if it tells."
    )


class BillIssued(Contract):
    account_number: str
    invoice_number: str = Field(examples=["INV-2025-001234"])
    billing_period: str = Field(description="Month billed, YYYY-MM.", examples=["2025-03"])
    amount: Money
    issued_on: date
    due_date: date


class ServiceChargeIssued(Contract):
    account_number: str
    service_charge_id: str = Field(examples=["SC-2025-0001"])
    description: str = Field(examples=["Reconnection Fee"])
    amount: Money
    service_date: date
    due_date: date


class Installment(Contract):
    number: int = Field(ge=1)
    amount: Money
    due_date: date


class InstallmentPlanCreated(Contract):
    account_number: str
    plan_id: str = Field(examples=["PP-2025-0034"])
    created_on: date
    installments: list[Installment] = Field(min_length=1)


# --- payments.commands.v1 (other enterprise systems ask payments to record a payment) ---


class PaymentRecordRequested(Contract):
    """Same fields as the `POST /payments` body; the envelope id is the command id (idempotency)."""

    account_number: str
    payment_type: PaymentType
    item_reference: str = Field(description="Invoice number, service charge id or `PLAN-ID/installment-no`.")
    channel: str | None = Field(default=None, description="Defaults to the configured default channel.")
    method: str = Field(examples=["Cash"])
    amount: DecimalString
    currency: str = "USD"
    payment_date: date
    cash_received: DecimalString | None = None
    notes: str | None = None


# --- gateway.events.v1 (gateway_bridge normalises Stripe webhooks) ---


class GatewayPaymentStatusChanged(Contract):
    gateway: str = "stripe"
    gateway_event_id: str
    payment_intent_id: str
    account_number: str
    payment_type: PaymentType
    item_reference: str
    amount: Money
    gateway_status: str = Field(description="The gateway's own word, e.g. `succeeded`.")
    webhook_status: str = Field(examples=["In Settlement", "Failed", "Not Confirmed"])
    settlement_status: str = Field(examples=["In Progress", "N/A"])
    occurred_at: AwareDatetime
    superseded: bool = Field(
        default=False,
        description="True when a later status of this payment intent was already published (Stripe sent this "
        "one late); kept for the audit trail, it must not move the payment's status back.",
    )
    initiated_at: AwareDatetime | None = Field(
        default=None, description="When the payment intent was created at Stripe (for the processing time)."
    )
    amount_refunded: Money | None = Field(default=None, description="For refunds: how much was refunded so far.")
    dispute_id: str | None = Field(default=None, description="For disputes: the gateway's dispute id.")
    dispute_reason: str | None = Field(default=None, description="For disputes: the cardholder's stated reason.")


class GatewaySettlementStatusChanged(Contract):
    gateway: str = "stripe"
    gateway_event_id: str
    payment_intent_id: str
    payout_id: str
    payout_status: str = Field(examples=["created", "paid", "failed"])
    webhook_status: str | None = Field(description="None keeps the previous webhook status.")
    settlement_status: str = Field(examples=["In Progress", "Success", "Failed"])
    occurred_at: AwareDatetime
    account_number: str | None = Field(default=None, description="The payment's account (also the Kafka key).")
    superseded: bool = Field(
        default=False,
        description="True when a later payout status of this payment was already published; audit only.",
    )
    initiated_at: AwareDatetime | None = Field(
        default=None, description="When the payment intent was created at Stripe (for the processing time)."
    )
    amount: Money | None = Field(default=None, description="The payment's amount.")


# --- payments.events.v1 ---


class ConsumerSnapshot(Contract):
    """What documents and read models need to know about the consumer at the time of the event."""

    account_number: str
    name: str
    service_address: str
    phone: str | None = None
    email: str | None = None


class ItemSnapshot(Contract):
    """The bill, service charge or installment a payment went to."""

    payment_type: PaymentType
    item_reference: str
    description: str = Field(examples=["Mar 2025 bill", "Reconnection Fee"])
    period_or_date: str | None = Field(default=None, examples=["2025-03", "2025-04-18"])
    issued_on: date | None = None
    due: Money = Field(description="What the item still owed when the payment came in.")
    amount: Money | None = Field(default=None, description="The item's billed amount (as billing issued it).")
    paid_before: Money | None = Field(default=None, description="What earlier payments had settled of the item.")


class PaymentPosted(Contract):
    payment_id: str = Field(examples=["PAY-2025-004521"])
    transaction_id: str = Field(examples=["TXN-2025-008934"])
    receipt_number: str = Field(examples=["R-5001"])
    consumer: ConsumerSnapshot
    item: ItemSnapshot
    channel: str
    method: str
    amount: Money
    payment_date: date
    posted_at: AwareDatetime
    received_by: str
    status: str = Field(examples=["Posted"])
    verification: str = Field(examples=["Verified", "Pending"])
    difference: Money
    outcome: str = Field(examples=["exact", "over", "under"])
    cash_received: Money | None = None
    change_given: Money | None = None
    notes: str | None = None


class PaymentStatusChanged(Contract):
    payment_id: str
    receipt_number: str
    account_number: str
    previous_status: str
    status: str
    webhook_status: str | None = None
    settlement_status: str | None = None
    changed_at: AwareDatetime


class PaymentVerified(Contract):
    payment_id: str
    receipt_number: str
    account_number: str
    verified_by: str
    verified_at: AwareDatetime


class PaymentCancelled(Contract):
    payment_id: str
    receipt_number: str
    account_number: str
    amount: Money
    reason: str
    cancelled_by: str
    cancelled_at: AwareDatetime


class PaymentOverpaid(Contract):
    payment_id: str
    receipt_number: str
    consumer: ConsumerSnapshot
    payment_amount: Money
    overpaid: Money
    posted_at: AwareDatetime


class PaymentRecordRejected(Contract):
    """Tells the sender of a `payment.record_requested` command why it was not recorded."""

    command_id: uuid.UUID
    reason: str
    errors: list[str] = Field(default_factory=list)


# --- creditnotes.events.v1 ---


class CreditNoteIssued(Contract):
    credit_note_number: str = Field(examples=["CN-46129"])
    account_number: str
    consumer_name: str
    receipt_number: str
    payment_id: str
    amount: Money
    reason: str
    created_by: str
    created_at: AwareDatetime
    expires_at: AwareDatetime
    remarks: str | None = Field(default=None, description="Staff's internal notes, for the credit-note document.")


class CreditNoteApplied(Contract):
    credit_note_number: str
    account_number: str
    payment_type: PaymentType
    item_reference: str
    applied: Money
    remaining: Money
    status: str
    applied_by: str
    applied_at: AwareDatetime


class CreditNoteExpired(Contract):
    credit_note_number: str
    account_number: str
    remaining: Money
    expired_at: AwareDatetime


# --- receipts.events.v1 ---


class ReceiptRendered(Contract):
    document: str = Field(examples=["receipt", "credit_note"])
    number: str
    account_number: str
    sha256: str = Field(description="SHA-256 of the PDF file's bytes.")
    rendered_at: datetime
    revision: int | None = Field(default=None, description="1 for the first rendering, +1 per re-render.")
    document_hash: str | None = Field(
        default=None, description="SHA-256 of the document's content, as printed on the document."
    )
    status: str | None = Field(default=None, examples=["Posted", "Cancelled", "Active", "Applied"])


# --- kpi.alerts.v1 ---


class AlertRaised(Contract):
    """A threshold a billing manager configured was crossed."""

    alert_id: str
    metric: str = Field(examples=["collection_rate", "failed_online_payments_per_hour"])
    comparison: str = Field(examples=["below", "above"])
    threshold: DecimalString
    value: DecimalString
    period: str = Field(examples=["2025-04", "2025-04-20T10:00Z/PT1H"])
    raised_at: AwareDatetime


# --- analytics.events.v1 (the seed's usage-tracking plan, as far as the backend can observe it) ---


class UsageTracked(Contract):
    """One usage-tracking event, e.g. `payment_processed`, `report_generated`, `dashboard_view`."""

    event: str = Field(examples=["payment_processed", "payment_history_viewed", "report_generated", "dashboard_view"])
    user_id: str
    properties: dict[str, str] = Field(default_factory=dict)
    occurred_at: AwareDatetime


class ApprovalRequested(Contract):
    """A change above its limit waits for a second person (maker-checker)."""

    approval_id: str = Field(examples=["APR-7f3c2a"])
    kind: str = Field(
        description="What would be applied.", examples=["payment_adjustment", "credit_note", "payout_run"]
    )
    subject: str = Field(description="What it is about: a payment id, a credit-note number, a run id.")
    amount: Money | None = None
    requested_by: str
    reason: str
    requested_at: AwareDatetime


class ApprovalDecided(Contract):
    """A pending approval was approved or rejected by someone other than its requester."""

    approval_id: str
    kind: str
    subject: str
    approved: bool
    decided_by: str
    reason: str | None = None
    decided_at: AwareDatetime


# --- money safety: reversals, adjustments, disputes, credit balances (payments.events.v1, creditnotes.events.v1) ---
# Kept in one section so that other branches adding their own events above EVENT_TYPES merge cleanly.


class ItemRef(Contract):
    payment_type: PaymentType
    item_reference: str


class ReversedApplication(Contract):
    """Credit once applied to an item and now taken back: the item is owed that amount again."""

    application_id: str
    payment_type: PaymentType
    item_reference: str
    amount: Money
    applied_at: AwareDatetime = Field(description="When it was applied: KPIs take it back out of that period.")


class CreditNoteVoided(Contract):
    """Credit taken back because the money behind it went back (cancellation, refund, lost dispute)."""

    credit_note_number: str
    account_number: str
    receipt_number: str
    payment_id: str
    voided: Money = Field(description="Unused credit voided now.")
    reversed: list[ReversedApplication] = Field(default_factory=list, description="Applications taken back.")
    remaining: Money = Field(description="Unused credit left after this (0 once Voided).")
    status: str = Field(examples=["Voided", "Active"])
    reason: str = Field(examples=["payment cancelled: Entered twice", "payment refunded", "dispute lost"])
    voided_by: str
    voided_at: AwareDatetime


class CreditNoteRefundRequested(Contract):
    """A billing manager asked for a credit's unused balance to be paid back to the customer (outbound side)."""

    credit_note_number: str
    account_number: str
    receipt_number: str
    amount: Money
    reason: str
    requested_by: str
    requested_at: AwareDatetime


class PaymentPartiallyRefunded(Contract):
    """Part of a payment went back: unused credit first (`credit_to_void`), then what it settled."""

    payment_id: str
    receipt_number: str
    account_number: str
    payment_type: PaymentType
    item_reference: str
    refunded: Money = Field(description="This refund.")
    refunded_total: Money = Field(description="Every refund of the payment so far.")
    settled_reduction: Money = Field(description="Taken off the item the payment settled (owed again).")
    credit_to_void: Money = Field(description="What the payment's credit notes give back (credit_notes voids it).")
    refunded_at: AwareDatetime


class PaymentAdjusted(Contract):
    """A posted payment moved to another item of the account, or its amount corrected: a reversal plus a new
    allocation, applied in one transaction."""

    adjustment_id: str
    payment_id: str
    receipt_number: str
    account_number: str
    kind: str = Field(examples=["move", "amount"])
    previous_item: ItemRef
    previous_amount: Money
    previous_applied: Money
    item: ItemSnapshot
    amount: Money
    applied: Money
    reason: str
    requested_by: str
    approved_by: str | None = None
    approval_id: str | None = None
    receipt_version: int = Field(ge=2, description="The receipt is re-issued under this version.")
    adjusted_at: AwareDatetime


class PaymentDisputeOpened(Contract):
    dispute_id: str
    payment_id: str
    receipt_number: str
    account_number: str
    amount: Money
    reason: str
    source: str = Field(examples=["stripe", "staff"])
    opened_by: str
    opened_at: AwareDatetime


class PaymentDisputeClosed(Contract):
    """Won: the payment counts as collected again. Lost: reversed like a refund (status Charged back)."""

    dispute_id: str
    payment_id: str
    receipt_number: str
    account_number: str
    amount: Money
    outcome: str = Field(examples=["won", "lost"])
    closed_by: str
    closed_at: AwareDatetime


MONEY_SAFETY_EVENT_TYPES: dict[str, type[Contract]] = {
    "credit_note.voided": CreditNoteVoided,
    "credit_note.refund_requested": CreditNoteRefundRequested,
    "payment.partially_refunded": PaymentPartiallyRefunded,
    "payment.adjusted": PaymentAdjusted,
    "payment.dispute_opened": PaymentDisputeOpened,
    "payment.dispute_closed": PaymentDisputeClosed,
}


EVENT_TYPES: dict[str, type[Contract]] = {
    "account.upserted": AccountUpserted,
    "bill.issued": BillIssued,
    "service_charge.issued": ServiceChargeIssued,
    "installment_plan.created": InstallmentPlanCreated,
    "payment.record_requested": PaymentRecordRequested,
    "gateway.payment_status_changed": GatewayPaymentStatusChanged,
    "gateway.settlement_status_changed": GatewaySettlementStatusChanged,
    "payment.posted": PaymentPosted,
    "payment.status_changed": PaymentStatusChanged,
    "payment.verified": PaymentVerified,
    "payment.cancelled": PaymentCancelled,
    "payment.overpaid": PaymentOverpaid,
    "payment.record_rejected": PaymentRecordRejected,
    "credit_note.issued": CreditNoteIssued,
    "credit_note.applied": CreditNoteApplied,
    "credit_note.expired": CreditNoteExpired,
    "receipt.rendered": ReceiptRendered,
    "alert.raised": AlertRaised,
    "usage.tracked": UsageTracked,
    "approval.requested": ApprovalRequested,
    "approval.decided": ApprovalDecided,
    **MONEY_SAFETY_EVENT_TYPES,
}


T = TypeVar("T", bound=Contract)


def parse_data(envelope: Envelope, model: type[T]) -> T:
    """Validate an envelope's data as the given payload model (raises pydantic's ValidationError)."""
    return model.model_validate(envelope.data)
