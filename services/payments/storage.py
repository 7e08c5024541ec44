"""The `payments` schema: receivables read model, payments, settings, idempotency keys, audit log."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Computed,
    Date,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    Sequence,
    String,
    Table,
    Text,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from shared.approvals import approvals_table
from shared.audit import audit_table
from shared.db import service_metadata
from shared.idempotency import idempotency_table
from shared.service import PlumbingTables

SCHEMA = "payments"
metadata = service_metadata(SCHEMA)
plumbing = PlumbingTables(metadata)
MONEY = Numeric(14, 2)

accounts = Table(
    "accounts",
    metadata,
    Column("account_number", String(50), primary_key=True),
    Column("name", Text, nullable=False),
    Column("service_address", Text, nullable=False),
    Column("phone", String(50)),
    Column("email", String(200)),
    Column("currency", String(3), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Billing's own figure at its last account event; what was allocated here since comes off it.
    Column("reported_balance", MONEY),
    Column("collected_since_report", MONEY, nullable=False, server_default=text("0")),
    # Case-insensitive partial search by name or account number, served by a trigram index.
    Column("search_text", Text, Computed("lower(name || ' ' || account_number)", persisted=True)),
    Index(
        "ix_accounts_search_trgm", "search_text", postgresql_using="gin", postgresql_ops={"search_text": "gin_trgm_ops"}
    ),
)

# Bills, service charges and installments billing told us about; `outstanding` falls as payments allocate.
receivables = Table(
    "receivables",
    metadata,
    Column("payment_type", String(20), primary_key=True),
    Column("item_reference", String(100), primary_key=True),
    Column("account_number", String(50), nullable=False, index=True),
    Column("description", Text, nullable=False),
    Column("period_or_date", String(20)),
    Column("issued_on", Date),
    Column("due_date", Date, nullable=False),
    Column("amount", MONEY, nullable=False),
    Column("outstanding", MONEY, nullable=False),
    Column("currency", String(3), nullable=False),
)

payment_id_seq = Sequence("payment_id_seq", metadata=metadata)
transaction_id_seq = Sequence("transaction_id_seq", metadata=metadata)
receipt_number_seq = Sequence("receipt_number_seq", metadata=metadata)

payments = Table(
    "payments",
    metadata,
    Column("payment_id", String(40), primary_key=True),
    Column("transaction_id", String(40), nullable=False, unique=True),
    Column("receipt_number", String(40), nullable=False, unique=True),
    Column("account_number", String(50), nullable=False),
    Column("payment_type", String(20), nullable=False),
    Column("item_reference", String(100), nullable=False),
    Column("channel", String(50), nullable=False),
    Column("method", String(50), nullable=False),
    Column("amount", MONEY, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("payment_date", Date, nullable=False),
    Column("consumer_name", Text, nullable=False),
    Column("status", String(30), nullable=False),
    Column("verification", String(30), nullable=False),
    Column("received_by", Text, nullable=False),
    Column("due", MONEY, nullable=False),
    Column("applied", MONEY, nullable=False),
    Column("outcome", String(10), nullable=False),
    Column("cash_received", MONEY),
    Column("change_given", MONEY),
    Column("notes", Text),
    # First seen: the counter's submission, or the gateway's first event for an online payment.
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    # When it was allocated; null while an online payment is pending or after it failed.
    Column("posted_at", DateTime(timezone=True)),
    Column("online", Boolean, nullable=False, server_default=false()),
    Column("payment_intent_id", String(100), unique=True),
    Column("gateway_status", String(30)),
    Column("webhook_status", String(30)),
    Column("settlement_status", String(30)),
    Column("settled_at", DateTime(timezone=True)),
    Column("verified_by", Text),
    Column("verified_at", DateTime(timezone=True)),
    Column("cancelled_by", Text),
    Column("cancelled_at", DateTime(timezone=True)),
    Column("cancel_reason", Text),
    Column("credit_note_number", String(40)),
    Column("credit_note_amount", MONEY),
    # The ledger of the payment's money (shared/ledger.py): applied + credited + refunded = amount while collected.
    Column("credited", MONEY, nullable=False, server_default=text("0")),
    Column("refunded", MONEY, nullable=False, server_default=text("0")),
    # Re-issued receipts after an adjustment: 1 until the first one.
    Column("receipt_version", Integer, nullable=False, server_default=text("1")),
    Column(
        "search_text",
        Text,
        Computed("lower(consumer_name || ' ' || receipt_number || ' ' || account_number)", persisted=True),
    ),
    Index(None, "account_number", "recorded_at"),
    # Keyset paging: one index per sort order, payment id breaking ties.
    Index("ix_payments_payment_date_id", "payment_date", "payment_id"),
    Index("ix_payments_amount_id", "amount", "payment_id"),
    Index("ix_payments_status_payment_date_id", "status", "payment_date", "payment_id"),
    Index(
        "ix_payments_search_trgm", "search_text", postgresql_using="gin", postgresql_ops={"search_text": "gin_trgm_ops"}
    ),
)

# A retried request with the same key gets the first answer back; a different body is a conflict.
idempotency_keys = idempotency_table(metadata)

# Choices and number formats an admin edits; one JSON value per key, defaults in `domain.PaymentSettings`.
settings = Table(
    "settings",
    metadata,
    Column("key", String(50), primary_key=True),
    Column("value", JSONB, nullable=False),
    Column("updated_by", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

audit_log = audit_table(metadata)

# The account's credit as credit_notes announced it: what `GET /consumers/{account}` shows as available credit, and
# what a partial refund gives back first.
credit_balances = Table(
    "credit_balances",
    metadata,
    Column("credit_note_number", String(40), primary_key=True),
    Column("account_number", String(50), nullable=False, index=True),
    Column("receipt_number", String(40), nullable=False, index=True),
    Column("amount", MONEY, nullable=False),
    Column("remaining", MONEY, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(20), nullable=False),
    Column("reason", String(50), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

# Disputes of a payment: from Stripe (`gateway_dispute_id`) or opened by staff at the counter.
disputes = Table(
    "disputes",
    metadata,
    Column("dispute_id", String(40), primary_key=True),
    Column("payment_id", String(40), nullable=False, index=True),
    Column("account_number", String(50), nullable=False),
    Column("gateway_dispute_id", String(100), unique=True),
    Column("source", String(10), nullable=False),
    Column("status", String(20), nullable=False),
    Column("amount", MONEY, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("reason", Text, nullable=False),
    Column("evidence_notes", Text),
    Column("opened_by", Text, nullable=False),
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("closed_by", Text),
    Column("closed_at", DateTime(timezone=True)),
    Column("outcome", String(10)),
)

# Evidence files of a dispute, kept in Postgres with the dispute they prove.
dispute_attachments = Table(
    "dispute_attachments",
    metadata,
    Column("attachment_id", String(40), primary_key=True),
    Column("dispute_id", String(40), nullable=False, index=True),
    Column("filename", String(200), nullable=False),
    Column("content_type", String(100), nullable=False),
    Column("size", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("uploaded_by", Text, nullable=False),
    Column("uploaded_at", DateTime(timezone=True), nullable=False),
)

# Corrections of a posted payment: moved to another item, or its amount corrected; applied at once at or under the
# limit, else after a billing manager's approval.
adjustments = Table(
    "adjustments",
    metadata,
    Column("adjustment_id", String(40), primary_key=True),
    Column("payment_id", String(40), nullable=False, index=True),
    Column("kind", String(10), nullable=False),
    Column("status", String(20), nullable=False),
    Column("request", JSONB, nullable=False),
    Column("before", JSONB),
    Column("after", JSONB),
    Column("reason", Text, nullable=False),
    Column("requested_by", Text, nullable=False),
    Column("requested_at", DateTime(timezone=True), nullable=False),
    Column("approval_id", String(40)),
    Column("approved_by", Text),
    Column("applied_at", DateTime(timezone=True)),
)

approvals = approvals_table(metadata)

# Items an arrangement in collections took over (`covered`: paid through its installments, not separately) or whose
# installment reference it withdrew (`withdrawn`: rescheduled or ended); `released` once the arrangement ended and
# the item is payable again (kept: a re-age holds it again). Kept apart from `receivables`, so a hold seen before
# billing's item (another topic) still holds it. `amount` is what the item owed when taken over, `owed` what is left
# of it after the arrangement's payments (taken off in `position` order), what the item reopens at.
item_holds = Table(
    "item_holds",
    metadata,
    Column("payment_type", String(20), primary_key=True),
    Column("item_reference", String(100), primary_key=True),
    Column("account_number", String(50), nullable=False, index=True),
    Column("arrangement_id", String(40), nullable=False, index=True),
    Column("kind", String(10), nullable=False),
    Column("amount", MONEY),
    Column("owed", MONEY),
    Column("position", Integer, nullable=False, server_default=text("0")),
    Column("held_at", DateTime(timezone=True), nullable=False),
)
