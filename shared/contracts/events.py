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


class ReceiptAvailable(Contract):
    """A document's content is stored and its PDF can be fetched (rendered on first request if need be)."""

    document: str = Field(examples=["receipt", "credit_note"])
    number: str
    account_number: str
    revision: int = Field(description="1 for the first content, +1 each time what the document says changes.")
    document_hash: str = Field(description="SHA-256 of the document's content, as printed on the document.")
    status: str = Field(examples=["Posted", "Cancelled", "Active", "Applied"])
    available_at: AwareDatetime


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


# --- gateway.events.v1: a Stripe payout with its balance transactions (for reconciliation's three-way match) ---


class PayoutBalanceTransaction(Contract):
    """One balance transaction of a payout, as Stripe lists it (`GET /v1/balance_transactions?payout=`)."""

    balance_transaction_id: str = Field(examples=["txn_1PaydeskA"])
    type: str = Field(description="Stripe's type.", examples=["charge", "refund", "adjustment", "stripe_fee"])
    amount: Money = Field(description="Gross, signed as Stripe signs it (a refund is negative).")
    fee: Money = Field(description="Stripe's fee on it (positive: what Stripe kept).")
    net: Money = Field(description="amount - fee: what it adds to the payout.")
    payment_intent_id: str | None = Field(default=None, description="The source charge's payment intent, if any.")
    source_id: str | None = Field(default=None, examples=["ch_1PaydeskA"])
    account_number: str | None = Field(default=None, description="The payment intent's metadata.account_number.")


class GatewayPayoutListed(Contract):
    """A payout and every balance transaction it carries: sum of `net` = `amount`, which the bank receives."""

    gateway: str = "stripe"
    payout_id: str = Field(examples=["po_1PaydeskTest0001"])
    amount: Money = Field(description="Net amount paid to the bank account.")
    arrival_date: date = Field(description="When Stripe expects the money in the bank account.")
    status: str = Field(examples=["paid", "in_transit"])
    balance_transactions: list[PayoutBalanceTransaction]
    listed_at: AwareDatetime


# --- reconciliation.commands.v1 (a bank pushes statement lines) ---


class BankStatementLineReceived(Contract):
    """One booked line a bank pushes (instead of a statement file); the envelope id makes it idempotent."""

    account: str = Field(examples=["US64SVBKUS6S3300958879"])
    bank_line_id: str = Field(description="The bank's own reference of the line.", examples=["BK-0401-0001"])
    booking_date: date
    value_date: date | None = None
    amount: Money = Field(description="Signed: a credit is positive, a debit negative.")
    reference: str = ""
    text: str = ""
    type_code: str = Field(default="", examples=["PMNT/RCDT/ESCT", "301", "NTRF"])
    counterparty: str = ""


# --- reconciliation.events.v1 ---


class StatementImported(Contract):
    statement_id: str = Field(examples=["STM-20250401-3f2a9c"])
    statement_ref: str = Field(description="The bank's identity of the statement: format, account and its id.")
    account: str
    opening_balance: Money
    closing_balance: Money
    from_date: date | None = None
    to_date: date | None = None
    line_count: int
    lines_total: Money | None = Field(
        default=None, description="The lines' absolute amounts added up: what there is to reconcile (kpi)."
    )
    imported_by: str
    imported_at: AwareDatetime


class BankLineMatched(Contract):
    """Bank lines reconciled with what was expected; the payments in it are now settled at the bank."""

    match_id: str
    rule: str = Field(examples=["reference_exact", "group_by_reference", "manual"])
    score: DecimalString = Field(description="0-100.")
    bank_line_ids: list[str]
    item_ids: list[str]
    amount: Money = Field(description="The bank lines' total.")
    differences: dict[str, str] = Field(default_factory=dict, examples=[{"amount": "0.00", "gateway_fees": "1.77"}])
    payment_ids: list[str] = Field(default_factory=list)
    payout_id: str | None = None
    matched_by: str
    matched_at: AwareDatetime


class PaymentSettlementReconciled(Contract):
    """A payment's money was found on the bank statement: its settlement status becomes Settled."""

    payment_id: str
    payment_intent_id: str | None = Field(default=None, description="For online payments.")
    account_number: str
    settlement_status: str = Field(default="Settled", examples=["Settled"])
    match_id: str
    bank_line_ids: list[str]
    payout_id: str | None = None
    settled_at: AwareDatetime


