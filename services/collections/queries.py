"""Collections' reads: the worklist (filters, sort, keyset paging, search), an account, arrangements, activities,
follow-ups, alerts, approvals and the reports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Date, and_, case, cast, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.collections import domain
from services.collections.domain import AgingBucket, ArrangementStatus
from services.collections.storage import (
    accounts,
    activities,
    alerts,
    approvals,
    arrangements,
    audit_log,
    installment_outcomes,
    installments,
    items,
    recoveries,
)
from shared import approvals as maker_checker
from shared import audit
from shared.errors import NotFound
from shared.paging import after_key, contains_pattern, decode_cursor, page

FAR_FUTURE = date(9999, 12, 31)


class WorklistSort(StrEnum):
    DAYS_OVERDUE = "days_overdue"  # most overdue first
    AMOUNT_OVERDUE = "amount_overdue"  # largest first
    NAME = "name"
    ACCOUNT = "account"


@dataclass(frozen=True)
class WorklistFilters:
    text: str | None = None
    days_overdue_min: int | None = None
    days_overdue_max: int | None = None
    amount_min: Decimal | None = None
    amount_max: Decimal | None = None
    bucket: AgingBucket | None = None
    has_plan: bool | None = None
    plan_status: ArrangementStatus | None = None
    executive: str | None = None
    contacted_since: datetime | None = None
    not_contacted_since: datetime | None = None
    disconnection: domain.Disconnection | None = None
    sort: WorklistSort = WorklistSort.DAYS_OVERDUE


def _conditions(filters: WorklistFilters, today: date) -> list[ColumnElement[bool]]:
    c = accounts.c
    clauses: list[ColumnElement[bool]] = [or_(c.amount_owed > 0, c.plan_status.is_not(None))]
    if filters.text:
        pattern = contains_pattern(filters.text)
        clauses.append(or_(c.name.ilike(pattern), c.account_number.ilike(pattern)))
    if filters.days_overdue_min is not None:
        clauses.append(c.oldest_overdue_due <= today - timedelta(days=filters.days_overdue_min))
    if filters.days_overdue_max is not None:
        clauses.append(
            or_(
                c.oldest_overdue_due.is_(None), c.oldest_overdue_due >= today - timedelta(days=filters.days_overdue_max)
            )
        )
    if filters.amount_min is not None:
        clauses.append(c.amount_overdue >= filters.amount_min)
    if filters.amount_max is not None:
        clauses.append(c.amount_overdue <= filters.amount_max)
    if filters.bucket is not None:
        earliest, latest = domain.bucket_due_range(filters.bucket, today)
        clauses.append(c.oldest_overdue_due <= latest)
        if earliest is not None:
            clauses.append(c.oldest_overdue_due >= earliest)
    if filters.has_plan is True:
        clauses.append(c.plan_status.in_([s.value for s in domain.OPEN_STATUSES]))
    elif filters.has_plan is False:
        clauses.append(or_(c.plan_status.is_(None), c.plan_status.not_in([s.value for s in domain.OPEN_STATUSES])))
    if filters.plan_status is not None:
        clauses.append(c.plan_status == filters.plan_status.value)
    if filters.executive:
        clauses.append(func.lower(c.executive) == filters.executive.lower())
    if filters.contacted_since is not None:
        clauses.append(c.last_contact_at >= filters.contacted_since)
    if filters.not_contacted_since is not None:
        clauses.append(or_(c.last_contact_at.is_(None), c.last_contact_at < filters.not_contacted_since))
    if filters.disconnection is not None:
        clauses.append(c.disconnection == filters.disconnection.value)
    return clauses


def _sort_columns(sort: WorklistSort) -> tuple[list[ColumnElement[Any]], bool, tuple[type, ...]]:
    c = accounts.c
    if sort is WorklistSort.DAYS_OVERDUE:
        oldest = func.coalesce(c.oldest_overdue_due, cast(literal(FAR_FUTURE), Date))
        return [oldest, c.account_number], False, (date, str)
    if sort is WorklistSort.AMOUNT_OVERDUE:
        return [c.amount_overdue, c.account_number], True, (Decimal, str)
    if sort is WorklistSort.NAME:
        return [c.name, c.account_number], False, (str, str)
    return [c.account_number], False, (str,)


async def search_worklist(
    session: AsyncSession, filters: WorklistFilters, *, today: date, limit: int = 50, cursor: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the worklist and the next page's cursor (keyset: deep pages are as fast as the first)."""
    clauses = _conditions(filters, today)
    columns, descending, types = _sort_columns(filters.sort)
    sort = f"worklist:{filters.sort.value}"
    if cursor is not None:
        clauses.append(after_key(columns, decode_cursor(cursor, sort=sort, types=types), descending=descending))
    order = [col.desc() if descending else col.asc() for col in columns]
    statement = select(accounts).where(*clauses).order_by(*order).limit(limit + 1)
    rows = [dict(r) for r in (await session.execute(statement)).mappings().all()]

    def key(row: dict[str, Any]) -> tuple[Any, ...]:
        if filters.sort is WorklistSort.DAYS_OVERDUE:
            return (row["oldest_overdue_due"] or FAR_FUTURE, row["account_number"])
        if filters.sort is WorklistSort.AMOUNT_OVERDUE:
            return (row["amount_overdue"], row["account_number"])
        if filters.sort is WorklistSort.NAME:
            return (row["name"], row["account_number"])
        return (row["account_number"],)

    return page(rows, limit, sort=sort, key=key)


