"""Tables of the `receipts` schema: what documents need, learnt from events, and the rendered documents.

One row per receipt number, per credit-note number and per document, whatever is redelivered or reordered.
"""

from sqlalchemy import (
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from shared.db import service_metadata
from shared.service import PlumbingTables

SCHEMA = "receipts"
metadata = service_metadata(SCHEMA)
plumbing = PlumbingTables(metadata)

# The payment as posted (payment.posted, verbatim in `payment`).
receipts = Table(
    "receipts",
    metadata,
    Column("receipt_number", String(40), primary_key=True),
    Column("payment_id", String(40), nullable=False, unique=True),
    Column("account_number", String(50), nullable=False),
    Column("consumer_name", Text, nullable=False),
    Column("amount", Numeric(14, 2), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("amount_text", String(40), nullable=False),
    Column("posted_at", DateTime(timezone=True), nullable=False),
    Column("payment", JSONB, nullable=False),
    # Re-issued after an adjustment: the payment above is the adjusted one, issued under this version.
    Column("version", Integer, nullable=False, server_default="1"),
    # A customer's own receipts, newest first, without reading every receipt.
    Index("ix_receipts_account_posted", "account_number", "posted_at", "receipt_number"),
)

# What happened to the payment since (status changes, verification, cancellation). A separate table because
# an online payment's first status change may arrive before it is posted.
payment_states = Table(
    "payment_states",
    metadata,
    Column("receipt_number", String(40), primary_key=True),
    Column("payment_id", String(40), nullable=False),
    Column("account_number", String(50), nullable=False),
    Column("status", String(40), nullable=False),
    Column("status_at", DateTime(timezone=True), nullable=False),
    Column("verification", String(40), nullable=False),
    Column("verified_by", Text),
    Column("verified_at", DateTime(timezone=True)),
    Column("cancelled_at", DateTime(timezone=True)),
    Column("cancelled_by", Text),
    Column("cancel_reason", Text),
)

# Credit notes as issued (credit_note.issued, verbatim in `issued`); indexed by the receipt they credit.
credit_notes = Table(
    "credit_notes",
    metadata,
    Column("credit_note_number", String(40), primary_key=True),
    Column("receipt_number", String(40), nullable=False, index=True),
    Column("account_number", String(50), nullable=False),
    Column("issued", JSONB, nullable=False),
)

# Applications and expiry of credit notes. Keyed by what happened, not by event id, so the same fact
# published twice is one row; kept apart from `credit_notes` so it may arrive before the issue.
credit_note_activity = Table(
    "credit_note_activity",
    metadata,
    Column("credit_note_number", String(40), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("item_reference", String(100), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("applied", Numeric(14, 2)),
    Column("remaining", Numeric(14, 2), nullable=False),
    Column("status", String(40), nullable=False),
    PrimaryKeyConstraint("credit_note_number", "kind", "item_reference", "at"),
)

# The documents: at most one per (kind, number); new content replaces it and bumps the revision. The content is
# stored at once by the event consumers; the PDF (`pdf`, `sha256`, `rendered_at`) is filled in later by the render
# worker, and stays NULL until then (a GET renders it on demand meanwhile).
documents = Table(
    "documents",
    metadata,
    Column("kind", String(20), nullable=False),
    Column("number", String(40), nullable=False),
    Column("account_number", String(50), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("document_hash", String(64), nullable=False),
    Column("sha256", String(64)),
    Column("content", JSONB, nullable=False),
    Column("pdf", LargeBinary),
    Column("rendered_at", DateTime(timezone=True)),
    PrimaryKeyConstraint("kind", "number"),
    # The render worker's queue: only the documents still waiting for their PDF.
    Index("ix_documents_unrendered", "kind", "number", postgresql_where=text("pdf IS NULL")),
)

# Earlier versions of a re-issued receipt, each kept as it was and marked superseded by the next.
receipt_versions = Table(
    "receipt_versions",
    metadata,
    Column("receipt_number", String(40), nullable=False),
    Column("version", Integer, nullable=False),
    Column("document_hash", String(64), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("content", JSONB, nullable=False),
    Column("pdf", LargeBinary, nullable=False),
    Column("superseded_at", DateTime(timezone=True), nullable=False),
    Column("superseded_by", Integer, nullable=False),
    PrimaryKeyConstraint("receipt_number", "version"),
)
