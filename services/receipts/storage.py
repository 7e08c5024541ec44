"""Tables of the `receipts` schema: one row per receipt number, whatever is redelivered."""

from sqlalchemy import Column, DateTime, Numeric, String, Table, Text
from sqlalchemy.dialects.postgresql import JSONB

from shared.db import service_metadata
from shared.service import PlumbingTables

SCHEMA = "receipts"
metadata = service_metadata(SCHEMA)
plumbing = PlumbingTables(metadata)

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
)
