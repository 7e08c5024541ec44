"""Tables of the `console` schema: sign-in sessions (who signed in, with which roles, until when). No business data."""

from sqlalchemy import Column, DateTime, String, Table, Text, Uuid, func

from shared.db import service_metadata
from shared.service import PlumbingTables

SCHEMA = "console"
metadata = service_metadata(SCHEMA)
plumbing = PlumbingTables(metadata)

sessions = Table(
    "sessions",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("user_id", String(100), nullable=False, index=True),
    Column("name", Text, nullable=False),
    Column("roles", Text, nullable=False),
    Column("account_number", String(50)),
    Column("signed_in_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("signed_out_at", DateTime(timezone=True)),
)
