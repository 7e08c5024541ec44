"""Kafka topics. Names are contracts: an incompatible change is a new topic with the next major version."""

from enum import StrEnum


class Topic(StrEnum):
    BILLING_RECEIVABLES = "billing.receivables.v1"
    PAYMENTS_COMMANDS = "payments.commands.v1"
    GATEWAY_EVENTS = "gateway.events.v1"
    PAYMENTS_EVENTS = "payments.events.v1"
    CREDITNOTES_EVENTS = "creditnotes.events.v1"
    RECEIPTS_EVENTS = "receipts.events.v1"
    KPI_ALERTS = "kpi.alerts.v1"
    ANALYTICS_EVENTS = "analytics.events.v1"
    RECONCILIATION_COMMANDS = "reconciliation.commands.v1"
    RECONCILIATION_EVENTS = "reconciliation.events.v1"
    COLLECTIONS_COMMANDS = "collections.commands.v1"
    COLLECTIONS_EVENTS = "collections.events.v1"
    PAYOUTS_COMMANDS = "payouts.commands.v1"
    PAYOUTS_EVENTS = "payouts.events.v1"


def dlq(topic: str) -> str:
    """The dead-letter twin of a topic: where messages that can never be processed go, with the reason."""
    return f"{topic}.dlq"


ALL_TOPICS: tuple[str, ...] = tuple(t.value for t in Topic) + tuple(dlq(t.value) for t in Topic)
