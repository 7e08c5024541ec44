"""Payouts' reads: payees (search, filters), earnings and totals, runs, payout history, files, statements."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.payouts.domain import LineStatus, PayoutStatus
from services.payouts.storage import (
    approvals,
    audit_log,
    bank_files,
    invoices,
    lines,
    payees,
    payout_items,
    payouts,
    rates,
    rules,
    runs,
)
from shared import approvals as maker_checker
from shared import audit
from shared.errors import NotFound
from shared.paging import after_key, contains_pattern, decode_cursor, page


async def payee(session: AsyncSession, payee_id: str) -> dict[str, Any]:
    row = (await session.execute(select(payees).where(payees.c.payee_id == payee_id))).mappings().first()
    if row is None:
        raise NotFound("payee_not_found", f"no payee {payee_id}", field="payee_id")
    return dict(row)


@dataclass(frozen=True)
class PayeeFilters:
    text: str | None = None
    payee_type: str | None = None
    country: str | None = None
    currency: str | None = None
    status: str | None = None
    method: str | None = None
    group: str | None = None


async def search_payees(
    session: AsyncSession, filters: PayeeFilters, *, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    c = payees.c
    clauses: list[ColumnElement[bool]] = []
    if filters.text:
        pattern = contains_pattern(filters.text)
        clauses.append(or_(c.name.ilike(pattern), c.payee_id.ilike(pattern), c.external_id.ilike(pattern)))
    for column, value in (
        (c.payee_type, filters.payee_type),
        (c.country, filters.country),
        (c.payout_currency, filters.currency),
        (c.status, filters.status),
        (c.method, filters.method),
        (c.payee_group, filters.group),
    ):
        if value:
            clauses.append(column == value)
    if cursor:
        clauses.append(after_key([c.seq], decode_cursor(cursor, sort="payees", types=(int,)), descending=False))
    rows = [
        dict(r)
        for r in (await session.execute(select(payees).where(*clauses).order_by(c.seq).limit(limit + 1))).mappings()
    ]
    return page(rows, limit, sort="payees", key=lambda r: (r["seq"],))


async def earnings(
    session: AsyncSession, payee_id: str, *, status: str | None, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """A payee's lines, newest first, with any invoices uploaded for them."""
    await payee(session, payee_id)
    c = lines.c
    clauses: list[ColumnElement[bool]] = [c.payee_id == payee_id]
    if status:
        clauses.append(c.status == status)
    if cursor:
        clauses.append(after_key([c.seq], decode_cursor(cursor, sort="earnings", types=(int,)), descending=True))
    rows = [
        dict(r)
        for r in (
            await session.execute(select(lines).where(*clauses).order_by(c.seq.desc()).limit(limit + 1))
        ).mappings()
    ]
    ids = [r["line_id"] for r in rows]
    files: dict[str, list[dict[str, Any]]] = {}
    for f in await session.execute(
        select(
            invoices.c.invoice_id, invoices.c.line_id, invoices.c.filename, invoices.c.content_type, invoices.c.size
        ).where(invoices.c.line_id.in_(ids))
    ):
        files.setdefault(f.line_id, []).append(dict(f._mapping))
    for row in rows:
        row["invoices"] = files.get(row["line_id"], [])
    return page(rows, limit, sort="earnings", key=lambda r: (r["seq"],))


async def payee_totals(
    session: AsyncSession, payee_id: str, *, year_start: date, year_end: date
) -> list[dict[str, Any]]:
    """Per currency: total earned (all counting lines), pending (not paid yet), paid this year (by payout)."""
    await payee(session, payee_id)
    counting = lines.c.status.in_([LineStatus.OPEN.value, LineStatus.IN_RUN.value, LineStatus.PAID.value])
    earned = await session.execute(
        select(
            lines.c.currency,
            func.sum(lines.c.amount).label("earned"),
            func.sum(lines.c.amount).filter(lines.c.status != LineStatus.PAID.value).label("pending"),
        )
        .where(lines.c.payee_id == payee_id, counting)
        .group_by(lines.c.currency)
    )
    paid = await session.execute(
        select(payouts.c.currency, func.sum(payouts.c.amount).label("paid"))
        .where(
            payouts.c.payee_id == payee_id,
            payouts.c.status == PayoutStatus.PAID.value,
            func.date(payouts.c.paid_at) >= year_start,
            func.date(payouts.c.paid_at) < year_end,
        )
        .group_by(payouts.c.currency)
    )
    totals: dict[str, dict[str, Any]] = {}
    zero = Decimal(0)
    for r in earned.all():
        totals[r.currency] = {
            "currency": r.currency,
            "earned": r.earned or zero,
            "pending": r.pending or zero,
            "paid_this_year": zero,
        }
    for p in paid.all():
        totals.setdefault(p.currency, {"currency": p.currency, "earned": zero, "pending": zero, "paid_this_year": zero})
        totals[p.currency]["paid_this_year"] = p.paid
    return [totals[k] for k in sorted(totals)]


async def run_details(session: AsyncSession, run_id: str) -> dict[str, Any]:
    run = (await session.execute(select(runs).where(runs.c.run_id == run_id))).mappings().first()
    if run is None:
        raise NotFound("run_not_found", f"no run {run_id}", field="run_id")
    rows = (
        await session.execute(
            select(payouts, payees.c.name)
            .select_from(payouts.join(payees, payees.c.payee_id == payouts.c.payee_id))
            .where(payouts.c.run_id == run_id)
            .order_by(payouts.c.seq)
        )
    ).mappings()
    files = (
        await session.execute(
            select(
                bank_files.c.file_id,
                bank_files.c.debtor_account,
                bank_files.c.currency,
                bank_files.c.payouts,
                bank_files.c.control_sum,
                bank_files.c.message_id,
            ).where(bank_files.c.run_id == run_id)
        )
    ).mappings()
    return {**dict(run), "payouts": [dict(r) for r in rows], "bank_files": [dict(f) for f in files]}