async def iter_worklist(
    sessions: async_sessionmaker[AsyncSession], filters: WorklistFilters, *, today: date, batch: int = 1000
) -> AsyncIterator[dict[str, Any]]:
    cursor: str | None = None
    while True:
        async with sessions() as session:
            rows, cursor = await search_worklist(session, filters, today=today, limit=batch, cursor=cursor)
        for row in rows:
            yield row
        if cursor is None:
            return


async def account(session: AsyncSession, account_number: str) -> dict[str, Any]:
    row = (
        (await session.execute(select(accounts).where(accounts.c.account_number == account_number))).mappings().first()
    )
    if row is None:
        raise NotFound("unknown_account", f"no account {account_number}", field="account_number")
    return dict(row)


async def account_details(session: AsyncSession, account_number: str) -> dict[str, Any]:
    """The worklist row with its open items, arrangements and recent activities."""
    found = await account(session, account_number)
    open_items = (
        (
            await session.execute(
                select(items)
                .where(items.c.account_number == account_number, items.c.amount > items.c.paid)
                .order_by(items.c.due_date)
            )
        )
        .mappings()
        .all()
    )
    plans = (
        (
            await session.execute(
                select(arrangements)
                .where(arrangements.c.account_number == account_number)
                .order_by(arrangements.c.seq.desc())
            )
        )
        .mappings()
        .all()
    )
    recent = (
        (
            await session.execute(
                select(activities)
                .where(activities.c.account_number == account_number)
                .order_by(activities.c.created_at.desc())
                .limit(50)
            )
        )
        .mappings()
        .all()
    )
    return {
        **found,
        "items": [dict(i) for i in open_items],
        "arrangements": [dict(p) for p in plans],
        "activities": [dict(a) for a in recent],
    }


async def arrangement(session: AsyncSession, arrangement_id: str) -> dict[str, Any]:
    row = (
        (await session.execute(select(arrangements).where(arrangements.c.arrangement_id == arrangement_id)))
        .mappings()
        .first()
    )
    if row is None:
        raise NotFound("arrangement_not_found", f"no arrangement {arrangement_id}", field="arrangement_id")
    schedule = (
        (
            await session.execute(
                select(installments)
                .where(installments.c.arrangement_id == arrangement_id)
                .order_by(installments.c.superseded.desc(), installments.c.due_date, installments.c.number)
            )
        )
        .mappings()
        .all()
    )
    outcomes = (
        await session.execute(
            select(installment_outcomes).where(installment_outcomes.c.arrangement_id == arrangement_id)
        )
    ).all()
    missed = {(o.plan_id, o.number) for o in outcomes if o.outcome == domain.Outcome.MISSED.value}
    return {**dict(row), "installments": [dict(i) for i in schedule], "missed": missed}


