"""Credit notes' reads: one credit note, its payment, the audit trail, the settings, and the searchable list."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Row, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.credit_notes import domain
from services.credit_notes.storage import applications, approvals, audit_log, credit_notes, payments, settings
from shared import audit
from shared.approvals import Approval
from shared.approvals import pending_approvals as waiting
from shared.errors import NotFound
from shared.paging import after_key, contains_pattern, decode_cursor, page

# The settings' name in the `settings` table, and the audit subject of their changes.
POLICY = "credit_notes"


async def load_policy(session: AsyncSession) -> domain.Policy:
    """The expiry period and reasons an admin configured, or the defaults."""
    value = (await session.execute(select(settings.c.value).where(settings.c.name == POLICY))).scalar_one_or_none()
    return domain.Policy.from_json(value) if value is not None else domain.Policy()


async def locked_payment(session: AsyncSession, receipt_number: str) -> Row[Any] | None:
    """The payment, locked until the caller's transaction ends; None if it was never seen."""
    query = select(payments).where(payments.c.receipt_number == receipt_number).with_for_update()
    return (await session.execute(query)).first()


async def find_credit_note(session: AsyncSession, number: str) -> dict[str, Any]:
    row = (
        (await session.execute(select(credit_notes).where(credit_notes.c.credit_note_number == number)))
        .mappings()
        .first()
    )
    if row is None:
        raise NotFound("credit_note_not_found", f"no credit note {number}")
    return dict(row)


async def credit_note_details(session: AsyncSession, number: str) -> dict[str, Any]:
    """The credit note with its linked payment and the applications made from it."""
    note = await find_credit_note(session, number)
    payment = (
        (await session.execute(select(payments).where(payments.c.receipt_number == note["receipt_number"])))
        .mappings()
        .first()
    )
    used = (
        (
            await session.execute(
                select(applications)
                .where(applications.c.credit_note_number == number)
                .order_by(applications.c.applied_at)
            )
        )
        .mappings()
        .all()
    )
    return {**note, "payment": dict(payment) if payment else None, "applications": [dict(a) for a in used]}


async def creation_summary(session: AsyncSession, number: str) -> dict[str, Decimal]:
    """Original payment amount, this note's amount and what was left of the payment once it was issued."""
    note = await find_credit_note(session, number)
    payment_amount = (
        await session.execute(select(payments.c.amount).where(payments.c.receipt_number == note["receipt_number"]))
    ).scalar_one()
    credited_until_then = (
        await session.execute(
            select(func.coalesce(func.sum(credit_notes.c.amount), 0)).where(
                credit_notes.c.receipt_number == note["receipt_number"], credit_notes.c.seq <= note["seq"]
            )
        )
    ).scalar_one()
    credit = domain.PaymentCredit(amount=payment_amount, credited=Decimal(credited_until_then))
    return {
        "original_payment_amount": payment_amount,
        "credit_note_amount": note["amount"],
        "remaining_payment_value": credit.remaining_value,
    }


async def find_payment(session: AsyncSession, receipt_number: str) -> dict[str, Any]:
    """The payment a credit note would be made from, with the most it can still be credited."""
    row = (
        (await session.execute(select(payments).where(payments.c.receipt_number == receipt_number))).mappings().first()
    )
    if row is None:
        raise NotFound("unknown_receipt", f"no payment with receipt number {receipt_number}", field="receipt_number")
    credit = domain.PaymentCredit(
        amount=row["amount"], credited=row["credited"], payment_status=row["status"], refunded=row["refunded"]
    )
    return {**dict(row), "creditable": credit.creditable}


async def pending_approvals(session: AsyncSession) -> list[Approval]:
    """Manual credit notes waiting for a billing manager, oldest first."""
    return await waiting(session, approvals)


async def history(session: AsyncSession, subject: str) -> list[audit.AuditEntry]:
    """The audit trail of one credit note (or of the settings, subject `credit_notes`), oldest first."""
    return await audit.history(session, audit_log, subject)


