"""The payouts service: payees, earnings accrued from payments and refund requests, commission rules, exchange
rates, payout runs executed through Stripe or pain.001 files, payout statuses from webhooks, and statements."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from services.payouts import api, disbursement, projections
from services.payouts.execution import AfterSend
from services.payouts.rendering import StatementRenderer
from services.payouts.scheduling import RunScheduler
from services.payouts.settings import PayoutsSettings
from services.payouts.storage import plumbing
from shared.contracts import Topic
from shared.scheduling import Clock
from shared.service import Service


class PayoutsService(Service):
    """A service with a Stripe client, a statement renderer and the scheduler of payout runs."""

    def __init__(self, settings: PayoutsSettings) -> None:
        super().__init__(settings, plumbing, title="Paydesk payouts")
        self.settings: PayoutsSettings = settings
        self.stripe = disbursement.stripe_client(settings)
        self.renderer = StatementRenderer()
        # Tests set this to crash between Stripe's answer and the commit; None in production.
        self.after_send: AfterSend | None = None
        self.clock = Clock(ZoneInfo(settings.timezone))
        self.scheduler = RunScheduler(
            self.sessions, settings, self.clock, every_seconds=settings.schedule_check_seconds
        )

    async def start(self) -> None:
        await super().start()
        self.scheduler.start()

    async def stop(self) -> None:
        # Before the outbox drains, so what the last check staged is published.
        await self.scheduler.stop()
        await super().stop()


def create_service(settings: PayoutsSettings | None = None) -> PayoutsService:
    settings = settings or PayoutsSettings()
    service = PayoutsService(settings)
    service.subscribe(*projections.subscriptions())
    service.publishes(
        Topic.PAYOUTS_EVENTS,
        [
            "earning.accrued",
            "earning.reversed",
            "payout_run.approved",
            "payout_run.executed",
            "payout.sent",
            "payout.paid",
            "payout.failed",
            "payout.returned",
            "approval.requested",
            "approval.decided",
        ],
    )
    service.include(api.router(service))
    return service
