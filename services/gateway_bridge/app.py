"""The gateway_bridge service: Stripe webhooks in, ordered and deduplicated gateway events out.

`POST /webhooks/stripe` verifies the signature on the raw body before anything is stored, records the event
id and raw body once, stages the normalized event in the outbox in the same transaction, and answers. Payout
events are resolved into settlement events by the settlement worker, outside the request.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from services.gateway_bridge import handlers
from services.gateway_bridge.settings import GatewayBridgeSettings
from services.gateway_bridge.settlement import SettlementWorker
from services.gateway_bridge.storage import plumbing
from shared.contracts import Topic, dlq
from shared.outbox import stage
from shared.service import Service, problem

log = logging.getLogger(__name__)


class WebhookReceived(BaseModel):
    received: bool = True
    event_id: str
    outcome: str


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
    service.publishes(Topic.GATEWAY_EVENTS, ["gateway.payment_status_changed", "gateway.settlement_status_changed"])
    service.publishes(dlq(Topic.GATEWAY_EVENTS), ["stripe.event (unroutable Stripe events, reason in x-dlq-reason)"])
    router = APIRouter(tags=["webhooks"])

    @router.post(
        "/webhooks/stripe",
        response_model=WebhookReceived,
        responses={400: {"description": "Bad or stale signature, or not a Stripe event; nothing stored."}},
    )
    async def stripe_webhook(request: Request) -> Any:
        """Receive one Stripe event. 200 for every verified event, including duplicates and unroutable ones."""
        body = await request.body()
        if len(body) > handlers.MAX_BODY_BYTES:
            handlers.WEBHOOKS.labels("rejected").inc()
            return problem(413, "body_too_large", "a Stripe event is never this large")
        try:
            handlers.verify_signature(
                body,
                request.headers.get("stripe-signature"),
                settings.webhook_secrets(),
                settings.webhook_tolerance_seconds,
            )
            event = handlers.parse_event(body)
        except handlers.BadSignature as exc:
            handlers.WEBHOOKS.labels("rejected").inc()
            return problem(400, "invalid_signature", str(exc))
        except handlers.MalformedEvent as exc:
            handlers.WEBHOOKS.labels("rejected").inc()
            return problem(400, "malformed_event", str(exc))
        async with service.sessions() as session, session.begin():
            outcome = await handlers.receive_webhook(session, stage, body, event)
        handlers.WEBHOOKS.labels(outcome).inc()
        if outcome == "payout_pending":
            service.settlement.wake()
        return WebhookReceived(event_id=str(event["id"]), outcome=outcome)

    service.include(router)
    return service
