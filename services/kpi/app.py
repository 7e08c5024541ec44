"""The kpi service: aggregates from events, the KPI endpoints, alerts, and the ops dashboard page."""

from __future__ import annotations

from services.kpi import api, arrangements, lag_gauges, projections, reconciliation
from services.kpi.alerts import Alerts
from services.kpi.settings import KpiSettings
from services.kpi.storage import plumbing
from shared.contracts import Topic
from shared.service import Service


def create_service(settings: KpiSettings | None = None) -> Service:
    settings = settings or KpiSettings()
    service = Service(settings, plumbing, title="Paydesk KPI")
    alerts = Alerts(settings.currency)
    for subscription in [*projections.subscriptions(settings, alerts), *arrangements.subscriptions(alerts)]:
        # Every payment moves the KPIs: its partitions are applied in parallel by several members of one group.
        members = settings.payment_consumers if subscription.topic is Topic.PAYMENTS_EVENTS else 1
        service.subscribe(*[subscription] * members)
    service.subscribe(*reconciliation.subscriptions(settings.zone))  # the daily reconciliation summary
    service.publishes(Topic.KPI_ALERTS, ["alert.raised"])
    service.publishes(Topic.ANALYTICS_EVENTS, ["usage.tracked"])
    lag_gauges.expose(service)  # consumer lag per group and partition on /metrics
    service.include(api.router(service, settings, alerts))
    return service
