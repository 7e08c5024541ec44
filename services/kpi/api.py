"""KPI's HTTP routes: the KPI endpoints, alert thresholds, and the ops dashboard page.

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

from services.kpi import commands, domain, queries, views
from services.kpi.alerts import Alerts
from services.kpi.domain import Comparison, Metric
from services.kpi.settings import KpiSettings
from shared.auth import Actor, Role, require_roles
from shared.errors import Rejected
from shared.service import Service

READERS = (Role.BILLING_MANAGER,)
STATIC = Path(__file__).with_name("static")
MAX_TREND_DAYS = 3 * 366
Reader = Annotated[Actor, require_roles(*READERS)]
Currency = Annotated[str | None, Query(min_length=3, max_length=3)]


class NewAlert(BaseModel):
    metric: Metric = Field(examples=["collection_rate"])
    comparison: Comparison = Field(examples=["below"])
    threshold: Decimal = Field(max_digits=16, decimal_places=2, examples=["90"], description="A percentage or a count.")


class DashboardView(BaseModel):
    date_range_selected: str = Field(default="", max_length=40, examples=["2025-04"])
    widgets_accessed: list[str] = Field(default_factory=list, max_length=20)
    view_duration_seconds: int | None = Field(
        default=None, ge=0, le=7 * 24 * 3600, description="How long the page was open; sent when it is left."
    )


Seconds = Annotated[int, Field(ge=0, le=7 * 24 * 3600)]
Label = Annotated[str, Field(max_length=100)]


class PaymentProcessed(BaseModel):
    """The counter's view of one payment: how long the customer waited (consumer chosen to receipt shown)."""

    event: Literal["payment_processed"]
    payment_id: Label = Field(examples=["PAY-2025-004521"])
    amount: Decimal = Field(gt=0, max_digits=14, decimal_places=2, examples=["150.00"])
    method: Label = Field(examples=["Cash"])
    processing_time_seconds: Seconds
    customer_wait_time_seconds: Seconds
    receipt_generated: bool


class PaymentInquiryResolved(BaseModel):
    """A customer's question about their payments, answered at the customer service portal."""

    event: Literal["payment_inquiry_resolved"]
    inquiry_type: Label = Field(examples=["balance", "payment_status", "receipt"])
    resolution_time_seconds: Seconds
    escalation_required: bool = False
    customer_satisfaction: int | None = Field(default=None, ge=1, le=5)


class PaymentHistoryViewed(BaseModel):
    """A staff member searched the payment history (the All Payments tab)."""

    event: Literal["payment_history_viewed"]
    search_criteria: Label = ""
    date_range: Label = ""
    details_accessed: Label = ""
    follow_up_action: Label = ""


CounterUsage = Annotated[PaymentProcessed | PaymentInquiryResolved | PaymentHistoryViewed, Field(discriminator="event")]
# Staff whose screens report these (admin passes every check).
COUNTER_STAFF = (Role.CUSTOMER_EXECUTIVE, Role.RECOVERY_EXECUTIVE, Role.BILLING_MANAGER)


