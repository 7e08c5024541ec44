"""Tables of the `kpi` schema: collection aggregates by day."""

from sqlalchemy import Column, Date, Integer, Numeric, String, Table

from shared.db import service_metadata
from shared.service import PlumbingTables

SCHEMA = "kpi"
metadata = service_metadata(SCHEMA)
plumbing = PlumbingTables(metadata)

daily_collections = Table(
    "daily_collections",
    metadata,
    Column("day", Date, primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("payments", Integer, nullable=False),
    Column("collected", Numeric(16, 2), nullable=False),
)
