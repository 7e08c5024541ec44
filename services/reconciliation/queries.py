"""Reconciliation's reads: statements with their lines, matches, the exception queue, settlements, tills, the
daily summary and the report rows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.reconciliation import domain
from services.reconciliation.parsing import ColumnMapping
from services.reconciliation.storage import (
    bank_lines,
    column_mappings,
    exceptions,
    expected_items,
    matches,
    payments,
    statements,
    till_closes,
)
from shared.errors import NotFound
from shared.paging import after_key, contains_pattern, decode_cursor, page


async def statement(session: AsyncSession, statement_id: str) -> tuple[Row[Any], list[Row[Any]]]:
    row = (await session.execute(select(statements).where(statements.c.statement_id == statement_id))).first()
    if row is None:
        raise NotFound("unknown_statement", f"no statement {statement_id}", field="statement_id")
    lines = (
        await session.execute(
            select(bank_lines, matches.c.rule, matches.c.score, matches.c.item_ids, matches.c.differences)
            .outerjoin(matches, matches.c.match_id == bank_lines.c.match_id)
            .where(bank_lines.c.statement_id == statement_id)
            .order_by(bank_lines.c.line_id)
        )
    ).all()
    return row, list(lines)


@dataclass(frozen=True)
class MatchFilters:
    rule: str | None = None
    statement_id: str | None = None
    payment_id: str | None = None
    matched_from: datetime | None = None
    matched_before: datetime | None = None


async def search_matches(
    session: AsyncSession, filters: MatchFilters, *, limit: int, cursor: str | None
) -> tuple[list[Row[Any]], str | None]:
    query = select(matches)
    if filters.rule:
        query = query.where(matches.c.rule == filters.rule)
    if filters.matched_from:
        query = query.where(matches.c.matched_at >= filters.matched_from)
    if filters.matched_before:
        query = query.where(matches.c.matched_at < filters.matched_before)
    if filters.statement_id:
        query = query.where(
            matches.c.match_id.in_(
                select(bank_lines.c.match_id).where(bank_lines.c.statement_id == filters.statement_id)
            )
        )
    if filters.payment_id:
        query = query.where(
            matches.c.match_id.in_(
                select(expected_items.c.match_id).where(expected_items.c.payment_id == filters.payment_id)
            )
        )
    if cursor:
        key = decode_cursor(cursor, sort="matches", types=(datetime, str))
        query = query.where(after_key([matches.c.matched_at, matches.c.match_id], key, descending=True))
    rows = (
        await session.execute(query.order_by(matches.c.matched_at.desc(), matches.c.match_id.desc()).limit(limit + 1))
    ).all()
    return page(rows, limit, sort="matches", key=lambda r: (r.matched_at, r.match_id))


@dataclass(frozen=True)
class ExceptionFilters:
    status: str | None = "open"
    kind: str | None = None
    owner: str | None = None
    older_than_days: int | None = None
    q: str | None = None


async def search_exceptions(
    session: AsyncSession, filters: ExceptionFilters, *, limit: int, cursor: str | None, now: datetime
) -> tuple[list[Row[Any]], str | None]:
    query = select(exceptions)
    if filters.status:
        query = query.where(exceptions.c.status == filters.status)
    if filters.kind:
        query = query.where(exceptions.c.kind == filters.kind)
    if filters.owner:
        query = query.where(exceptions.c.owner == filters.owner)
    if filters.older_than_days is not None:
        query = query.where(exceptions.c.raised_at <= now - timedelta(days=filters.older_than_days))
    if filters.q:
        pattern = contains_pattern(filters.q)
        query = query.where(exceptions.c.subject.ilike(pattern) | exceptions.c.detail.ilike(pattern))
    if cursor:
        key = decode_cursor(cursor, sort="exceptions", types=(datetime, str))
        query = query.where(after_key([exceptions.c.raised_at, exceptions.c.exception_id], key, descending=False))
    rows = (
        await session.execute(query.order_by(exceptions.c.raised_at, exceptions.c.exception_id).limit(limit + 1))
    ).all()
    return page(rows, limit, sort="exceptions", key=lambda r: (r.raised_at, r.exception_id))


async def exception(session: AsyncSession, exception_id: str) -> Row[Any]:
    row = (await session.execute(select(exceptions).where(exceptions.c.exception_id == exception_id))).first()
    if row is None:
        raise NotFound("unknown_exception", f"no exception {exception_id}", field="exception_id")
    return row


async def candidates(session: AsyncSession, amount: Decimal, around: date, *, limit: int = 20) -> list[Row[Any]]:
    """Open expected items close to an amount and a date: what a person picks from to match by hand."""
    rows = await session.execute(
        select(expected_items)
        .where(
            expected_items.c.status.in_(("expected", "missing")),
            expected_items.c.origin_date.between(around - timedelta(days=10), around + timedelta(days=3)),
        )
        .order_by(func.abs(expected_items.c.amount - amount), expected_items.c.item_id)
        .limit(limit)
    )
    return list(rows)


async def settlement(session: AsyncSession, payment_id: str) -> Row[Any]:
    row = (await session.execute(select(payments).where(payments.c.payment_id == payment_id))).first()
    if row is None:
        raise NotFound("unknown_payment", f"no payment {payment_id} seen by reconciliation", field="payment_id")
    return row


async def till(session: AsyncSession, teller: str, business_date: date) -> Row[Any]:
    row = (
        await session.execute(
            select(till_closes).where(till_closes.c.teller == teller, till_closes.c.business_date == business_date)
        )
    ).first()
    if row is None:
        raise NotFound("till_not_closed", f"the till of {teller} on {business_date} is not closed")
    return row


async def summary(session: AsyncSession, *, now: datetime) -> domain.Summary:
    counts: dict[str, int] = dict(
        (
            await session.execute(
                select(bank_lines.c.status, func.count())
                .where(bank_lines.c.status != "split")
                .group_by(bank_lines.c.status)
            )
        ).all()
    )
    unreconciled = (
        await session.execute(
            select(func.coalesce(func.sum(func.abs(bank_lines.c.amount)), 0)).where(
                bank_lines.c.status.in_(("unmatched", "expected", "excepted"))
            )
        )
    ).scalar_one()
    ages: dict[str, int] = {}
    for (raised_at,) in await session.execute(select(exceptions.c.raised_at).where(exceptions.c.status == "open")):
        bucket = domain.age_bucket(raised_at, now)
        ages[bucket] = ages.get(bucket, 0) + 1
    matched = counts.get("matched", 0) + counts.get("ignored", 0)
    return domain.Summary(sum(counts.values()), matched, Decimal(unreconciled), ages)


async def mapping(session: AsyncSession, name: str) -> ColumnMapping:
    row = (await session.execute(select(column_mappings).where(column_mappings.c.name == name))).first()
    if row is None:
        raise NotFound("unknown_mapping", f"no saved column mapping {name}", field="mapping")
    return ColumnMapping(**row.mapping)


async def report_rows(sessions: async_sessionmaker[AsyncSession], start: date, end: date) -> AsyncIterator[Row[Any]]:
    """Every bank line booked in [start, end] with its match, streamed."""
    async with sessions() as session:
        result = await session.stream(
            select(
                bank_lines,
                statements.c.account,
                matches.c.rule,
                matches.c.score,
                matches.c.item_ids,
                matches.c.differences,
                matches.c.matched_by,
            )
            .join(statements, statements.c.statement_id == bank_lines.c.statement_id)
            .outerjoin(matches, matches.c.match_id == bank_lines.c.match_id)
            .where(bank_lines.c.booking_date.between(start, end))
            .order_by(bank_lines.c.booking_date, bank_lines.c.line_id)
            .execution_options(yield_per=1000)
        )
        async for row in result:
            yield row


def now() -> datetime:
    return datetime.now(UTC)
