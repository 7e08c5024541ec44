"""Tables of the `credit_notes` schema. For now only the plumbing every service has (inbox, outbox)."""

from shared.db import service_metadata
from shared.service import PlumbingTables

SCHEMA = "credit_notes"
metadata = service_metadata(SCHEMA)
plumbing = PlumbingTables(metadata)
