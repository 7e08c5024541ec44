"""Tables of the `kpi` schema: pre-aggregated daily rows, the small read models that keep them right, alerts.

Every KPI query reads pre-aggregated rows (a day x currency x channel x method x type at most), so its cost
does not grow with the number of payments. The per-payment read model exists only so that a cancellation or
refund can take the right amount back out of the right rows, and for the dashboard's recent payments.
"""

from sqlalchemy import (
    Boolean,
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
)

from shared.db import service_metadata
from shared.service import PlumbingTables

SCHEMA = "kpi"
metadata = service_metadata(SCHEMA)
plumbing = PlumbingTables(metadata)
MONEY = Numeric(16, 2)

# Collected money by payment date and by what drill-down needs; `collection_days` / `timed_payments` give the
# average collection time (payments without an issue date are not timed).
daily_collections = Table(
    "daily_collections",
    metadata,
    Column("day", Date, primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("channel", String(50), primary_key=True, server_default="Unknown"),
    Column("method", String(50), primary_key=True, server_default="Unknown"),
    Column("payment_type", String(20), primary_key=True, server_default="unknown"),
    Column("payments", Integer, nullable=False),
    Column("collected", MONEY, nullable=False),
    Column("timed_payments", Integer, nullable=False, server_default="0"),
    Column("collection_days", Integer, nullable=False, server_default="0"),
)

# Money posted by the utility's local calendar day of posting ("Received Today"), whatever the payment date.
daily_receipts = Table(
    "daily_receipts",
    metadata,
    Column("day", Date, primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("payments", Integer, nullable=False),
    Column("received", MONEY, nullable=False),
)

# What fell due, by due date and item type: the denominator of the collection rate.
daily_dues = Table(
    "daily_dues",
    metadata,
    Column("day", Date, primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("payment_type", String(20), primary_key=True),
    Column("items", Integer, nullable=False),
    Column("due", MONEY, nullable=False),
)

# Counted happenings by local day: failed online payments, cancellations, refunds, credit notes.
daily_events = Table(
    "daily_events",
    metadata,
    Column("day", Date, primary_key=True),
    Column("event", String(50), primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("count", Integer, nullable=False),
    Column("amount", MONEY, nullable=False),
)

# Failed online payments by UTC hour, for "failed online payments above N per hour".
hourly_failures = Table(
    "hourly_failures",
    metadata,
    Column("hour", DateTime(timezone=True), primary_key=True),
    Column("failures", Integer, nullable=False),
)

# One row per posted payment: what to take back out on cancel/refund, pending verifications, recent payments.
payments = Table(
    "payments",
    metadata,
    Column("payment_id", String(50), primary_key=True),
    Column("receipt_number", String(50), nullable=False),
    Column("account_number", String(50), nullable=False),
    Column("consumer_name", Text, nullable=False),
    Column("payment_type", String(20), nullable=False),
    Column("channel", String(50), nullable=False),
    Column("method", String(50), nullable=False),
    Column("amount", MONEY, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("payment_date", Date, nullable=False),
    Column("posted_at", DateTime(timezone=True), nullable=False),
    Column("posted_day", Date, nullable=False),
    Column("collection_days", Integer),
    Column("status", String(30), nullable=False),
    Column("verification", String(30), nullable=False),
    Column("counted", Boolean, nullable=False),
    Index("ix_kpi_payments_posted_at", "posted_at"),
)

# Online payments posted and still awaiting a staff member's verification: a running count, so reading it costs
# the same however long the backlog is. Only payments posted as Pending touch it. It has one row, BACKLOG_SCOPE.
BACKLOG_SCOPE = "all"
verification_backlog = Table(
    "verification_backlog",
    metadata,
    Column("scope", String(10), primary_key=True),
    Column("pending", Integer, nullable=False),
)

# Online payments that failed, once each however many times the failure is reported.
failed_payments = Table(
    "failed_payments",
    metadata,
    Column("payment_id", String(50), primary_key=True),
)

# What each bill, service charge and installment was due, so a re-issued item moves its due amount correctly.
receivables = Table(
    "receivables",
    metadata,
    Column("payment_type", String(20), primary_key=True),
    Column("item_reference", String(100), primary_key=True),
    Column("due_date", Date, nullable=False),
    Column("amount", MONEY, nullable=False),
    Column("currency", String(3), nullable=False),
)

alert_rules = Table(
    "alert_rules",
    metadata,
    Column("alert_id", String(40), primary_key=True),
    Column("metric", String(50), nullable=False),
    Column("comparison", String(10), nullable=False),
    Column("threshold", Numeric(16, 2), nullable=False),
    Column("created_by", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Whether a rule is currently breached in a window (a month, an hour, "now"): an alert is raised on the
# transition into breach only, so a threshold crossed once raises once however many events follow.
alert_states = Table(
    "alert_states",
    metadata,
    Column("alert_id", String(40), primary_key=True),
    Column("window", String(40), primary_key=True),
    Column("breached", Boolean, nullable=False),
    Column("value", Numeric(16, 2)),
    Column("raised_count", Integer, nullable=False, server_default="0"),
    Column("last_raised_at", DateTime(timezone=True)),
    Index("ix_kpi_alert_states_last_raised_at", "last_raised_at"),
)

# The daily reconciliation summary, from reconciliation's events: per local day, the bank lines imported and
# reconciled (counts and absolute amounts), and each exception with when it was raised and resolved (for ageing).
reconciliation_days = Table(
    "reconciliation_days",
    metadata,
    Column("day", Date, primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("lines_imported", Integer, nullable=False, server_default="0"),
    Column("amount_imported", Numeric(16, 2), nullable=False, server_default="0"),
    Column("lines_reconciled", Integer, nullable=False, server_default="0"),
    Column("amount_reconciled", Numeric(16, 2), nullable=False, server_default="0"),
)

reconciliation_exceptions = Table(
    "reconciliation_exceptions",
    metadata,
    Column("exception_id", String(40), primary_key=True),
    Column("kind", String(30), nullable=False),
    Column("subject", String(160), nullable=False),
    Column("amount", Numeric(16, 2), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("raised_at", DateTime(timezone=True), nullable=False),
    Column("resolved_at", DateTime(timezone=True)),
    Column("resolution", String(30)),
    Index("ix_kpi_reconciliation_exceptions_open", "currency", "raised_at", "resolved_at"),
)

# Each installment of collections' payment arrangements: what it is owed and paid, and its outcome so far.
plan_installments = Table(
    "plan_installments",
    metadata,
    Column("item_reference", String(100), primary_key=True),
    Column("arrangement_id", String(40), nullable=False, index=True),
    Column("due_date", Date, nullable=False),
    Column("amount", MONEY, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("grace_days", Integer, nullable=False),
    Column("paid", MONEY, nullable=False),
    Column("settled_on", Date),
    Column("missed", Boolean, nullable=False),
    Column("outcome", String(10)),
)

# Installments by due date and outcome: payment plan compliance reads days, never installments.
daily_plan_outcomes = Table(
    "daily_plan_outcomes",
    metadata,
    Column("day", Date, primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("kept", Integer, nullable=False, server_default="0"),
    Column("late", Integer, nullable=False, server_default="0"),
    Column("missed", Integer, nullable=False, server_default="0"),
)

# Every table the rebuild recomputes from the topics (alert rules and states are configuration, not aggregates).
AGGREGATES = (
    daily_collections,
    daily_receipts,
    daily_dues,
    daily_events,
    hourly_failures,
    payments,
    verification_backlog,
    failed_payments,
    receivables,
    plan_installments,
    daily_plan_outcomes,
)
