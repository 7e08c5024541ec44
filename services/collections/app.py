"""The collections service: the recovery executive's delinquency worklist, payment arrangements (with a billing
manager's approval above the limits), compliance monitoring, alerts, activities and disconnection holds."""

from __future__ import annotations

from datetime import datetime

from services.collections import activities, api, projections
from services.collections.compliance import ComplianceSchedule, PassResult
from services.collections.runtime import Desk
from services.collections.settings import CollectionsSettings
from services.collections.storage import plumbing
from shared.contracts import Topic
from shared.service import Service

EVENTS = [
    "arrangement.created",
    "arrangement.modified",
    "arrangement.broken",
    "arrangement.completed",
    "arrangement.cancelled",
    "arrangement.reaged",
    "arrangement.payment_applied",
    "installment.missed",
    "disconnection.hold_placed",
    "disconnection.hold_released",
    "disconnection.eligible",
    "disconnection.cleared",
    "promise.broken",
    "collections.alert_raised",
    "approval.requested",
    "approval.decided",
]


class CollectionsService(Service):
    """A service with one more background task: the compliance scheduler, on the service's clock."""

    def __init__(self, settings: CollectionsSettings) -> None:
        super().__init__(settings, plumbing, title="Paydesk collections")
        self.desk = Desk.from_settings(settings)
        self.compliance = ComplianceSchedule(self.sessions, self.desk, every_seconds=settings.compliance_check_seconds)

    async def start(self) -> None:
        await super().start()
        self.compliance.start()

    async def stop(self) -> None:
        # Before the outbox drains, so what the last pass staged is published.
        await self.compliance.stop()
        await super().stop()

    async def check_compliance(self, now: datetime | None = None) -> PassResult:
        """One compliance pass now (or at `now`, which also sets the service's clock)."""
        return await self.compliance.run_once(now)


def create_service(settings: CollectionsSettings | None = None) -> CollectionsService:
    settings = settings or CollectionsSettings()
    service = CollectionsService(settings)
    service.subscribe(*projections.subscriptions(service.desk), *activities.subscriptions(service.desk))
    service.publishes(Topic.COLLECTIONS_EVENTS, EVENTS)
    service.publishes(Topic.BILLING_RECEIVABLES, ["installment_plan.created"])
    service.publishes(Topic.ANALYTICS_EVENTS, ["usage.tracked"])
    service.include(api.router(service.sessions, service.desk))
    return service


async def check_once(now: datetime | None = None) -> PassResult:
    """One compliance pass against the configured database (the `paydesk check-collections` command)."""
    service = create_service()
    try:
        return await service.compliance.run_once(now)
    finally:
        await service.engine.dispose()
