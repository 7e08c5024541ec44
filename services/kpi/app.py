"""The kpi service: aggregates from events, the KPI endpoints, alerts, and the ops dashboard page.

Who may read: billing managers (and admins, who pass every check). The figures are revenue-management data;
counter and recovery staff need a consumer's own payments, which payments serves, not the utility's totals.
A wall screen is opened with a billing manager's token.

The dashboard page (`GET /`) and its static files are public: they hold no data. Every data call the page
makes carries a bearer token in the Authorization header. The token is given once, as `?token=` (which the
page moves into sessionStorage and removes from the address bar) or pasted into the page's form; it lives
only for the browser tab. The page polls rather than using server-sent events because EventSource cannot
send an Authorization header, and a token in every request URL would end up in access logs.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import BaseModel, Field

from services.kpi import domain, handlers, lag_gauges
from services.kpi.domain import Comparison, Metric
from services.kpi.settings import KpiSettings
from services.kpi.storage import plumbing
from shared.auth import Actor, Role, require_roles
from shared.contracts import Topic
from shared.errors import Rejected
from shared.service import Service

READERS = (Role.BILLING_MANAGER,)
STATIC = Path(__file__).with_name("static")
MAX_TREND_DAYS = 3 * 366
Reader = Annotated[Actor, require_roles(*READERS)]


class NewAlert(BaseModel):
    metric: Metric = Field(examples=["collection_rate"])
    comparison: Comparison = Field(examples=["below"])
    threshold: Decimal = Field(max_digits=16, decimal_places=2, examples=["90"], description="A percentage or a count.")


class DashboardView(BaseModel):
    date_range_selected: str = Field(default="", max_length=40, examples=["2025-04"])
    widgets_accessed: list[str] = Field(default_factory=list, max_length=20)


def create_service(settings: KpiSettings | None = None) -> Service:
    settings = settings or KpiSettings()
    service = Service(settings, plumbing, title="Paydesk KPI")
    # The consumers wake the outbox relay only after a commit that staged an event (an alert), not per payment.
    ctx = handlers.Context(time_zone=settings.zone, currency=settings.currency, stage=service.stage)
    for name, (topic, make_handlers) in handlers.CONSUMERS.items():
        # Every payment moves the KPIs: its partitions are applied in parallel by several members of one group.
        for _ in range(settings.payment_consumers if topic is Topic.PAYMENTS_EVENTS else 1):
            service.consume(name, topic, make_handlers(ctx))
    service.publishes(Topic.KPI_ALERTS, ["alert.raised"])
    service.publishes(Topic.ANALYTICS_EVENTS, ["usage.tracked"])
    lag_gauges.expose(service)  # consumer lag per group and partition on /metrics
    router = APIRouter(tags=["kpi"])

    def this_month() -> str:
        return domain.period_of(domain.local_day(datetime.now(UTC), settings.zone))

    @router.get("/kpi/summary")
    async def summary(
        actor: Reader,
        period: Annotated[str | None, Query(examples=["2025-04"], description="YYYY-MM; this month if absent.")] = None,
        currency: Annotated[str | None, Query(min_length=3, max_length=3)] = None,
    ) -> dict[str, Any]:
        """The header KPIs of a month, each with the previous month's value and the percentage change."""
        async with service.sessions() as session:
            return await handlers.summary(
                session,
                period or this_month(),
                currency=(currency or settings.currency).upper(),
                time_zone=settings.zone,
                now=datetime.now(UTC),
            )

    @router.get("/kpi/trends")
    async def trends(
        actor: Reader,
        from_: Annotated[
            date | None, Query(alias="from", description="First day; 29 days before `to` if absent.")
        ] = None,
        to: Annotated[date | None, Query(description="Last day, included; today if absent.")] = None,
        granularity: Literal["day", "month"] = "day",
        by: Literal["channel", "method", "type"] | None = None,
        currency: Annotated[str | None, Query(min_length=3, max_length=3)] = None,
    ) -> dict[str, Any]:
        """Collected money per day or month, optionally split by channel, method or payment type."""
        last = to or domain.local_day(datetime.now(UTC), settings.zone)
        first = from_ or last - timedelta(days=29)
        if first > last:
            raise Rejected("invalid_range", "`from` must not be after `to`", field="from")
        if (last - first).days > MAX_TREND_DAYS:
            raise Rejected("invalid_range", f"at most {MAX_TREND_DAYS} days at a time", field="from")
        async with service.sessions() as session:
            return await handlers.trends(
                session,
                start=first,
                end=last + timedelta(days=1),
                granularity=granularity,
                by=by,
                currency=(currency or settings.currency).upper(),
            )

    @router.get("/kpi/drilldown")
    async def drilldown(
        actor: Reader,
        by: Literal["channel", "method", "type"],
        period: Annotated[str | None, Query(examples=["2025-04"])] = None,
        channel: str | None = None,
        method: str | None = None,
        type: Annotated[str | None, Query(description="bill, service or installment")] = None,
        currency: Annotated[str | None, Query(min_length=3, max_length=3)] = None,
    ) -> dict[str, Any]:
        """From a month's total collected to what it is made of, e.g. by channel, then one channel by method."""
        filters = {k: v for k, v in {"channel": channel, "method": method, "type": type}.items() if v is not None}
        if by in filters:
            raise Rejected("invalid_drilldown", f"already filtered by {by}", field="by")
        month = period or this_month()
        async with service.sessions() as session, session.begin():
            result = await handlers.drilldown(
                session, period=month, by=by, filters=filters, currency=(currency or settings.currency).upper()
            )
            await handlers.track(
                session,
                service.stage,
                "metric_drilldown",
                actor.user_id,
                {
                    "source_metric": "total_collected",
                    "target_detail": by,
                    "analysis_depth": str(len(filters) + 1),
                    "period": month,
                },
            )
        service.relay.wake()
        return result

    @router.get("/kpi/recent-payments")
    async def recent_payments(
        actor: Reader, limit: Annotated[int, Query(ge=1, le=100)] = 10
    ) -> dict[str, list[dict[str, Any]]]:
        """The latest posted payments, newest first (times in the utility's time zone)."""
        async with service.sessions() as session:
            return {"payments": await handlers.recent_payments(session, limit=limit, time_zone=settings.zone)}

    @router.post("/kpi/alerts", status_code=201)
    async def create_alert(body: NewAlert, actor: Reader) -> dict[str, Any]:
        """A threshold that raises `alert.raised` on `kpi.alerts.v1` (and a log line) each time it is crossed."""
        async with service.sessions() as session, session.begin():
            created = await handlers.create_alert(
                session,
                service.stage,
                metric=body.metric,
                comparison=body.comparison,
                threshold=body.threshold,
                created_by=actor.name,
                user_id=actor.user_id,
            )
        ctx.rules.invalidate()
        service.relay.wake()
        return created

    @router.get("/kpi/alerts")
    async def list_alerts(actor: Reader) -> dict[str, Any]:
        async with service.sessions() as session:
            return await handlers.list_alerts(session)

    @router.post("/kpi/dashboard-views", status_code=202)
    async def dashboard_view(body: DashboardView, actor: Reader) -> dict[str, str]:
        """The dashboard page reports that it was opened (usage tracking: `dashboard_view`)."""
        async with service.sessions() as session, session.begin():
            await handlers.track(
                session,
                service.stage,
                "dashboard_view",
                actor.user_id,
                {"date_range_selected": body.date_range_selected, "widgets_accessed": ",".join(body.widgets_accessed)},
            )
        service.relay.wake()
        return {"status": "accepted"}

    pages = APIRouter(include_in_schema=False)

    @pages.get("/")
    async def dashboard() -> HTMLResponse:
        html = (STATIC / "dashboard.html").read_text()
        return HTMLResponse(html.replace("{{REFRESH_MS}}", str(int(settings.dashboard_refresh_seconds * 1000))))

    @pages.get("/static/{name}")
    async def static(name: Literal["chart.umd.js", "dashboard.js", "dashboard.css"]) -> FileResponse:
        media = "text/css" if name.endswith(".css") else "text/javascript"
        return FileResponse(STATIC / name, media_type=media, headers={"Cache-Control": "max-age=3600"})

    service.include(router)
    service.include(pages)
    return service