class ReconciliationExceptionRaised(Contract):
    exception_id: str
    kind: str = Field(examples=["unmatched_bank_line", "missing_deposit", "amount_difference", "till_variance"])
    subject: str
    amount: Money
    detail: str
    raised_at: AwareDatetime


class ReconciliationExceptionResolved(Contract):
    exception_id: str
    kind: str
    subject: str
    resolution: str = Field(examples=["manual_match", "split", "mark_as_fee", "ignore", "adjustment_requested"])
    resolved_by: str
    reason: str | None = None
    resolved_at: AwareDatetime


class TillClosed(Contract):
    teller: str
    business_date: date
    expected_cash: Money
    expected_cheques: Money
    counted_cash: Money
    counted_cheques: Money
    variance: Money = Field(description="Counted minus expected: negative is a shortage.")
    closed_by: str
    closed_at: AwareDatetime
    exception_id: str | None = None


# --- collections.events.v1 and collections.commands.v1 ---


class CoveredItem(Contract):
    """A bill, service charge or installment an arrangement took over: no longer separately payable."""

    payment_type: PaymentType
    item_reference: str = Field(examples=["INV-2025-001234"])
    amount: Money = Field(description="What was still owed on it when the arrangement took it over.")


class ArrangementInstallment(Contract):
    number: int = Field(ge=1)
    item_reference: str = Field(description="`PLAN-ID/n`, what payments takes.", examples=["PA-2025-000001/1"])
    amount: Money
    due_date: date
    down_payment: bool = False


class ArrangementCreated(Contract):
    """A payment arrangement is in force (at once, or once a billing manager approved it)."""

    arrangement_id: str = Field(examples=["PA-2025-000001"])
    plan_id: str = Field(description="The installment plan id its installments are payable under.")
    account_number: str
    total: Money
    down_payment: Money
    frequency: str = Field(examples=["weekly", "fortnightly", "monthly"])
    first_due_date: date
    grace_days: int
    installments: list[ArrangementInstallment]
    covered_items: list[CoveredItem] = Field(
        description="Items the arrangement took over; payments should stop offering them as separately payable."
    )
    reaged_from: str | None = Field(default=None, description="The arrangement this settlement plan re-aged.")
    executive: str
    created_by: str
    approved_by: str | None = None
    created_at: AwareDatetime


class ArrangementModified(Contract):
    """The unpaid part of an arrangement was rescheduled: new installments under a new plan id."""

    arrangement_id: str
    account_number: str
    plan_id: str = Field(description="The new plan id; the withdrawn references are no longer payable.")
    withdrawn_references: list[str]
    installments: list[ArrangementInstallment]
    remaining: Money
    reason: str
    modified_by: str
    modified_at: AwareDatetime


class ArrangementClosed(Contract):
    """`arrangement.broken`, `.completed`, `.cancelled` or `.reaged`: the arrangement is no longer in force."""

    arrangement_id: str
    account_number: str
    status: str = Field(examples=["Broken", "Completed", "Cancelled", "Re-aged"])
    paid: Money
    remaining: Money = Field(description="What returns to arrears (or moves into the settlement plan on re-age).")
    withdrawn_references: list[str] = Field(description="Unpaid installments no longer payable.")
    covered_items: list[CoveredItem] = Field(description="The items the arrangement had taken over.")
    reason: str
    closed_by: str
    closed_at: AwareDatetime


class InstallmentMissed(Contract):
    arrangement_id: str
    account_number: str
    item_reference: str = Field(examples=["PA-2025-000001/2"])
    number: int
    amount: Money
    unpaid: Money
    due_date: date
    grace_days: int
    missed_count: int = Field(description="Installments of this arrangement missed so far, this one included.")
    executive: str
    missed_on: date


class InstallmentAllocation(Contract):
    item_reference: str
    amount: Money


class ArrangementPaymentApplied(Contract):
    """A payment (or, with `reversed`, its cancellation or refund) matched to an arrangement's installments."""

    arrangement_id: str
    account_number: str
    receipt_number: str
    payment_id: str
    paid_reference: str = Field(description="The item the payment was made against.")
    allocations: list[InstallmentAllocation]
    amount: Money = Field(description="What the arrangement received (or lost back, when reversed).")
    paid_on: date
    executive: str
    reversed: bool = False
    compliance: str = Field(examples=["on_time", "late_within_grace", "paid_after_missed", "partial"])


