"""Tables of the `gateway_bridge` schema: the webhook inbox, what we know of each payment intent, payout jobs."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Table,
    Text,
    func,
    text,
)

from shared.db import service_metadata
from shared.service import PlumbingTables

SCHEMA = "gateway_bridge"
metadata = service_metadata(SCHEMA)
plumbing = PlumbingTables(metadata)

# Every Stripe event id we accepted, with its raw body exactly as signed (kept for audit and replay; never
# logged). A second delivery of the same id finds its row and changes nothing.
webhook_events = Table(
    "webhook_events",
    metadata,
    Column("event_id", String(255), primary_key=True),
    Column("event_type", String(100), nullable=False),
    Column("livemode", Boolean, nullable=False),
    Column("stripe_created_at", DateTime(timezone=True)),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("raw_body", LargeBinary, nullable=False),
    Column("body_masked", Boolean, nullable=False, server_default=text("false")),
    # published | superseded | ignored | dead_lettered | payout_pending
    Column("outcome", String(30), nullable=False),
    Column("detail", Text),
    Column("payment_intent_id", String(255), index=True),
)

# What the bridge knows about each payment intent: whose payment it is (from metadata of earlier events, so
# charge events without metadata can be routed) and its forward-only payment and payout statuses.
payment_intents = Table(
    "payment_intents",
    metadata,
    Column("payment_intent_id", String(255), primary_key=True),
    Column("account_number", String(100), nullable=False, index=True),
    Column("payment_type", String(20), nullable=False),
    Column("item_reference", String(100), nullable=False),
    Column("amount", Numeric(14, 3), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("initiated_at", DateTime(timezone=True)),
    Column("gateway_status", String(30)),
    Column("payout_status", String(20)),
    Column("payout_id", String(255)),
    Column("webhook_status", String(30), nullable=False),
    Column("settlement_status", String(30), nullable=False),
    Column("events_applied", Integer, nullable=False, server_default=text("0")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Payout events wait here for the settlement worker, which lists the payout's balance transactions through
# the Stripe API outside the webhook request.
payout_jobs = Table(
    "payout_jobs",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("event_id", String(255), nullable=False, unique=True),
    Column("payout_id", String(255), nullable=False),
    Column("payout_status", String(20), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    # The payout as the webhook described it, for `gateway.payout_listed` (null on jobs queued before 0003).
    Column("amount", Numeric(14, 3)),
    Column("currency", String(3)),
    Column("arrival_date", Date),
    Column("stripe_status", String(30)),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_error", Text),
    Column("done_at", DateTime(timezone=True)),
    Index(None, "next_attempt_at", postgresql_where=text("done_at IS NULL")),
)

# Payouts already announced as `gateway.payout_listed`: one event per payout and status (created, paid, failed),
# whichever of its jobs lists it first; `status` is the latest listed (null: listed before 0009).
listed_payouts = Table(
    "listed_payouts",
    metadata,
    Column("payout_id", String(255), primary_key=True),
    Column("event_id", String(255), nullable=False),
    Column("listed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("status", String(20)),
)
