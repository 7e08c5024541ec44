"""Tables of the `collections` schema: the worklist read model, arrangements and their installments, activities,
alerts, approvals, audit log."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    Numeric,
    PrimaryKeyConstraint,
    Sequence,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from shared.approvals import approvals_table
from shared.audit import audit_table
from shared.db import service_metadata
from shared.idempotency import idempotency_table
from shared.service import PlumbingTables

SCHEMA = "collections"
metadata = service_metadata(SCHEMA)
plumbing = PlumbingTables(metadata)
MONEY = Numeric(14, 2)

TRIGRAM_SEARCHED = ("name", "account_number")

# The worklist: one row per account, what it owes and since when as of `refreshed_on`, kept by every event that
# changes it and by the scheduler on `next_change_on` (the next day the answer changes by time alone).
accounts = Table(
    "accounts",
    metadata,
    Column("account_number", String(50), primary_key=True),
    Column("name", Text, nullable=False, server_default=""),
    Column("currency", String(3), nullable=False, server_default="USD"),
    Column("amount_owed", MONEY, nullable=False, server_default="0"),
    Column("amount_overdue", MONEY, nullable=False, server_default="0"),
    Column("oldest_overdue_due", Date),
    Column("next_change_on", Date),
    Column("refreshed_on", Date),
    Column("arrangement_id", String(40)),
    Column("plan_status", String(20)),
    Column("executive", Text),
    Column("last_contact_at", DateTime(timezone=True)),
    Column("disconnection", String(10), nullable=False, server_default="clear"),
    Column("disconnection_reason", Text, nullable=False, server_default="nothing overdue"),
    Column("disconnection_since", DateTime(timezone=True)),
    Index("ix_collections_accounts_next_change_on", "next_change_on"),
    Index("ix_collections_accounts_oldest_overdue", "oldest_overdue_due", "account_number"),
    Index("ix_collections_accounts_amount_overdue", "amount_overdue", "account_number"),
    Index("ix_collections_accounts_executive", "executive"),
    *(
        Index(
            f"ix_collections_accounts_{column}_trgm",
            column,
            postgresql_using="gin",
            postgresql_ops={column: "gin_trgm_ops"},
        )
        for column in TRIGRAM_SEARCHED
    ),
)

# Bills, service charges and billing's own installments, as billing issued them, with what was paid on each.
items = Table(
    "items",
    metadata,
    Column("payment_type", String(20), primary_key=True),
    Column("item_reference", String(100), primary_key=True),
    Column("account_number", String(50), nullable=False, index=True),
    Column("description", Text),
    Column("amount", MONEY),  # null until billing's event arrives (a payment may be seen first)
    Column("currency", String(3)),
    Column("due_date", Date),
    Column("paid", MONEY, nullable=False, server_default="0"),
    Column("arrangement_id", String(40), index=True),  # the arrangement that took it over
)

# Payments as payments announced them, with where collections applied them (so a reversal undoes exactly that).
payments = Table(
    "payments",
    metadata,
    Column("receipt_number", String(40), primary_key=True),
    Column("payment_id", String(40), nullable=False),
    Column("account_number", String(50), nullable=False, index=True),
    Column("payment_type", String(20), nullable=False),
    Column("item_reference", String(100), nullable=False),
    Column("amount", MONEY, nullable=False),
    Column("payment_date", Date, nullable=False),
    Column("method", String(50)),
    Column("received_by", Text),
    Column("status", String(30), nullable=False),
    Column("item_share", MONEY, nullable=False, server_default="0"),  # added to `items.paid`
    Column("arrangement_id", String(40)),
    Column("allocations", JSONB, nullable=False, server_default=text("'[]'::jsonb")),  # [[plan_id, n, amount]]
)

arrangement_number_seq = Sequence("arrangement_number_seq", metadata=metadata)

arrangements = Table(
    "arrangements",
    metadata,
    Column("arrangement_id", String(40), primary_key=True),
    Column("seq", BigInteger, nullable=False, unique=True),
    Column("account_number", String(50), nullable=False, index=True),
    Column("status", String(20), nullable=False),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("plan_id", String(50), nullable=False),  # the installment plan id of the current schedule
    Column("total", MONEY, nullable=False),
    Column("down_payment", MONEY, nullable=False, server_default="0"),
    Column("currency", String(3), nullable=False),
    Column("installment_count", Integer, nullable=False),
    Column("frequency", String(20), nullable=False),
    Column("first_due_date", Date, nullable=False),
    Column("grace_days", Integer, nullable=False),
    Column("notes", Text),
    Column("covered", JSONB, nullable=False),  # [{payment_type, item_reference, amount}]
    Column("executive", Text, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("approval_id", String(40)),
    Column("approved_by", Text),
    Column("activated_at", DateTime(timezone=True)),
    Column("paid", MONEY, nullable=False, server_default="0"),
    Column("missed_count", Integer, nullable=False, server_default="0"),
    Column("reaged_from", String(40)),
    Column("closed_at", DateTime(timezone=True)),
    Column("closed_on", Date),
    Column("closed_reason", Text),
    Column("customer_initiated", Boolean, nullable=False, server_default="false"),
    Column("negotiation_seconds", Integer),
    CheckConstraint("total > 0 AND paid >= 0 AND down_payment >= 0", name="amounts"),
    # INVARIANT: one arrangement in force (or waiting for approval) per account, whatever races.
    Index(
        "uq_collections_arrangements_open_per_account",
        "account_number",
        unique=True,
        postgresql_where=text("status IN ('Pending approval', 'Active')"),
    ),
    Index("ix_collections_arrangements_status", "status", "seq"),
)

installments = Table(
    "installments",
    metadata,
    Column("plan_id", String(50), nullable=False),
    Column("number", Integer, nullable=False),
    Column("arrangement_id", String(40), nullable=False, index=True),
    Column("amount", MONEY, nullable=False),
    Column("due_date", Date, nullable=False),
    Column("paid", MONEY, nullable=False, server_default="0"),
    Column("paid_on", Date),
    Column("down_payment", Boolean, nullable=False, server_default="false"),
    Column("superseded", Boolean, nullable=False, server_default="false"),
    PrimaryKeyConstraint("plan_id", "number"),
    CheckConstraint("amount > 0 AND paid >= 0 AND paid <= amount", name="paid_within_amount"),
    Index(
        "ix_collections_installments_open_due", "due_date", postgresql_where=text("paid < amount AND NOT superseded")
    ),
)

# INVARIANT: one row per installment and outcome; the scheduler stages `installment.missed` only when its insert
# is new, so a second pass, a restarted pass or a second instance never announces a miss twice.
installment_outcomes = Table(
    "installment_outcomes",
    metadata,
    Column("plan_id", String(50), nullable=False),
    Column("number", Integer, nullable=False),
    Column("outcome", String(30), nullable=False),
    Column("arrangement_id", String(40), nullable=False),
    Column("recorded_on", Date, nullable=False),
    PrimaryKeyConstraint("plan_id", "number", "outcome"),
)

# Money an arrangement received (or, negative, lost back), by day and executive: the recovery reports.
recoveries = Table(
    "recoveries",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("arrangement_id", String(40), nullable=False, index=True),
    Column("account_number", String(50), nullable=False),
    Column("receipt_number", String(40), nullable=False),
    Column("executive", Text, nullable=False),
    Column("amount", MONEY, nullable=False),
    Column("recovered_on", Date, nullable=False, index=True),
)

activities = Table(
    "activities",
    metadata,
    Column("activity_id", String(40), primary_key=True),
    Column("account_number", String(50), nullable=False, index=True),
    Column("arrangement_id", String(40)),
    Column("kind", String(20), nullable=False),
    Column("outcome", Text),
    Column("customer_response", Text),
    Column("notes", Text),
    Column("promise_amount", MONEY),
    Column("promise_date", Date),
    Column("promise_paid", MONEY, nullable=False, server_default="0"),
    Column("promise_status", String(10)),
    Column("follow_up_on", Date),
    Column("follow_up_done", Boolean, nullable=False, server_default="false"),
    Column("executive", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index(
        "ix_collections_activities_follow_ups",
        "executive",
        "follow_up_on",
        postgresql_where=text("follow_up_on IS NOT NULL AND NOT follow_up_done"),
    ),
    Index("ix_collections_activities_open_promises", "promise_date", postgresql_where=text("promise_status = 'Open'")),
)

alerts = Table(
    "alerts",
    metadata,
    Column("alert_id", String(40), primary_key=True),
    Column("executive", Text, nullable=False),
    Column("account_number", String(50), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("message", Text, nullable=False),
    Column("arrangement_id", String(40)),
    Column("raised_at", DateTime(timezone=True), nullable=False),
    Column("acknowledged_at", DateTime(timezone=True)),
    Column("action_taken", Text),
    Index("ix_collections_alerts_open", "executive", "raised_at", postgresql_where=text("acknowledged_at IS NULL")),
)

approvals = approvals_table(metadata)
idempotency_keys = idempotency_table(metadata)
audit_log = audit_table(metadata)
