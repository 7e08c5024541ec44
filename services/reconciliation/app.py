"""The reconciliation service: bank statements matched to what was posted, Stripe payouts matched three ways,
tills closed, and exceptions worked to zero."""

from __future__ import annotations

from services.reconciliation import api, projections
from services.reconciliation.settings import ReconciliationSettings
from services.reconciliation.storage import plumbing
from shared.contracts import Topic
from shared.service import Service

PUBLISHES = [
    "statement.imported",
    "bank_line.matched",
    "payment.settlement_reconciled",
    "reconciliation.exception_raised",
    "reconciliation.exception_resolved",
    "till.closed",
    "approval.requested",
    "approval.decided",
]


def create_service(settings: ReconciliationSettings | None = None) -> Service:
    settings = settings or ReconciliationSettings()
    service = Service(settings, plumbing, title="Paydesk reconciliation")
    service.subscribe(*projections.subscriptions(settings))
    service.publishes(Topic.RECONCILIATION_EVENTS, PUBLISHES)
    service.publishes(Topic.ANALYTICS_EVENTS, ["usage.tracked"])
    service.include(api.router(service.sessions, settings))
    return service