# --- the credit-notes tab: search, filters, keyset paging ---


@dataclass(frozen=True)
class CreditNoteFilters:
    """The credit-notes tab's search and filters; every field optional."""

    text: str | None = None
    status: domain.Status | None = None
    created_from: datetime | None = None
    created_before: datetime | None = None
    reasons: tuple[str, ...] = ()
    consumer: str | None = None
    remaining: domain.RemainingFilter | None = None
    receipt_number: str | None = None
    amount_min: Decimal | None = None
    amount_max: Decimal | None = None
    newest_first: bool = True
    # Exactly this account (the customer's own list); `consumer` above is a partial match for staff searches.
    account_number: str | None = None


def search_conditions(filters: CreditNoteFilters) -> list[ColumnElement[bool]]:
    c = credit_notes.c
    clauses: list[ColumnElement[bool]] = []
    if filters.text:
        pattern = contains_pattern(filters.text)
        clauses.append(
            or_(
                c.credit_note_number.ilike(pattern),
                c.consumer_name.ilike(pattern),
                c.account_number.ilike(pattern),
                c.receipt_number.ilike(pattern),
            )
        )
    if filters.status is not None:
        clauses.append(c.status == filters.status.value)
    if filters.created_from is not None:
        clauses.append(c.created_at >= filters.created_from)
    if filters.created_before is not None:
        clauses.append(c.created_at < filters.created_before)
    if filters.reasons:
        clauses.append(c.reason.in_(filters.reasons))
    if filters.consumer:
        pattern = contains_pattern(filters.consumer)
        clauses.append(or_(c.consumer_name.ilike(pattern), c.account_number.ilike(pattern)))
    if filters.remaining is domain.RemainingFilter.FULLY_USED:
        clauses.append(c.remaining == 0)
    elif filters.remaining is domain.RemainingFilter.PARTIAL:
        clauses.append(and_(c.remaining > 0, c.remaining < c.amount))
    elif filters.remaining is domain.RemainingFilter.FULL:
        clauses.append(c.remaining == c.amount)
    if filters.receipt_number:
        clauses.append(c.receipt_number.ilike(contains_pattern(filters.receipt_number)))
    if filters.amount_min is not None:
        clauses.append(c.amount >= filters.amount_min)
    if filters.amount_max is not None:
        clauses.append(c.amount <= filters.amount_max)
    if filters.account_number is not None:
        clauses.append(c.account_number == filters.account_number)
    return clauses


def _sort(newest_first: bool) -> str:
    """The sort a cursor of this list names: a cursor of the other order (or of another list) is refused."""
    return "credit_notes:newest" if newest_first else "credit_notes:oldest"


async def search_credit_notes(
    session: AsyncSession, filters: CreditNoteFilters, *, limit: int = 50, cursor: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page and the cursor of the next (keyset on creation order, so deep pages stay as fast as the first)."""
    clauses = search_conditions(filters)
    newest_first = filters.newest_first
    sort = _sort(newest_first)
    seq = credit_notes.c.seq
    if cursor is not None:
        after = decode_cursor(cursor, sort=sort, types=(int,))
        clauses.append(after_key([seq], after, descending=newest_first))
    order = seq.desc() if newest_first else seq.asc()
    statement = select(credit_notes).where(*clauses).order_by(order).limit(limit + 1)
    rows = [dict(r) for r in (await session.execute(statement)).mappings().all()]
    return page(rows, limit, sort=sort, key=lambda row: (row["seq"],))


async def iter_credit_notes(
    sessions: async_sessionmaker[AsyncSession], filters: CreditNoteFilters, *, batch: int = 1000
) -> AsyncIterator[dict[str, Any]]:
    """Every credit note matching `filters`, in their order, fetched page by page for streaming exports."""
    cursor: str | None = None
    while True:
        async with sessions() as session:
            page, cursor = await search_credit_notes(session, filters, limit=batch, cursor=cursor)
        for row in page:
            yield row
        if cursor is None:
            return
