"""The payments service wired together: staff routes, event consumers, and what it publishes."""

from __future__ import annotations

from services.payments import api, arrangements, external_commands, intents, online, projections, settlement
from services.payments.settings import PaymentsSettings
from services.payments.storage import plumbing
from shared.contracts import Topic
from shared.service import Service


def create_service(settings: PaymentsSettings | None = None) -> Service:
    """The payments service, built from settings; nothing connects until it starts."""
    settings = settings or PaymentsSettings()
    service = Service(settings, plumbing, title="Paydesk payments")
    service.subscribe(
        *projections.subscriptions(),
        *external_commands.subscriptions(settings.commands_max_batch),
        *online.subscriptions(),
    )
    service.subscribe(*settlement.subscriptions())  # Settled when reconciliation finds the money at the bank
    service.subscribe(*arrangements.subscriptions())
    service.publishes(
        Topic.PAYMENTS_EVENTS,
        [
            "payment.posted",
            "payment.overpaid",
            "payment.status_changed",
            "payment.verified",
            "payment.cancelled",
            "payment.record_rejected",
            "payment.partially_refunded",
            "payment.adjusted",
            "payment.dispute_opened",
            "payment.dispute_closed",
            "approval.requested",
            "approval.decided",
        ],
    )
    service.publishes(Topic.ANALYTICS_EVENTS, ["usage.tracked"])
    service.include(api.router(service, intents.stripe_client(settings)))
    return service