async def bank_file(session: AsyncSession, file_id: str) -> bytes:
    content = (
        await session.execute(select(bank_files.c.content).where(bank_files.c.file_id == file_id))
    ).scalar_one_or_none()
    if content is None:
        raise NotFound("file_not_found", f"no bank file {file_id}", field="file_id")
    return bytes(content)


async def invoice_file(session: AsyncSession, invoice_id: str) -> dict[str, Any]:
    row = (await session.execute(select(invoices).where(invoices.c.invoice_id == invoice_id))).mappings().first()
    if row is None:
        raise NotFound("invoice_not_found", f"no invoice {invoice_id}", field="invoice_id")
    return dict(row)


@dataclass(frozen=True)
class PayoutFilters:
    payee_id: str | None = None
    run_id: str | None = None
    status: str | None = None
    currency: str | None = None
    method: str | None = None
    created_from: datetime | None = None
    created_before: datetime | None = None


def _payout_conditions(filters: PayoutFilters) -> list[ColumnElement[bool]]:
    c = payouts.c
    clauses: list[ColumnElement[bool]] = []
    for column, value in (
        (c.payee_id, filters.payee_id),
        (c.run_id, filters.run_id),
        (c.status, filters.status),
        (c.currency, filters.currency),
        (c.method, filters.method),
    ):
        if value:
            clauses.append(column == value)
    if filters.created_from:
        clauses.append(c.created_at >= filters.created_from)
    if filters.created_before:
        clauses.append(c.created_at < filters.created_before)
    return clauses


async def payout_history(
    session: AsyncSession, filters: PayoutFilters, *, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Payouts newest first, with their payee's name."""
    clauses = _payout_conditions(filters)
    if cursor:
        clauses.append(after_key([payouts.c.seq], decode_cursor(cursor, sort="payouts", types=(int,)), descending=True))
    statement = (
        select(payouts, payees.c.name)
        .select_from(payouts.join(payees, payees.c.payee_id == payouts.c.payee_id))
        .where(*clauses)
        .order_by(payouts.c.seq.desc())
        .limit(limit + 1)
    )
    rows = [dict(r) for r in (await session.execute(statement)).mappings()]
    return page(rows, limit, sort="payouts", key=lambda r: (r["seq"],))


async def iter_payouts(
    sessions: async_sessionmaker[AsyncSession], filters: PayoutFilters
) -> AsyncIterator[dict[str, Any]]:
    cursor: str | None = None
    while True:
        async with sessions() as session:
            rows, cursor = await payout_history(session, filters, limit=1000, cursor=cursor)
        for row in rows:
            yield row
        if cursor is None:
            return


async def statement(session: AsyncSession, payee_id: str, run_id: str) -> dict[str, Any]:
    """What a payee's statement for one run shows: the payout, each line with its rule and rate, the totals."""
    found = await payee(session, payee_id)
    payout = (
        (await session.execute(select(payouts).where(payouts.c.payee_id == payee_id, payouts.c.run_id == run_id)))
        .mappings()
        .first()
    )
    if payout is None:
        raise NotFound("statement_not_found", f"payee {payee_id} has no payout in run {run_id}", field="run")
    items = (
        await session.execute(
            select(
                payout_items,
                lines.c.kind,
                lines.c.earned_on,
                lines.c.description,
                lines.c.source_ref,
                lines.c.calculation,
                lines.c.reason,
            )
            .select_from(payout_items.join(lines, lines.c.line_id == payout_items.c.line_id))
            .where(payout_items.c.payout_id == payout["payout_id"])
            .order_by(lines.c.earned_on, lines.c.seq)
        )
    ).mappings()
    run = (await session.execute(select(runs).where(runs.c.run_id == run_id))).mappings().one()
    return {"payee": found, "payout": dict(payout), "items": [dict(i) for i in items], "run": dict(run)}


async def list_rules(session: AsyncSession, payee_id: str | None) -> list[dict[str, Any]]:
    statement = select(rules).order_by(rules.c.payee_id, rules.c.payee_group, rules.c.effective_from)
    if payee_id:
        statement = statement.where(rules.c.payee_id == payee_id)
    return [dict(r) for r in (await session.execute(statement)).mappings()]


async def list_rates(session: AsyncSession, *, on: date | None, limit: int = 500) -> list[dict[str, Any]]:
    statement = select(rates).order_by(rates.c.as_of.desc(), rates.c.base, rates.c.quote).limit(limit)
    if on:
        statement = statement.where(rates.c.as_of == on)
    return [dict(r) for r in (await session.execute(statement)).mappings()]


async def pending_approvals(session: AsyncSession) -> list[maker_checker.Approval]:
    return await maker_checker.pending_approvals(session, approvals)


async def approval(session: AsyncSession, approval_id: str) -> Any:
    row = (await session.execute(select(approvals).where(approvals.c.approval_id == approval_id))).first()
    if row is None:
        raise NotFound("unknown_approval", f"no approval {approval_id}", field="approval_id")
    return row


async def history(session: AsyncSession, subject: str) -> list[audit.AuditEntry]:
    return await audit.history(session, audit_log, subject)
