"""KPI reads: every figure comes from the pre-aggregated rows, so its cost does not grow with the payments."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Row, RowMapping, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.kpi import domain
from services.kpi.storage import (
    BACKLOG_SCOPE,
    alert_rules,
    alert_states,
    daily_collections,
    daily_dues,
    daily_events,
    daily_plan_outcomes,
    daily_receipts,
    payments,
    reconciliation_days,
    reconciliation_exceptions,
    verification_backlog,
)
from shared.money import quantize

ZERO = Decimal("0.00")

# What the collected money can be split by (trends, drill-down).
DIMENSIONS = {
    "channel": daily_collections.c.channel,
    "method": daily_collections.c.method,
    "type": daily_collections.c.payment_type,
}


@dataclass(frozen=True)
class Collections:
    """Collected money in a range of payment dates; `days` / `timed` is the average collection time."""

    payments: int
    collected: Decimal
    timed: int
    days: int


async def collections(session: AsyncSession, start: date, end: date, currency: str) -> Collections:
    c = daily_collections.c
    row = (
        await session.execute(
            select(
                func.coalesce(func.sum(c.payments), 0),
                func.coalesce(func.sum(c.collected), 0),
                func.coalesce(func.sum(c.timed_payments), 0),
                func.coalesce(func.sum(c.collection_days), 0),
            ).where(c.day >= start, c.day < end, c.currency == currency)
        )
    ).one()
    return Collections(
        payments=int(row[0]), collected=quantize(Decimal(row[1]), currency), timed=int(row[2]), days=int(row[3])
    )


async def due(session: AsyncSession, start: date, end: date, currency: str) -> Decimal:
    """What fell due in a range of due dates: the collection rate's denominator."""
    c = daily_dues.c
    total = (
        await session.execute(
            select(func.coalesce(func.sum(c.due), 0)).where(c.day >= start, c.day < end, c.currency == currency)
        )
    ).scalar_one()
    return quantize(Decimal(total), currency)


async def counted_events(
    session: AsyncSession, start: date, end: date, currency: str
) -> dict[str, tuple[int, Decimal]]:
    c = daily_events.c
    rows = (
        await session.execute(
            select(c.event, func.sum(c.count), func.sum(c.amount))
            .where(c.day >= start, c.day < end, c.currency == currency)
            .group_by(c.event)
        )
    ).all()
    return {event: (int(count), quantize(Decimal(amount), currency)) for event, count, amount in rows}


async def plan_outcomes(session: AsyncSession, start: date, end: date, currency: str) -> tuple[int, int, int]:
    """Arrangements' installments falling due in a range of days: how many were kept, paid late and missed."""
    c = daily_plan_outcomes.c
    row = (
        await session.execute(
            select(
                func.coalesce(func.sum(c.kept), 0),
                func.coalesce(func.sum(c.late), 0),
                func.coalesce(func.sum(c.missed), 0),
            ).where(c.day >= start, c.day < end, c.currency == currency)
        )
    ).one()
    return int(row[0]), int(row[1]), int(row[2])


async def missed_installments(session: AsyncSession, day: date) -> int:
    """Installments collections found missed on one day, in any currency."""
    c = daily_events.c
    found = await session.execute(
        select(func.coalesce(func.sum(c.count), 0)).where(
            c.day == day, c.event == domain.CountedEvent.INSTALLMENTS_MISSED.value
        )
    )
    return int(found.scalar_one())


async def pending_verifications(session: AsyncSession) -> int:
    c = verification_backlog.c
    found = (await session.execute(select(c.pending).where(c.scope == BACKLOG_SCOPE))).scalar_one_or_none()
    return int(found or 0)


@dataclass(frozen=True)
class PeriodFigures:
    collected: Decimal
    payments: int
    due: Decimal
    timed: int
    days: int
    events: dict[str, tuple[int, Decimal]] = field(default_factory=dict)
    plan_outcomes: tuple[int, int, int] = (0, 0, 0)  # arrangements' installments due: kept, late, missed

    @property
    def rate(self) -> Decimal | None:
        return domain.collection_rate(self.collected, self.due)

    @property
    def plan_compliance(self) -> Decimal | None:
        return domain.plan_compliance(*self.plan_outcomes)

    @property
    def average_days(self) -> Decimal | None:
        return domain.average_days(self.days, self.timed)

    def event(self, name: str) -> tuple[int, Decimal]:
        return self.events.get(name, (0, ZERO))


