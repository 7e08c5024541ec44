"""The reconciliation service: bank statements matched to what was posted, Stripe payouts matched three ways,
tills closed, and exceptions worked to zero."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from services.reconciliation import api, projections
from services.reconciliation.scheduler import MissingPass, MissingSchedule
from services.reconciliation.settings import ReconciliationSettings
from services.reconciliation.storage import plumbing
from shared.contracts import Topic
from shared.scheduling import Clock
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


class ReconciliationService(Service):
    """A service with one more background task: the missing-items scheduler, on the service's clock."""

    def __init__(self, settings: ReconciliationSettings) -> None:
        super().__init__(settings, plumbing, title="Paydesk reconciliation")
        self.clock = Clock(ZoneInfo(settings.timezone))
        self.missing = MissingSchedule(self.sessions, self.clock, every_seconds=settings.missing_check_seconds)

    async def start(self) -> None:
        await super().start()
        self.missing.start()

    async def stop(self) -> None:
        # Before the outbox drains, so what the last pass staged is published.
        await self.missing.stop()
        await super().stop()

    async def check_missing(self, now: datetime | None = None) -> MissingPass:
        """One pass now (or at `now`, which also sets the service's clock)."""
        return await self.missing.run_once(now)


def create_service(settings: ReconciliationSettings | None = None) -> ReconciliationService:
    settings = settings or ReconciliationSettings()
    service = ReconciliationService(settings)
    service.subscribe(*projections.subscriptions(settings))
    service.publishes(Topic.RECONCILIATION_EVENTS, PUBLISHES)
    service.publishes(Topic.ANALYTICS_EVENTS, ["usage.tracked"])
    service.include(api.router(service.sessions, settings))
    return service
