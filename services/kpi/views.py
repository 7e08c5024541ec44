"""KPI response shapes: what the endpoints (and the dashboard page) read. Money and rates as strings."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Row, RowMapping

from services.kpi import domain
from services.kpi.domain import CountedEvent
from services.kpi.queries import Drilldown, Summary, Trend


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _compared(current: Decimal | None, previous: Decimal | None) -> dict[str, str | None]:
    return {
        "value": _text(current),
        "previous": _text(previous),
        "change_percent": _text(domain.percent_change(current, previous)),
    }


def _counted(current: tuple[int, Decimal], previous: tuple[int, Decimal]) -> dict[str, Any]:
    return {
        "count": current[0],
        "amount": str(current[1]),
        "previous_count": previous[0],
        "previous_amount": str(previous[1]),
        "change_percent": _text(domain.percent_change(Decimal(current[0]), Decimal(previous[0]))),
    }


def summary(figures: Summary) -> dict[str, Any]:
    """The header KPIs of a month, each with the previous month's value and the percentage change."""
    current, previous = figures.current, figures.previous

    def counted(event: CountedEvent) -> dict[str, Any]:
        return _counted(current.event(event), previous.event(event))

    return {
        "period": figures.period,
        "previous_period": figures.previous_period,
        "currency": figures.currency,
        "time_zone": str(figures.time_zone),
        "as_of": figures.as_of.isoformat(),
        "total_collected": [
            {"currency": t.currency, "amount": str(t.collected), "payments": t.payments} for t in figures.by_currency
        ],
        "kpis": {
            "total_collected": {**_compared(current.collected, previous.collected), "payments": current.payments},
            "received_today": {
                **_compared(figures.today.received, figures.yesterday.received),
                "day": figures.today.day.isoformat(),
                "payments": figures.today.payments,
                "previous_payments": figures.yesterday.payments,
            },
            "collection_rate": {
                **_compared(current.rate, previous.rate),
                "total_collected": str(current.collected),
                "total_due": str(current.due),
            },
            "average_collection_time": {
                **_compared(current.average_days, previous.average_days),
                "payments": current.timed,
            },
            "credit_notes_issued": counted(CountedEvent.CREDIT_NOTES_ISSUED),
            "credit_notes_applied": counted(CountedEvent.CREDIT_NOTES_APPLIED),
            "failed_online_payments": counted(CountedEvent.ONLINE_PAYMENTS_FAILED),
            "cancelled_payments": counted(CountedEvent.PAYMENTS_CANCELLED),
            "refunded_payments": counted(CountedEvent.PAYMENTS_REFUNDED),
            "pending_verification": {"count": figures.pending_verifications},
            "payment_plan_compliance": {
                **_compared(current.plan_compliance, previous.plan_compliance),
                **dict(zip(("kept", "late", "missed"), current.plan_outcomes, strict=True)),
            },
            "recovered_this_month": {
                **_compared(
                    current.event(CountedEvent.PLAN_PAYMENTS_RECOVERED)[1],
                    previous.event(CountedEvent.PLAN_PAYMENTS_RECOVERED)[1],
                ),
                "payments": current.event(CountedEvent.PLAN_PAYMENTS_RECOVERED)[0],
            },
            "missed_installments": counted(CountedEvent.INSTALLMENTS_MISSED),
        },
    }


def trends(trend: Trend) -> dict[str, Any]:
    """Collected money per bucket; a month's bucket is labelled `YYYY-MM`."""
    points = []
    for p in trend.points:
        label = p.bucket.isoformat() if trend.granularity == "day" else domain.period_of(p.bucket)
        point: dict[str, Any] = {"bucket": label, "payments": p.payments, "amount": str(p.amount)}
        if trend.by is not None:
            point[trend.by] = p.key
        points.append(point)
    return {
        "from": trend.start.isoformat(),
        "to": (trend.end - timedelta(days=1)).isoformat(),
        "granularity": trend.granularity,
        "by": trend.by,
        "currency": trend.currency,
        "points": points,
    }


def drilldown(found: Drilldown) -> dict[str, Any]:
    """Each part of the total with its share of it."""
    total = found.total
    return {
        "period": found.period,
        "metric": "total_collected",
        "filters": found.filters,
        "by": found.by,
        "currency": found.currency,
        "total": str(total),
        "rows": [
            {
                found.by: k,
                "payments": n,
                "amount": str(t),
                "share_percent": _text(domain.collection_rate(t, found.total)),
            }
            for k, n, t in found.rows
        ],
    }


def recent_payment(row: RowMapping, time_zone: ZoneInfo) -> dict[str, Any]:
    """One posted payment as the dashboard lists it (its posting time in the utility's time zone)."""
    return {
        "payment_id": row["payment_id"],
        "receipt_number": row["receipt_number"],
        "account_number": row["account_number"],
        "consumer_name": row["consumer_name"],
        "amount": str(row["amount"]),
        "currency": row["currency"],
        "channel": row["channel"],
        "method": row["method"],
        "payment_type": row["payment_type"],
        "payment_date": row["payment_date"].isoformat(),
        "posted_at": row["posted_at"].astimezone(time_zone).isoformat(),
        "status": row["status"],
        "verification": row["verification"],
    }


def alert(rule: Row[Any]) -> dict[str, Any]:
    return {
        "alert_id": rule.alert_id,
        "metric": rule.metric,
        "comparison": rule.comparison,
        "threshold": str(rule.threshold),
        "created_by": rule.created_by,
        "created_at": rule.created_at.isoformat(),
    }


def alerts(rules: Sequence[Row[Any]], raised: Sequence[Row[Any]]) -> dict[str, Any]:
    """Configured thresholds, and the most recent times one was raised."""
    return {
        "alerts": [alert(rule) for rule in rules],
        "recently_raised": [
            {
                "alert_id": r.alert_id,
                "window": r.window,
                "breached": r.breached,
                "value": str(r.value) if r.value is not None else None,
                "raised_count": r.raised_count,
                "last_raised_at": r.last_raised_at.isoformat(),
            }
            for r in raised
        ],
    }


def reconciliation_summary(found: domain.ReconciliationDay) -> dict[str, Any]:
    return {
        "day": found.day.isoformat(),
        "currency": found.currency,
        "matched_percent": str(found.matched_percent),
        "lines": found.lines,
        "lines_reconciled": found.lines_reconciled,
        "amount_unreconciled": str(found.amount_unreconciled),
        "open_exceptions": sum(found.exceptions_by_age.values()),
        "exceptions_by_age": {
            name: found.exceptions_by_age.get(name, 0) for name in [*dict(domain.EXCEPTION_AGE_BUCKETS), ">30d"]
        },
        "that_day": {
            "lines_imported": found.lines_imported_that_day,
            "lines_reconciled": found.lines_reconciled_that_day,
            "exceptions_raised": found.exceptions_raised_that_day,
            "exceptions_resolved": found.exceptions_resolved_that_day,
        },
    }


def dashboard_view_properties(date_range: str, widgets: list[str], duration_seconds: int | None) -> dict[str, str]:
    """`dashboard_view`'s properties; `view_duration` (seconds) only when the page reported it on leaving."""
    properties = {"date_range_selected": date_range, "widgets_accessed": ",".join(widgets)}
    if duration_seconds is not None:
        properties["view_duration"] = str(duration_seconds)
    return properties


def usage_value(value: object) -> str:
    """A usage property as text: booleans as true/false, amounts in plain notation."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)
