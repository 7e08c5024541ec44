"""Tables of the `payouts` schema: payees, rules, rates, earnings lines, runs, payouts, bank files, invoices."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    Sequence,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from shared.approvals import approvals_table
from shared.audit import audit_table
from shared.db import service_metadata
from shared.idempotency import idempotency_table
from shared.service import PlumbingTables

SCHEMA = "payouts"
metadata = service_metadata(SCHEMA)
plumbing = PlumbingTables(metadata)
# Signed: reversals and adjustments are negative lines.
MONEY = Numeric(16, 2)
RATE = Numeric(24, 10)

payee_number_seq = Sequence("payee_number_seq", metadata=metadata)
run_number_seq = Sequence("run_number_seq", metadata=metadata)
payout_number_seq = Sequence("payout_number_seq", metadata=metadata)

payees = Table(
    "payees",
    metadata,
    Column("payee_id", String(40), primary_key=True),
    Column("seq", BigInteger, nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("payee_type", String(20), nullable=False),
    Column("country", String(2), nullable=False),
    Column("payout_currency", String(3), nullable=False),
    Column("method", String(20)),
    Column("stripe_account", String(80)),
    Column("iban", String(34)),
    Column("bic", String(11)),
    Column("tax_id", String(40)),
    Column("email", Text),
    Column("status", String(20), nullable=False),
    Column("payee_group", String(60)),
    Column("schedule", String(20), nullable=False, server_default="monthly"),
    # An agent collects through a channel (and, if set, as one user of it: `received_by` of payment.posted).
    Column("agent_channel", String(50)),
    Column("agent_user", String(200)),
    # A customer owed refunds: their utility account.
    Column("account_number", String(50)),
    Column("external_id", String(100), unique=True),
    Column("created_by", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("method IS NULL OR method IN ('stripe', 'bank')", name="method_known"),
    CheckConstraint("method IS DISTINCT FROM 'stripe' OR stripe_account IS NOT NULL", name="stripe_has_account"),
    CheckConstraint("method IS DISTINCT FROM 'bank' OR iban IS NOT NULL", name="bank_has_iban"),
    Index(
        "uq_payees_agent_link",
        "agent_channel",
        text("coalesce(agent_user, '')"),
        unique=True,
        postgresql_where=text("agent_channel IS NOT NULL"),
    ),
    Index(
        "uq_payees_customer_account",
        "account_number",
        unique=True,
        postgresql_where=text("payee_type = 'customer'"),
    ),
    Index("ix_payees_name_trgm", "name", postgresql_using="gin", postgresql_ops={"name": "gin_trgm_ops"}),
    Index("ix_payees_filters", "payee_type", "country", "payout_currency"),
)

rules = Table(
    "commission_rules",
    metadata,
    Column("rule_id", String(40), primary_key=True),
    Column("payee_id", String(40), ForeignKey("payees.payee_id")),
    Column("payee_group", String(60)),
    Column("kind", String(20), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("percent", Numeric(8, 4)),
    Column("fixed", MONEY),
    Column("tiers", JSONB, nullable=False, server_default="[]"),
    Column("minimum_per_payment", MONEY),
    Column("cap_per_payment", MONEY),
    Column("cap_per_month", MONEY),
    Column("effective_from", Date, nullable=False),
    Column("effective_to", Date),
    Column("created_by", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("(payee_id IS NULL) <> (payee_group IS NULL)", name="one_scope"),
    Index("ix_commission_rules_scope", "payee_id", "payee_group", "effective_from"),
)

rates = Table(
    "rates",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("base", String(3), nullable=False),
    Column("quote", String(3), nullable=False),
    Column("rate", RATE, nullable=False),
    Column("as_of", Date, nullable=False),
    Column("source", String(120), nullable=False),
    Column("entered_by", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("rate > 0", name="rate_positive"),
    UniqueConstraint("base", "quote", "as_of", "source", name="uq_rates_pair_day_source"),
    Index("ix_rates_pair_day", "base", "quote", "as_of"),
)

# Payments as payments announced them, with the agent payee they earned a commission for (if any).
payments = Table(
    "payments",
    metadata,
    Column("receipt_number", String(40), primary_key=True),
    Column("payment_id", String(40), nullable=False),
    Column("account_number", String(50), nullable=False),
    Column("channel", String(50), nullable=False),
    Column("received_by", Text, nullable=False),
    Column("amount", MONEY, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("payment_date", Date, nullable=False),
    Column("status", String(30), nullable=False),
    Column("payee_id", String(40)),
)

lines = Table(
    "earning_lines",
    metadata,
    Column("line_id", String(100), primary_key=True),
    Column("seq", BigInteger, Identity(), nullable=False, unique=True),
    Column("payee_id", String(40), ForeignKey("payees.payee_id"), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("amount", MONEY, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("earned_on", Date, nullable=False),
    Column("source_ref", String(100)),
    Column("description", Text),
    Column("reason", Text),
    Column("rule_id", String(40)),
    # What the calculation was: rule in words, payment amount, month-to-date figures, each step.
    Column("calculation", JSONB),
    Column("status", String(30), nullable=False),
    Column("blocked_reason", Text),
    Column("reverses_line_id", String(100), unique=True),
    Column("approval_id", String(40)),
    Column("payout_id", String(40)),
    Column("created_by", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("amount <> 0 OR kind = 'commission'", name="amount_not_zero"),
    Index("ix_earning_lines_payee_status", "payee_id", "status", "earned_on"),
    Index("ix_earning_lines_source", "source_ref"),
    Index("ix_earning_lines_payout", "payout_id"),
)

runs = Table(
    "runs",
    metadata,
    Column("run_id", String(40), primary_key=True),
    Column("seq", BigInteger, nullable=False, unique=True),
    Column("status", String(30), nullable=False),
    Column("filters", JSONB, nullable=False),
    Column("as_of", Date, nullable=False),
    Column("totals", JSONB, nullable=False),
    Column("held", JSONB, nullable=False, server_default="[]"),
    Column("approval_id", String(40)),
    Column("created_by", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("approved_by", Text),
    Column("approved_at", DateTime(timezone=True)),
    Column("executed_by", Text),
    Column("executed_at", DateTime(timezone=True)),
)

payouts = Table(
    "payouts",
    metadata,
    Column("payout_id", String(40), primary_key=True),
    Column("seq", BigInteger, nullable=False, unique=True),
    Column("run_id", String(40), ForeignKey("runs.run_id"), nullable=False),
    Column("payee_id", String(40), ForeignKey("payees.payee_id"), nullable=False),
    Column("amount", MONEY, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("method", String(20), nullable=False),
    Column("destination", String(80), nullable=False),
    Column("bic", String(11)),
    Column("status", String(20), nullable=False),
    Column("reference", String(100)),
    Column("bank_file_id", String(40)),
    Column("failure_reason", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True)),
    Column("paid_at", DateTime(timezone=True)),
    Column("failed_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # INVARIANT in the schema too: nothing of zero or less is ever paid out.
    CheckConstraint("amount > 0", name="amount_positive"),
    UniqueConstraint("run_id", "payee_id", name="uq_payouts_run_payee"),
    Index("ix_payouts_reference", "reference"),
    Index("ix_payouts_status", "status", "created_at"),
    Index("ix_payouts_payee", "payee_id", "created_at"),
)

# Each line a payout carries, converted with the rate's provenance.
payout_items = Table(
    "payout_items",
    metadata,
    Column("payout_id", String(40), ForeignKey("payouts.payout_id"), primary_key=True),
    Column("line_id", String(100), ForeignKey("earning_lines.line_id"), primary_key=True),
    Column("amount", MONEY, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("converted", MONEY, nullable=False),
    Column("to_currency", String(3), nullable=False),
    Column("rate", RATE, nullable=False),
    Column("rate_source", String(200), nullable=False),
    Column("rate_as_of", Date),
    Column("rounding", String(80), nullable=False),
)

bank_files = Table(
    "bank_files",
    metadata,
    Column("file_id", String(40), primary_key=True),
    Column("run_id", String(40), ForeignKey("runs.run_id"), nullable=False),
    Column("debtor_account", String(40), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("message_id", String(40), nullable=False),
    Column("payouts", Integer, nullable=False),
    Column("control_sum", MONEY, nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("run_id", "debtor_account", name="uq_bank_files_run_account"),
)

invoices = Table(
    "invoices",
    metadata,
    Column("invoice_id", String(40), primary_key=True),
    Column("line_id", String(100), ForeignKey("earning_lines.line_id"), nullable=False, index=True),
    Column("payee_id", String(40), nullable=False),
    Column("filename", String(200), nullable=False),
    Column("content_type", String(100), nullable=False),
    Column("size", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("uploaded_by", Text, nullable=False),
    Column("uploaded_at", DateTime(timezone=True), nullable=False),
)

# One row per schedule and pay period: the scheduler made that period's run (or found nothing to pay). Its key
# is what makes a scheduled run once per period across restarts and instances.
scheduled_runs = Table(
    "scheduled_runs",
    metadata,
    Column("schedule", String(20), primary_key=True),
    Column("period_start", Date, primary_key=True),
    Column("run_id", String(40)),
    Column("outcome", String(30), nullable=False),
    Column("detail", Text),
    Column("checked_at", DateTime(timezone=True), nullable=False),
)

# Each time a Stripe transfer was about to be requested for a payout, committed before the request. A payout that
# is still Approved with an attempt here may have been paid: it is looked up at Stripe before any new request.
# No foreign key: it is written while the payout's row is locked by the sending transaction.
send_attempts = Table(
    "send_attempts",
    metadata,
    Column("payout_id", String(40), primary_key=True),
    Column("attempts", Integer, nullable=False),
    Column("first_attempt_at", DateTime(timezone=True), nullable=False),
    Column("last_attempt_at", DateTime(timezone=True), nullable=False),
)

idempotency_keys = idempotency_table(metadata)
approvals = approvals_table(metadata)
audit_log = audit_table(metadata)
