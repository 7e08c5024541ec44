"""Tables of the `reconciliation` schema: imports and statements with their lines, what is expected at the bank,
matches, exceptions, till closes, Stripe payouts, column mappings, and the kit's audit, idempotency, approvals."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    Numeric,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from shared.approvals import approvals_table
from shared.audit import audit_table
from shared.db import service_metadata
from shared.idempotency import idempotency_table
from shared.service import PlumbingTables

SCHEMA = "reconciliation"
metadata = service_metadata(SCHEMA)
plumbing = PlumbingTables(metadata)
MONEY = Numeric(14, 2)

# One row per uploaded file: the same bytes twice are recognised by their hash.
imports = Table(
    "imports",
    metadata,
    Column("import_id", String(40), primary_key=True),
    Column("file_sha256", String(64), nullable=False, unique=True),
    Column("filename", Text, nullable=False),
    Column("format", String(20), nullable=False),
    Column("imported_by", Text, nullable=False),
    Column("imported_at", DateTime(timezone=True), nullable=False),
    Column("statement_ids", JSONB, nullable=False),
)

# A bank statement; `statement_ref` is the bank's own identity of it (account + statement id), so the same
# statement arriving in another file is recognised too.
statements = Table(
    "statements",
    metadata,
    Column("statement_id", String(40), primary_key=True),
    Column("statement_ref", String(300), nullable=False, unique=True),
    Column("import_id", String(40)),
    Column("account", String(100), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("opening_balance", MONEY, nullable=False),
    Column("closing_balance", MONEY, nullable=False),
    Column("from_date", Date),
    Column("to_date", Date),
    Column("line_count", Integer, nullable=False),
    Column("source", String(20), nullable=False),
    Column("imported_by", Text, nullable=False),
    Column("imported_at", DateTime(timezone=True), nullable=False),
)

bank_lines = Table(
    "bank_lines",
    metadata,
    Column("line_id", String(60), primary_key=True),
    Column("statement_id", String(40), nullable=False, index=True),
    Column("source_line", Integer, nullable=False),
    Column("booking_date", Date, nullable=False),
    Column("value_date", Date),
    Column("amount", MONEY, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("reference", Text, nullable=False, server_default=""),
    Column("bank_reference", Text, nullable=False, server_default=""),
    Column("text", Text, nullable=False, server_default=""),
    Column("type_code", String(40), nullable=False, server_default=""),
    Column("counterparty", Text, nullable=False, server_default=""),
    Column("status", String(20), nullable=False),
    Column("match_id", String(40)),
    # A line split by hand: its parts are lines too, pointing back here; the parent is then `split`.
    Column("parent_line_id", String(60)),
    Index("ix_bank_lines_open", "status", postgresql_where=text("status IN ('unmatched', 'expected', 'excepted')")),
)

# What should reach the bank: each counter payment (grouped into its branch's day deposit), each balance
# transaction of a Stripe payout (grouped by payout), lockbox batches; with its T+N window.
expected_items = Table(
    "expected_items",
    metadata,
    Column("item_id", String(120), primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("channel", String(50), nullable=False),
    Column("reference", String(120), nullable=False, server_default=""),
    Column("group_key", String(160), index=True),
    Column("amount", MONEY, nullable=False),
    Column("gateway_fee", MONEY, nullable=False, server_default="0"),
    Column("currency", String(3), nullable=False),
    Column("origin_date", Date, nullable=False),
    Column("window_days", Integer, nullable=False),
    Column("status", String(20), nullable=False),
    Column("match_id", String(40)),
    Column("payment_id", String(40), index=True),
    Column("payment_intent_id", String(100)),
    Column("account_number", String(50)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_expected_items_open", "status", postgresql_where=text("status IN ('expected', 'missing')")),
)

# Payments as payments announced them: counter takings for till close, online ones for the Stripe legs.
payments = Table(
    "payments",
    metadata,
    Column("payment_id", String(40), primary_key=True),
    Column("receipt_number", String(40), nullable=False),
    Column("account_number", String(50), nullable=False),
    Column("channel", String(50), nullable=False),
    Column("method", String(50), nullable=False),
    Column("amount", MONEY, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("cash_received", MONEY),
    Column("change_given", MONEY),
    Column("received_by", Text, nullable=False),
    Column("payment_date", Date, nullable=False),
    Column("status", String(30), nullable=False),
    Column("payment_intent_id", String(100), unique=True),
    Column("settlement_status", String(30), nullable=False, server_default="Unsettled"),
    Column("settled_at", DateTime(timezone=True)),
    Index("ix_reconciliation_payments_till", "received_by", "payment_date"),
)

# Online payments as the gateway announced them: which account and amount a payment intent carries.
gateway_intents = Table(
    "gateway_intents",
    metadata,
    Column("payment_intent_id", String(100), primary_key=True),
    Column("account_number", String(50), nullable=False),
    Column("item_reference", String(100), nullable=False),
    Column("amount", MONEY, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("payout_id", String(100)),
)

payouts = Table(
    "payouts",
    metadata,
    Column("payout_id", String(100), primary_key=True),
    Column("amount", MONEY, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("arrival_date", Date, nullable=False),
    Column("status", String(20), nullable=False),
    Column("gross", MONEY, nullable=False),
    Column("fees", MONEY, nullable=False),
    Column("transaction_count", Integer, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
)

matches = Table(
    "matches",
    metadata,
    Column("match_id", String(40), primary_key=True),
    Column("rule", String(50), nullable=False),
    Column("score", Numeric(5, 2), nullable=False),
    Column("line_ids", JSONB, nullable=False),
    Column("item_ids", JSONB, nullable=False),
    Column("line_total", MONEY, nullable=False),
    Column("item_total", MONEY, nullable=False),
    Column("differences", JSONB, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("matched_by", Text, nullable=False),
    Column("matched_at", DateTime(timezone=True), nullable=False, index=True),
)

exceptions = Table(
    "exceptions",
    metadata,
    Column("exception_id", String(40), primary_key=True),
    Column("kind", String(30), nullable=False),
    # The bank line, expected item, match or till it is about; one open exception per subject.
    Column("subject", String(160), nullable=False),
    Column("amount", MONEY, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("detail", Text, nullable=False),
    Column("raised_at", DateTime(timezone=True), nullable=False),
    Column("owner", Text),
    Column("status", String(20), nullable=False),
    Column("resolution", String(30)),
    Column("resolved_by", Text),
    Column("resolved_at", DateTime(timezone=True)),
    Column("reason", Text),
    Index("uq_exceptions_open_subject", "subject", unique=True, postgresql_where=text("status = 'open'")),
    Index("ix_exceptions_queue", "status", "raised_at"),
)

till_closes = Table(
    "till_closes",
    metadata,
    Column("teller", String(200), primary_key=True),
    Column("business_date", Date, primary_key=True),
    Column("currency", String(3), nullable=False),
    Column("expected_cash", MONEY, nullable=False),
    Column("expected_cheques", MONEY, nullable=False),
    Column("counted_cash", MONEY, nullable=False),
    Column("counted_cheques", MONEY, nullable=False),
    Column("variance", MONEY, nullable=False),
    Column("payments", Integer, nullable=False),
    Column("closed_by", Text, nullable=False),
    Column("closed_at", DateTime(timezone=True), nullable=False),
    Column("exception_id", String(40)),
    CheckConstraint("counted_cash >= 0 AND counted_cheques >= 0", name="counted_not_negative"),
)

column_mappings = Table(
    "column_mappings",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("mapping", JSONB, nullable=False),
    Column("updated_by", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("active", Boolean, nullable=False, server_default=text("true")),
)

idempotency_keys = idempotency_table(metadata)
audit_log = audit_table(metadata)
approvals = approvals_table(metadata)