async def period_figures(session: AsyncSession, period: str, currency: str) -> PeriodFigures:
    start, end = domain.month_bounds(period)
    collected = await collections(session, start, end, currency)
    return PeriodFigures(
        collected=collected.collected,
        payments=collected.payments,
        due=await due(session, start, end, currency),
        timed=collected.timed,
        days=collected.days,
        events=await counted_events(session, start, end, currency),
        plan_outcomes=await plan_outcomes(session, start, end, currency),
    )


@dataclass(frozen=True)
class DayReceipts:
    """Money posted on one local day ("Received Today")."""

    day: date
    payments: int
    received: Decimal


@dataclass(frozen=True)
class CurrencyTotal:
    currency: str
    payments: int
    collected: Decimal


@dataclass(frozen=True)
class Summary:
    """The header KPIs of a month and of the month before, as of `as_of`."""

    period: str
    previous_period: str
    currency: str
    time_zone: ZoneInfo
    as_of: datetime
    current: PeriodFigures
    previous: PeriodFigures
    today: DayReceipts
    yesterday: DayReceipts
    by_currency: list[CurrencyTotal]
    pending_verifications: int


async def summary(session: AsyncSession, period: str, *, currency: str, time_zone: ZoneInfo, now: datetime) -> Summary:
    """The header KPIs of a month, with the previous month's figures to compare with."""
    start, end = domain.month_bounds(period)
    previous_period = domain.previous_period(period)
    current = await period_figures(session, period, currency)
    previous = await period_figures(session, previous_period, currency)
    today = domain.local_day(now, time_zone)
    yesterday = today - timedelta(days=1)
    received = {
        day: (int(n), Decimal(amount))
        for day, n, amount in (
            await session.execute(
                select(daily_receipts.c.day, daily_receipts.c.payments, daily_receipts.c.received).where(
                    daily_receipts.c.day.in_([today, yesterday]), daily_receipts.c.currency == currency
                )
            )
        ).all()
    }
    by_currency = (
        await session.execute(
            select(
                daily_collections.c.currency,
                func.sum(daily_collections.c.payments),
                func.sum(daily_collections.c.collected),
            )
            .where(daily_collections.c.day >= start, daily_collections.c.day < end)
            .group_by(daily_collections.c.currency)
            .having(func.sum(daily_collections.c.payments) != 0)
            .order_by(daily_collections.c.currency)
        )
    ).all()
    return Summary(
        period=period,
        previous_period=previous_period,
        currency=currency,
        time_zone=time_zone,
        as_of=now,
        current=current,
        previous=previous,
        today=DayReceipts(today, *received.get(today, (0, ZERO))),
        yesterday=DayReceipts(yesterday, *received.get(yesterday, (0, ZERO))),
        by_currency=[CurrencyTotal(c, int(n), Decimal(t)) for c, n, t in by_currency],
        pending_verifications=await pending_verifications(session),
    )


@dataclass(frozen=True)
class TrendPoint:
    bucket: date  # the day, or the first day of the month
    key: str | None  # the channel, method or type when split
    payments: int
    amount: Decimal


@dataclass(frozen=True)
class Trend:
    start: date
    end: date  # excluded
    granularity: str
    by: str | None
    currency: str
    points: list[TrendPoint]


async def trend(
    session: AsyncSession, *, start: date, end: date, granularity: str, by: str | None, currency: str
) -> Trend:
    """Collected money per day or month in [start, end), optionally split; buckets with nothing are left out."""
    c = daily_collections.c
    bucket = c.day if granularity == "day" else func.date_trunc("month", c.day).cast(c.day.type)
    columns = [bucket.label("bucket")]
    if by is not None:
        columns.append(DIMENSIONS[by].label("key"))
    statement = (
        select(*columns, func.sum(c.payments), func.sum(c.collected))
        .where(c.day >= start, c.day < end, c.currency == currency)
        .group_by(*columns)
        .order_by(*columns)
    )
    points = [
        TrendPoint(row[0], row[1] if by is not None else None, int(row[-2]), Decimal(row[-1]))
        for row in (await session.execute(statement)).all()
    ]
    return Trend(start, end, granularity, by, currency, [p for p in points if p.payments or p.amount])


