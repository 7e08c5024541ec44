"""Tables of the `credit_notes` schema: credit notes, their applications, read models, settings, audit log."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
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
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from shared.approvals import approvals_table
from shared.audit import audit_table
from shared.db import service_metadata
from shared.idempotency import idempotency_table
from shared.service import PlumbingTables

SCHEMA = "credit_notes"
metadata = service_metadata(SCHEMA)
plumbing = PlumbingTables(metadata)
MONEY = Numeric(14, 2)

# Payments as payments announced them (`payment.posted`, `payment.cancelled`); `credited` is the credit issued
# against each, which the check constraint keeps within the payment amount whatever the code does.
payments = Table(
    "payments",
    metadata,
    Column("receipt_number", String(40), primary_key=True),
    Column("payment_id", String(40), nullable=False, unique=True),
    Column("account_number", String(50), nullable=False, index=True),
    Column("consumer_name", Text, nullable=False),
    Column("amount", MONEY, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("payment_date", Date, nullable=False),
    Column("method", String(50)),
    Column("channel", String(50)),
    Column("payment_type", String(20)),
    Column("item_reference", String(100)),
    Column("allocated", MONEY, nullable=False, server_default="0"),
    Column("credited", MONEY, nullable=False, server_default="0"),
    # Money of the payment that went back to the customer (partial refunds); none of it can become credit.
    Column("refunded", MONEY, nullable=False, server_default="0"),
    Column("status", String(30), nullable=False),
    Column("posted_at", DateTime(timezone=True), nullable=False),
    Column("cancelled_at", DateTime(timezone=True)),
    CheckConstraint("credited >= 0 AND credited <= amount", name="credit_within_payment"),
)

# Bills, service charges and installments a credit note can be applied to. `amount` is null until billing's
# event arrives (billing and payments events come on different topics, so a payment may be seen first);
# outstanding = amount - paid - credited, never below zero.
open_items = Table(
    "open_items",
    metadata,
    Column("payment_type", String(20), primary_key=True),
    Column("item_reference", String(100), primary_key=True),
    Column("account_number", String(50), nullable=False, index=True),
    Column("description", Text),
    Column("due_date", Date),
    Column("amount", MONEY),
    Column("currency", String(3)),
    Column("paid", MONEY, nullable=False, server_default="0"),
    Column("credited", MONEY, nullable=False, server_default="0"),
)

credit_note_number_seq = Sequence("credit_note_number_seq", metadata=metadata)

TRIGRAM_SEARCHED = ("credit_note_number", "consumer_name", "account_number", "receipt_number")

credit_notes = Table(
    "credit_notes",
    metadata,
    Column("credit_note_number", String(40), primary_key=True),
    # The sequence value the number was made from: creation order, used for keyset paging.
    Column("seq", BigInteger, nullable=False, unique=True),
    Column("account_number", String(50), nullable=False),
    Column("consumer_name", Text, nullable=False),
    Column("receipt_number", String(40), nullable=False),
    Column("payment_id", String(40), nullable=False),
    Column("amount", MONEY, nullable=False),
    Column("applied", MONEY, nullable=False, server_default="0"),
    Column("remaining", MONEY, nullable=False),
    # Given back because the money behind it went back (voided unused credit and reversed applications), and
    # paid out to the customer (a credit refund).
    Column("voided", MONEY, nullable=False, server_default="0"),
    Column("refunded", MONEY, nullable=False, server_default="0"),
    Column("currency", String(3), nullable=False),
    Column("reason", String(50), nullable=False),
    Column("remarks", Text),
    Column("created_by", Text, nullable=False),
    Column("automatic", Boolean, nullable=False),
    Column("status", String(20), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("expired_at", DateTime(timezone=True)),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint(
        "applied >= 0 AND remaining >= 0 AND voided >= 0 AND refunded >= 0 "
        "AND applied + remaining + voided + refunded = amount",
        name="balances",
    ),
    CheckConstraint(
        "status NOT IN ('Active', 'Applied') OR (status = 'Applied') = (remaining = 0)",
        name="status_follows_remaining",
    ),
    # Exactly one automatic credit note per overpaid payment, whatever is redelivered or replayed.
    Index(
        "uq_credit_notes_automatic_receipt",
        "receipt_number",
        unique=True,
        postgresql_where=text("automatic"),
    ),
    Index("ix_credit_notes_receipt_number", "receipt_number"),
    Index("ix_credit_notes_due_to_expire", "expires_at", postgresql_where=text("status = 'Active'")),
    Index("ix_credit_notes_created_at", "created_at"),
    # Trigram GIN indexes behind the case-insensitive partial search (the migration qualifies the operator
    # class with the schema pg_trgm lives in).
    *(
        Index(
            f"ix_credit_notes_{column}_trgm",
            column,
            postgresql_using="gin",
            postgresql_ops={column: "gin_trgm_ops"},
        )
        for column in TRIGRAM_SEARCHED
    ),
)

applications = Table(
    "applications",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("credit_note_number", String(40), nullable=False, index=True),
    Column("account_number", String(50), nullable=False),
    Column("payment_type", String(20), nullable=False),
    Column("item_reference", String(100), nullable=False),
    Column("amount", MONEY, nullable=False),
    Column("applied_by", Text, nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
    # Taken back since (the money behind the credit went back): the item is owed this again.
    Column("reversed", MONEY, nullable=False, server_default="0"),
    # Applied by the auto-apply policy to a newly issued bill.
    Column("automatic", Boolean, nullable=False, server_default="false"),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("reversed >= 0 AND reversed <= amount", name="reversed_within_amount"),
    Index("ix_applications_item", "payment_type", "item_reference"),
)

# Manual credit notes above the approval limit wait here for a billing manager (shared/approvals.py).
approvals = approvals_table(metadata)

# A retried request with the same key gets the first answer back; a different body is a conflict.
idempotency_keys = idempotency_table(metadata)

settings = Table(
    "settings",
    metadata,
    Column("name", String(50), primary_key=True),
    Column("value", JSONB, nullable=False),
    Column("updated_by", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

audit_log = audit_table(metadata)