class DisconnectionChanged(Contract):
    """`disconnection.hold_placed`, `.hold_released`, `.eligible` or `.cleared`, for field operations."""

    account_number: str
    state: str = Field(examples=["hold", "eligible", "clear"])
    reason: str
    arrangement_id: str | None = None
    amount_overdue: Money
    days_overdue: int
    changed_at: AwareDatetime


class PromiseBroken(Contract):
    activity_id: str
    account_number: str
    promised: Money
    paid: Money
    promised_on: date
    executive: str
    broken_on: date


class CollectionsAlertRaised(Contract):
    """An alert to the account's assigned executive (a missed installment, a broken plan or promise)."""

    alert_id: str
    executive: str
    account_number: str
    kind: str = Field(examples=["installment_missed", "arrangement_broken", "promise_broken"])
    message: str
    arrangement_id: str | None = None
    raised_at: AwareDatetime


class CollectionActivityRecordRequested(Contract):
    """A field system (a technician's handheld) logs a call, visit, promise to pay or note."""

    account_number: str
    activity_type: str = Field(examples=["call", "visit", "promise_to_pay", "note"])
    executive: str
    outcome: str | None = None
    customer_response: str | None = None
    notes: str | None = None
    promise_amount: DecimalString | None = None
    promise_date: date | None = None
    follow_up_on: date | None = None


# --- payouts: what it consumes from others (defined here until their owners publish them) ---


class GatewayPayoutStatusChanged(Contract):
    """A Stripe `transfer.*` or `payout.*` webhook about money going out (gateway.events.v1), normalised by
    gateway_bridge. Payouts finds its payout by `paydesk_payout_id` (our metadata) or by `object_id`."""

    gateway: str = "stripe"
    gateway_event_id: str = Field(examples=["evt_1PZ..."])
    event_type: str = Field(
        description="Stripe's event type.",
        examples=["transfer.created", "transfer.reversed", "payout.paid", "payout.failed", "payout.canceled"],
    )
    object_type: str = Field(examples=["transfer", "payout"])
    object_id: str = Field(description="The Stripe transfer (tr_...) or payout (po_...) id.", examples=["tr_1PZ..."])
    connected_account: str | None = Field(
        default=None, description="The connected account (`acct_...`) the object belongs to or pays."
    )
    paydesk_payout_id: str | None = Field(
        default=None, description="`metadata.paydesk_payout_id` of the Stripe object, when we created it."
    )
    amount: Money | None = None
    failure_code: str | None = Field(default=None, examples=["account_closed"])
    failure_message: str | None = None
    fully_reversed: bool | None = Field(
        default=None,
        description="A transfer's `reversed`: true once the whole amount came back (a partial reversal is false); "
        "null for payouts.",
    )
    occurred_at: AwareDatetime


# --- payouts.commands.v1 ---


class PayoutBankStatusReported(Contract):
    """A bank statement line settled (or returned) a bank payout: the reconciliation service tells payouts.
    The pain.001 end-to-end id of every transfer is its payout id."""

    payout_id: str = Field(examples=["PO-000123"])
    status: str = Field(examples=["Paid", "Failed", "Returned"])
    reason: str | None = Field(default=None, examples=["AC04 account closed"])
    reported_by: str = Field(examples=["reconciliation"])
    occurred_at: AwareDatetime


# --- payouts.events.v1 ---


class EarningLine(Contract):
    """An amount owed to a payee: a commission, a refund, a manual earning or adjustment, an imported line, or
    the reversal of one of those (negative)."""

    line_id: str = Field(examples=["COM-R-5001"])
    payee_id: str = Field(examples=["PE-10001"])
    kind: str = Field(examples=["commission", "reversal", "refund", "manual", "adjustment", "import"])
    amount: Money
    earned_on: date
    source_ref: str | None = Field(default=None, description="The payment's receipt, credit note or import row.")
    reverses_line_id: str | None = None
    reason: str | None = None
    created_by: str
    created_at: AwareDatetime