@dataclass(frozen=True)
class Drilldown:
    period: str
    by: str
    filters: dict[str, str]
    currency: str
    rows: list[tuple[str, int, Decimal]]  # key, payments, amount; largest amount first
    total: Decimal


async def drilldown(
    session: AsyncSession, *, period: str, by: str, filters: Mapping[str, str], currency: str
) -> Drilldown:
    """What a month's total collected is made of, by channel, method or type, within the filters given."""
    start, end = domain.month_bounds(period)
    c = daily_collections.c
    key = DIMENSIONS[by]
    statement = (
        select(key, func.sum(c.payments), func.sum(c.collected))
        .where(c.day >= start, c.day < end, c.currency == currency)
        .group_by(key)
        .order_by(func.sum(c.collected).desc(), key)
    )
    for name, value in filters.items():
        statement = statement.where(DIMENSIONS[name] == value)
    rows = [(k, int(n), Decimal(t)) for k, n, t in (await session.execute(statement)).all() if n]
    return Drilldown(period, by, dict(filters), currency, rows, sum((t for _, _, t in rows), ZERO))


async def recent_payments(session: AsyncSession, *, limit: int) -> Sequence[RowMapping]:
    """The latest payments posted, newest first."""
    newest_first = select(payments).order_by(payments.c.posted_at.desc()).limit(limit)
    return (await session.execute(newest_first)).mappings().all()


async def alert(session: AsyncSession, alert_id: str) -> Row[Any]:
    return (await session.execute(select(alert_rules).where(alert_rules.c.alert_id == alert_id))).one()


async def alert_rules_in_order(session: AsyncSession) -> Sequence[Row[Any]]:
    """Configured thresholds, oldest first."""
    return (await session.execute(select(alert_rules).order_by(alert_rules.c.created_at))).all()


async def recently_raised(session: AsyncSession, *, recent: int = 20) -> Sequence[Row[Any]]:
    """The most recent times a threshold was crossed, newest first."""
    return (
        await session.execute(
            select(alert_states)
            .where(alert_states.c.last_raised_at.is_not(None))
            .order_by(alert_states.c.last_raised_at.desc())
            .limit(recent)
        )
    ).all()


async def reconciliation_summary(
    session: AsyncSession, day: date, *, currency: str, time_zone: ZoneInfo, now: datetime
) -> domain.ReconciliationDay:
    """Reconciliation as it stood at the end of `day` (or now, for today): from the per-day rows and the
    exceptions' raise and resolve times, so a past day reads the same tomorrow."""
    end = min(datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=time_zone), now)
    start = datetime.combine(day, datetime.min.time(), tzinfo=time_zone)
    d = reconciliation_days.c
    totals = (
        await session.execute(
            select(
                func.coalesce(func.sum(d.lines_imported), 0),
                func.coalesce(func.sum(d.lines_reconciled), 0),
                func.coalesce(func.sum(d.amount_imported), 0),
                func.coalesce(func.sum(d.amount_reconciled), 0),
                func.coalesce(func.sum(d.lines_imported).filter(d.day == day), 0),
                func.coalesce(func.sum(d.lines_reconciled).filter(d.day == day), 0),
            ).where(d.currency == currency, d.day <= day)
        )
    ).one()
    e = reconciliation_exceptions.c
    rows = (
        await session.execute(select(e.raised_at, e.resolved_at).where(e.currency == currency, e.raised_at < end))
    ).all()
    ages: dict[str, int] = {}
    for raised_at, resolved_at in rows:
        if resolved_at is None or resolved_at >= end:
            bucket = domain.exception_age_bucket(raised_at, end)
            ages[bucket] = ages.get(bucket, 0) + 1
    return domain.ReconciliationDay(
        day=day,
        currency=currency,
        lines=int(totals[0]),
        lines_reconciled=int(totals[1]),
        amount_imported=quantize(Decimal(totals[2]), currency),
        amount_reconciled=quantize(Decimal(totals[3]), currency),
        exceptions_by_age=ages,
        lines_imported_that_day=int(totals[4]),
        lines_reconciled_that_day=int(totals[5]),
        exceptions_raised_that_day=sum(1 for r in rows if r.raised_at >= start),
        exceptions_resolved_that_day=sum(1 for r in rows if r.resolved_at is not None and start <= r.resolved_at < end),
    )
