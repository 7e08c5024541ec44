"""Tables of the `gateway_bridge` schema. For now only the plumbing every service has (inbox, outbox)."""

from shared.db import service_metadata
from shared.service import PlumbingTables

SCHEMA = "gateway_bridge"
metadata = service_metadata(SCHEMA)
plumbing = PlumbingTables(metadata)