def router(service: Service, settings: KpiSettings, alerts: Alerts) -> APIRouter:
    """The KPI endpoints (billing managers) and the dashboard page with its static files (public, no data)."""
    kpi = APIRouter(tags=["kpi"])

    def this_month() -> str:
        return domain.period_of(domain.local_day(datetime.now(UTC), settings.zone))

    def currency_or_default(currency: str | None) -> str:
        return (currency or settings.currency).upper()

    @kpi.get("/kpi/summary")
    async def summary(
        actor: Reader,
        period: Annotated[str | None, Query(examples=["2025-04"], description="YYYY-MM; this month if absent.")] = None,
        currency: Currency = None,
    ) -> dict[str, Any]:
        """The header KPIs of a month, each with the previous month's value and the percentage change."""
        async with service.sessions() as session:
            figures = await queries.summary(
                session,
                period or this_month(),
                currency=currency_or_default(currency),
                time_zone=settings.zone,
                now=datetime.now(UTC),
            )
        return views.summary(figures)

    @kpi.get("/kpi/trends")
    async def trends(
        actor: Reader,
        from_: Annotated[
            date | None, Query(alias="from", description="First day; 29 days before `to` if absent.")
        ] = None,
        to: Annotated[date | None, Query(description="Last day, included; today if absent.")] = None,
        granularity: Literal["day", "month"] = "day",
        by: Literal["channel", "method", "type"] | None = None,
        currency: Currency = None,
    ) -> dict[str, Any]:
        """Collected money per day or month, optionally split by channel, method or payment type."""
        last = to or domain.local_day(datetime.now(UTC), settings.zone)
        first = from_ or last - timedelta(days=29)
        if first > last:
            raise Rejected("invalid_range", "`from` must not be after `to`", field="from")
        if (last - first).days > MAX_TREND_DAYS:
            raise Rejected("invalid_range", f"at most {MAX_TREND_DAYS} days at a time", field="from")
        async with service.sessions() as session:
            trend = await queries.trend(
                session,
                start=first,
                end=last + timedelta(days=1),
                granularity=granularity,
                by=by,
                currency=currency_or_default(currency),
            )
        return views.trends(trend)

    @kpi.get("/kpi/reconciliation")
    async def reconciliation_summary(
        actor: Reader,
        day: Annotated[date | None, Query(description="The day to read the summary at; today if absent.")] = None,
        currency: Currency = None,
    ) -> dict[str, Any]:
        """The daily reconciliation summary: matched %, open exceptions by age, the amount still unreconciled."""
        now = datetime.now(UTC)
        async with service.sessions() as session:
            found = await queries.reconciliation_summary(
                session,
                day or domain.local_day(now, settings.zone),
                currency=currency_or_default(currency),
                time_zone=settings.zone,
                now=now,
            )
        return views.reconciliation_summary(found)

    @kpi.get("/kpi/drilldown")
    async def drilldown(
        actor: Reader,
        by: Literal["channel", "method", "type"],
        period: Annotated[str | None, Query(examples=["2025-04"])] = None,
        channel: str | None = None,
        method: str | None = None,
        type: Annotated[str | None, Query(description="bill, service or installment")] = None,
        currency: Currency = None,
    ) -> dict[str, Any]:
        """From a month's total collected to what it is made of, e.g. by channel, then one channel by method."""
        filters = {k: v for k, v in {"channel": channel, "method": method, "type": type}.items() if v is not None}
        if by in filters:
            raise Rejected("invalid_drilldown", f"already filtered by {by}", field="by")
        month = period or this_month()
        async with service.sessions() as session, session.begin():
            found = await queries.drilldown(
                session, period=month, by=by, filters=filters, currency=currency_or_default(currency)
            )
            await commands.track_usage(
                session,
                "metric_drilldown",
                actor.user_id,
                {
                    "source_metric": "total_collected",
                    "target_detail": by,
                    "analysis_depth": str(len(filters) + 1),
                    "period": month,
                },
            )
        return views.drilldown(found)

    @kpi.get("/kpi/recent-payments")
    async def recent_payments(
        actor: Reader, limit: Annotated[int, Query(ge=1, le=100)] = 10
    ) -> dict[str, list[dict[str, Any]]]:
        """The latest posted payments, newest first (times in the utility's time zone)."""
        async with service.sessions() as session:
            rows = await queries.recent_payments(session, limit=limit)
        return {"payments": [views.recent_payment(row, settings.zone) for row in rows]}

    @kpi.post("/kpi/alerts", status_code=201)
    async def create_alert(body: NewAlert, actor: Reader) -> dict[str, Any]:
        """A threshold that raises `alert.raised` on `kpi.alerts.v1` (and a log line) each time it is crossed."""
        async with service.sessions() as session, session.begin():
            alert_id = await commands.create_alert(
                session,
                metric=body.metric,
                comparison=body.comparison,
                threshold=body.threshold,
                created_by=actor.name,
                user_id=actor.user_id,
            )
            created = await queries.alert(session, alert_id)
        alerts.rules_changed()
        return views.alert(created)

    @kpi.get("/kpi/alerts")
    async def list_alerts(actor: Reader) -> dict[str, Any]:
        async with service.sessions() as session:
            return views.alerts(await queries.alert_rules_in_order(session), await queries.recently_raised(session))

    @kpi.post("/kpi/dashboard-views", status_code=202)
    async def dashboard_view(body: DashboardView, actor: Reader) -> dict[str, str]:
        """The dashboard page reports that it was opened (usage tracking: `dashboard_view`)."""
        async with service.sessions() as session, session.begin():
            await commands.track_usage(
                session,
                "dashboard_view",
                actor.user_id,
                views.dashboard_view_properties(
                    body.date_range_selected, body.widgets_accessed, body.view_duration_seconds
                ),
            )
        return {"status": "accepted"}

    @kpi.post("/kpi/usage", status_code=202, tags=["usage"])
    async def counter_usage(
        body: CounterUsage, actor: Annotated[Actor, require_roles(*COUNTER_STAFF)]
    ) -> dict[str, str]:
        """What the staff screens measure and only the browser knows (waiting times, how an inquiry ended),
        published as usage tracking on `analytics.events.v1`."""
        # The seed's property names: durations are in seconds, named without the unit.
        properties = {
            k.removesuffix("_seconds"): views.usage_value(v)
            for k, v in body.model_dump(exclude={"event"}).items()
            if v is not None
        }
        async with service.sessions() as session, session.begin():
            await commands.track_usage(session, body.event, actor.user_id, properties)
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

    both = APIRouter()
    both.include_router(kpi)
    both.include_router(pages)
    return both
