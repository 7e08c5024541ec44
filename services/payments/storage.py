"""Tables of the `payments` schema: the receivables read model, payments, idempotency keys, audit log."""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Date,
    DateTime,
    Index,
    Numeric,
    Sequence,
    String,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

from shared.db import service_metadata
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
    Column("status", String(30), nullable=False),
    Column("verification", String(30), nullable=False),
    Column("received_by", Text, nullable=False),
    Column("due", MONEY, nullable=False),
    Column("applied", MONEY, nullable=False),
    Column("outcome", String(10), nullable=False),
    Column("cash_received", MONEY),
    Column("change_given", MONEY),
    Column("notes", Text),
    Column("posted_at", DateTime(timezone=True), nullable=False),
    Index(None, "account_number", "posted_at"),
)

# A retried request with the same key gets the first answer back; a different body is a conflict.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("payment_id", String(40)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("actor", Text, nullable=False),
    Column("action", String(50), nullable=False),
    Column("subject", String(100), nullable=False),
    Column("details", JSONB, nullable=False),
)
