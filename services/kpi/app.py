"""The kpi service: aggregates from events and the KPI endpoints."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from services.kpi import handlers
from services.kpi.settings import KpiSettings
from services.kpi.storage import plumbing
from shared.auth import Actor, Role, require_roles
from shared.contracts import Topic
from shared.service import Service


def create_service(settings: KpiSettings | None = None) -> Service:
    settings = settings or KpiSettings()
    service = Service(settings, plumbing, title="Paydesk KPI")
    service.consume("payments", Topic.PAYMENTS_EVENTS, handlers.PAYMENT_HANDLERS)
    router = APIRouter(tags=["kpi"])

    @router.get("/kpi/summary")
    async def summary(
        actor: Annotated[Actor, require_roles(Role.BILLING_MANAGER)],
        period: Annotated[str, Query(examples=["2025-04"])],
    ) -> dict[str, Any]:
        async with service.sessions() as session:
            return await handlers.collected_in(session, period)

    service.include(router)
    return service