class PayoutRunApproved(Contract):
    run_id: str = Field(examples=["RUN-000012"])
    approved_by: str
    requested_by: str
    payouts: int = Field(ge=0)
    totals: list[Money] = Field(description="One total per payout currency.")
    approved_at: AwareDatetime


class PayoutRunExecuted(Contract):
    run_id: str
    executed_by: str
    sent: int = Field(ge=0, description="Payouts sent in this execution (not counting ones sent before).")
    bank_files: list[str] = Field(default_factory=list, description="pain.001 file ids, one per debtor account.")
    executed_at: AwareDatetime


class PayoutStatusChanged(Contract):
    """One payout moved: `payout.sent|paid|failed|returned` (Scheduled -> Approved -> Sent -> Paid/Failed/Returned)."""

    payout_id: str = Field(examples=["PO-000123"])
    run_id: str
    payee_id: str
    amount: Money
    method: str = Field(examples=["stripe", "bank"])
    previous_status: str
    status: str = Field(examples=["Sent", "Paid", "Failed", "Returned"])
    reference: str | None = Field(default=None, description="Stripe transfer id or the bank end-to-end id.")
    reason: str | None = None
    changed_at: AwareDatetime


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
    """A billing manager asked for a credit's unused balance to be paid back to the customer: credit_notes
    publishes it, payouts pays it out as a refund line."""

    credit_note_number: str = Field(examples=["CN-46129"])
    account_number: str = Field(examples=["WU-10001"])
    receipt_number: str = Field(examples=["R-5001"])
    consumer_name: str | None = Field(default=None, examples=["John Doe"], description="The payee's name, if known.")
    amount: Money = Field(description="What is to be refunded (the credit's remaining balance or part of it).")
    reason: str = Field(examples=["Customer moved out"])
    requested_by: str
    requested_at: AwareDatetime
    refund_id: str | None = Field(
        default=None,
        description="Identifies one refund request; defaults to the credit-note number (one refund per note).",
    )


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
    "receipt.available": ReceiptAvailable,
    "alert.raised": AlertRaised,
    "usage.tracked": UsageTracked,
    "approval.requested": ApprovalRequested,
    "approval.decided": ApprovalDecided,
    "gateway.payout_listed": GatewayPayoutListed,
    "bank.statement_line_received": BankStatementLineReceived,
    "statement.imported": StatementImported,
    "bank_line.matched": BankLineMatched,
    "payment.settlement_reconciled": PaymentSettlementReconciled,
    "reconciliation.exception_raised": ReconciliationExceptionRaised,
    "reconciliation.exception_resolved": ReconciliationExceptionResolved,
    "till.closed": TillClosed,
    "arrangement.created": ArrangementCreated,
    "arrangement.modified": ArrangementModified,
    "arrangement.broken": ArrangementClosed,
    "arrangement.completed": ArrangementClosed,
    "arrangement.cancelled": ArrangementClosed,
    "arrangement.reaged": ArrangementClosed,
    "arrangement.payment_applied": ArrangementPaymentApplied,
    "installment.missed": InstallmentMissed,
    "disconnection.hold_placed": DisconnectionChanged,
    "disconnection.hold_released": DisconnectionChanged,
    "disconnection.eligible": DisconnectionChanged,
    "disconnection.cleared": DisconnectionChanged,
    "promise.broken": PromiseBroken,
    "collections.alert_raised": CollectionsAlertRaised,
    "collection_activity.record_requested": CollectionActivityRecordRequested,
    "gateway.payout_status_changed": GatewayPayoutStatusChanged,
    "earning.accrued": EarningLine,
    "earning.reversed": EarningLine,
    "payout_run.approved": PayoutRunApproved,
    "payout_run.executed": PayoutRunExecuted,
    "payout.sent": PayoutStatusChanged,
    "payout.paid": PayoutStatusChanged,
    "payout.failed": PayoutStatusChanged,
    "payout.returned": PayoutStatusChanged,
    "payout.bank_status_reported": PayoutBankStatusReported,
    **MONEY_SAFETY_EVENT_TYPES,
}


T = TypeVar("T", bound=Contract)


def parse_data(envelope: Envelope, model: type[T]) -> T:
    """Validate an envelope's data as the given payload model (raises pydantic's ValidationError)."""
    return model.model_validate(envelope.data)
