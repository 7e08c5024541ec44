"""The gateway_bridge service: Stripe webhooks in, ordered and deduplicated gateway events out."""

from __future__ import annotations

import asyncio
import logging

from services.gateway_bridge import api
from services.gateway_bridge.settings import GatewayBridgeSettings
from services.gateway_bridge.settlement import SettlementWorker
from services.gateway_bridge.storage import plumbing
from shared.contracts import Topic, dlq
from shared.service import Service

log = logging.getLogger(__name__)


class GatewayBridge(Service):
    """A service that also runs the settlement worker between start and stop."""

    def __init__(self, settings: GatewayBridgeSettings) -> None:
        super().__init__(settings, plumbing, title="Paydesk gateway_bridge")
        self.bridge_settings = settings
        self.settlement = SettlementWorker(settings, self.sessions)
        self._settlement_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if not self.bridge_settings.webhook_secrets():
            log.warning("STRIPE_WEBHOOK_SECRET is not set: every Stripe webhook will be rejected")
        await super().start()
        self._settlement_task = asyncio.create_task(self.settlement.run(), name="gateway_bridge-settlement")

    async def stop(self) -> None:
        # Intake first: no new payout is resolved once stopping, the outbox is drained after.
        self.settlement.stop()
        if self._settlement_task is not None:
            try:
                await asyncio.wait_for(self._settlement_task, timeout=15)
            except TimeoutError:
                self._settlement_task.cancel()
        await super().stop()


def create_service(settings: GatewayBridgeSettings | None = None) -> GatewayBridge:
    settings = settings or GatewayBridgeSettings()
    service = GatewayBridge(settings)
    service.publishes(
        Topic.GATEWAY_EVENTS,
        [
            "gateway.payment_status_changed",
            "gateway.settlement_status_changed",
            "gateway.payout_listed",
            "gateway.payout_status_changed",
        ],
    )
    service.publishes(dlq(Topic.GATEWAY_EVENTS), ["stripe.event (unroutable Stripe events, reason in x-dlq-reason)"])
    service.include(api.router(service, settings, service.settlement))
    return service