async def latest_arrangement(session: AsyncSession, account_number: str) -> dict[str, Any] | None:
    """The account's most recent arrangement with its schedule, whatever its status; None if it never had one."""
    newest = (
        await session.execute(
            select(arrangements.c.arrangement_id)
            .where(arrangements.c.account_number == account_number)
            .order_by(arrangements.c.seq.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    return await arrangement(session, newest) if newest is not None else None


async def list_arrangements(
    session: AsyncSession, *, status: ArrangementStatus | None, account_number: str | None, limit: int
) -> list[dict[str, Any]]:
    query = select(arrangements).order_by(arrangements.c.seq.desc()).limit(limit)
    if status is not None:
        query = query.where(arrangements.c.status == status.value)
    if account_number:
        query = query.where(arrangements.c.account_number == account_number)
    return [dict(r) for r in (await session.execute(query)).mappings().all()]


async def history(session: AsyncSession, subject: str) -> list[audit.AuditEntry]:
    return await audit.history(session, audit_log, subject)


async def follow_ups(session: AsyncSession, executive: str | None, *, due_by: date, limit: int) -> list[dict[str, Any]]:
    """Open follow-ups due by `due_by`, earliest first (one executive's queue, or everyone's)."""
    query = (
        select(activities, accounts.c.name)
        .join(accounts, accounts.c.account_number == activities.c.account_number)
        .where(
            activities.c.follow_up_on.is_not(None),
            activities.c.follow_up_done.is_(False),
            activities.c.follow_up_on <= due_by,
        )
        .order_by(activities.c.follow_up_on, activities.c.created_at)
        .limit(limit)
    )
    if executive:
        query = query.where(activities.c.executive == executive)
    return [dict(r) for r in (await session.execute(query)).mappings().all()]


async def activities_of(session: AsyncSession, account_number: str, *, limit: int) -> list[dict[str, Any]]:
    query = (
        select(activities)
        .where(activities.c.account_number == account_number)
        .order_by(activities.c.created_at.desc())
        .limit(limit)
    )
    return [dict(r) for r in (await session.execute(query)).mappings().all()]


async def open_alerts(session: AsyncSession, executive: str | None, *, limit: int) -> list[dict[str, Any]]:
    query = select(alerts).where(alerts.c.acknowledged_at.is_(None)).order_by(alerts.c.raised_at).limit(limit)
    if executive:
        query = query.where(alerts.c.executive == executive)
    return [dict(r) for r in (await session.execute(query)).mappings().all()]


async def pending_approvals(session: AsyncSession) -> list[maker_checker.Approval]:
    return await maker_checker.pending_approvals(session, approvals)


# --- reports ---


def month_range(period: str) -> tuple[date, date]:
    start = date.fromisoformat(f"{period}-01")
    return start, domain.add_months(start, 1)


async def report(session: AsyncSession, *, period: str, today: date) -> dict[str, Any]:
    """Plans by status, kept rate of installments due in the period, recovered by executive, aging totals."""
    start, end = month_range(period)
    counted = await session.execute(select(arrangements.c.status, func.count()).group_by(arrangements.c.status))
    by_status: dict[str, int] = {str(status): int(count) for status, count in counted.all()}
    due = (
        await session.execute(
            select(installments, arrangements.c.grace_days)
            .join(arrangements, arrangements.c.arrangement_id == installments.c.arrangement_id)
            .where(installments.c.due_date >= start, installments.c.due_date < end)
        )
    ).all()
    outcomes: dict[str, int] = {}
    for row in due:
        state = domain.InstallmentState(row.number, row.amount, row.due_date, row.paid, row.paid_on, row.superseded)
        outcome = domain.evaluate(state, grace_days=row.grace_days, today=today)
        outcomes[outcome.value] = outcomes.get(outcome.value, 0) + 1
    kept = sum(outcomes.get(o.value, 0) for o in domain.KEPT)
    decided = (
        kept + outcomes.get(domain.Outcome.MISSED.value, 0) + outcomes.get(domain.Outcome.PAID_AFTER_MISSED.value, 0)
    )
    recovered = (
        await session.execute(
            select(recoveries.c.executive, func.sum(recoveries.c.amount))
            .where(recoveries.c.recovered_on >= start, recoveries.c.recovered_on < end)
            .group_by(recoveries.c.executive)
            .order_by(recoveries.c.executive)
        )
    ).all()
    days = cast(literal(today), Date) - accounts.c.oldest_overdue_due
    bucket = case(
        (days <= 30, AgingBucket.CURRENT_30.value),
        (days <= 60, AgingBucket.DAYS_31_60.value),
        (days <= 90, AgingBucket.DAYS_61_90.value),
        else_=AgingBucket.OVER_90.value,
    )
    aging = dict(
        (
            await session.execute(
                select(bucket, func.sum(accounts.c.amount_overdue))
                .where(and_(accounts.c.amount_overdue > 0, accounts.c.oldest_overdue_due.is_not(None)))
                .group_by(bucket)
            )
        ).all()
    )
    return {
        "period": period,
        "plans_by_status": {s.value: int(by_status.get(s.value, 0)) for s in ArrangementStatus},
        "installments_due": outcomes,
        "kept_rate": (Decimal(kept) / decided * 100).quantize(Decimal("0.1")) if decided else None,
        "recovered_by_executive": [(executive, Decimal(amount)) for executive, amount in recovered],
        "recovered_total": sum((Decimal(amount) for _, amount in recovered), Decimal("0.00")),
        "aging": {b.value: Decimal(aging.get(b.value) or 0) for b in AgingBucket},
    }


async def iter_recoveries(sessions: async_sessionmaker[AsyncSession], *, period: str) -> AsyncIterator[dict[str, Any]]:
    start, end = month_range(period)
    async with sessions() as session:
        stream = await session.stream(
            select(recoveries)
            .where(recoveries.c.recovered_on >= start, recoveries.c.recovered_on < end)
            .order_by(recoveries.c.recovered_on, recoveries.c.id)
        )
        async for row in stream.mappings():
            yield dict(row)
