"""Gateway bridge's HTTP route: `POST /webhooks/stripe`.

The signature is verified on the raw body before anything is stored; the command then records the event id
and raw body once and stages the normalized event in the outbox in the same transaction, and the route answers.
Payout events are resolved into settlement events by the settlement worker, outside the request.
"""

from __future__ import annotations

import json
from typing import Any

import stripe
from fastapi import APIRouter, Request
from prometheus_client import Counter
from pydantic import BaseModel

from services.gateway_bridge import commands
from services.gateway_bridge.settings import GatewayBridgeSettings
from services.gateway_bridge.settlement import SettlementWorker
from shared.service import Service, problem

MAX_BODY_BYTES = 1_000_000

WEBHOOKS = Counter(
    "paydesk_gateway_webhooks_total",
    "Stripe webhook deliveries by outcome (published, superseded, duplicate, ignored, dead_lettered, "
    "payout_pending, rejected)",
    ["outcome"],
)


class WebhookReceived(BaseModel):
    received: bool = True
    event_id: str
    outcome: str


class BadSignature(Exception):
    """The webhook is not provably from Stripe (no, wrong or stale signature); nothing is stored."""


class MalformedEvent(Exception):
    """A correctly signed body that is not a Stripe event; nothing is stored."""


def verify_signature(body: bytes, header: str | None, secrets: list[str], tolerance: int) -> None:
    """Accept the body if any configured secret verifies one of the header's v1 signatures within `tolerance`."""
    if not secrets:
        raise BadSignature("no webhook secret is configured")
    if not header:
        raise BadSignature("Stripe-Signature header missing")
    reason = "signature does not match"
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(body, header, secret, tolerance)
            return
        except stripe.SignatureVerificationError as exc:
            # A signature that matched but is too old says more than another secret's mismatch.
            if "tolerance" not in reason:
                reason = str(exc).split(". ")[0]
        except Exception:  # the library raises TypeError/UnicodeDecodeError on some malformed input
            reason = "unreadable signature header or body"
    raise BadSignature(reason)


def parse_event(body: bytes) -> dict[str, Any]:
    """The verified body as a Stripe event dict with an id and a type."""
    try:
        event = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedEvent(f"body is not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise MalformedEvent("body is not a JSON object")
    event_id, event_type = event.get("id"), event.get("type")
    if not isinstance(event_id, str) or not 0 < len(event_id) <= 255:
        raise MalformedEvent("id missing")
    if not isinstance(event_type, str) or not 0 < len(event_type) <= 100:
        raise MalformedEvent("type missing")
    return event


def router(service: Service, settings: GatewayBridgeSettings, settlement: SettlementWorker) -> APIRouter:
    """The Stripe webhook endpoint; a payout event wakes the settlement worker."""
    routes = APIRouter(tags=["webhooks"])

    @routes.post(
        "/webhooks/stripe",
        response_model=WebhookReceived,
        responses={400: {"description": "Bad or stale signature, or not a Stripe event; nothing stored."}},
    )
    async def stripe_webhook(request: Request) -> Any:
        """Receive one Stripe event. 200 for every verified event, including duplicates and unroutable ones."""
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            WEBHOOKS.labels("rejected").inc()
            return problem(413, "body_too_large", "a Stripe event is never this large")
        try:
            verify_signature(
                body,
                request.headers.get("stripe-signature"),
                settings.webhook_secrets(),
                settings.webhook_tolerance_seconds,
            )
            event = parse_event(body)
        except BadSignature as exc:
            WEBHOOKS.labels("rejected").inc()
            return problem(400, "invalid_signature", str(exc))
        except MalformedEvent as exc:
            WEBHOOKS.labels("rejected").inc()
            return problem(400, "malformed_event", str(exc))
        async with service.sessions() as session, session.begin():
            outcome = await commands.receive_webhook(session, body, event)
        WEBHOOKS.labels(outcome).inc()
        if outcome == "payout_pending":
            settlement.wake()
        return WebhookReceived(event_id=str(event["id"]), outcome=outcome)

    return routes
