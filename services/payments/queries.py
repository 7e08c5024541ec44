"""Payments' reads: consumer look-up, one payment, the payments list and its export, the settings in force."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import date
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Row, Select, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.payments import arrangements, domain
from services.payments.domain import SORTS, PaymentQuery
from services.payments.storage import (
    accounts,
    adjustments,
    approvals,
    credit_balances,
    dispute_attachments,
    disputes,
    payments,
    receivables,
)
from services.payments.storage import settings as settings_table
from shared.approvals import Approval
from shared.approvals import pending_approvals as waiting
from shared.errors import NotFound, Rejected
from shared.money import quantize
from shared.paging import after_key, contains_pattern, decode_cursor, page

# --- settings: stored values over the defaults of `domain.PaymentSettings` ---


async def load_settings(session: AsyncSession) -> domain.PaymentSettings:
    """The settings in force: what an admin stored, the defaults for the rest."""
    return settings_from({row.key: row.value for row in await session.execute(select(settings_table))})


def settings_from(stored: Mapping[str, Any]) -> domain.PaymentSettings:
    """The settings in force, from the stored values by key (JSON as stored)."""
    defaults = domain.PaymentSettings()
    formats = stored.get("number_formats")
    return domain.PaymentSettings(
        channels=tuple(stored.get("channels", defaults.channels)),
        payment_methods=tuple(stored.get("payment_methods", defaults.payment_methods)),
        overpayment_threshold=Decimal(stored.get("overpayment_threshold", defaults.overpayment_threshold)),
        adjustment_approval_limit=Decimal(stored.get("adjustment_approval_limit", defaults.adjustment_approval_limit)),
        number_formats={k: domain.NumberFormat(**v) for k, v in formats.items()} if formats else None,
    )


# --- consumers: the utility's customers, as billing described them ---


async def search_consumers(session: AsyncSession, q: str, limit: int) -> list[dict[str, Any]]:
    """Consumers whose name or account number contains `q`, any case."""
    query = (
        select(accounts.c.account_number, accounts.c.name, accounts.c.service_address)
        .where(accounts.c.search_text.like(contains_pattern(q.strip().lower())))
        .order_by(accounts.c.name, accounts.c.account_number)
        .limit(limit)
    )
    return [dict(row) for row in (await session.execute(query)).mappings()]


async def account_with_items(session: AsyncSession, account_number: str) -> tuple[Row[Any], list[Row[Any]]]:
    """A consumer's account and every item billing told us about, earliest due first."""
    account = (await session.execute(select(accounts).where(accounts.c.account_number == account_number))).first()
    if account is None:
        raise NotFound("unknown_account", f"no consumer with account {account_number}", field="account_number")
    items = (
        await session.execute(
            select(receivables)
            .where(receivables.c.account_number == account_number)
            # Items an arrangement holds are paid through its installments, which are listed instead.
            .where(tuple_(receivables.c.payment_type, receivables.c.item_reference).not_in(arrangements.held_items()))
            .order_by(receivables.c.due_date, receivables.c.item_reference)
        )
    ).all()
    return account, list(items)


async def recent_payments(session: AsyncSession, account_number: str, limit: int = 10) -> list[Row[Any]]:
    """A consumer's latest payments, newest first."""
    query = (
        select(payments)
        .where(payments.c.account_number == account_number)
        .order_by(payments.c.recorded_at.desc(), payments.c.payment_id.desc())
        .limit(limit)
    )
    return list((await session.execute(query)).all())


async def known_account(session: AsyncSession, account_number: str) -> None:
    """NotFound unless billing told us about the account."""
    known = select(accounts.c.account_number).where(accounts.c.account_number == account_number)
    if (await session.execute(known)).first() is None:
        raise NotFound("unknown_account", f"no consumer with account {account_number}", field="account_number")


async def open_item(session: AsyncSession, account_number: str, payment_type: str, reference: str) -> Row[Any] | None:
    """One of the account's items (None when the account has no such item); nothing is locked."""
    query = select(receivables).where(
        receivables.c.account_number == account_number,
        receivables.c.payment_type == payment_type,
        receivables.c.item_reference == reference,
    )
    return (await session.execute(query)).first()


async def preview_payment(
    session: AsyncSession,
    *,
    account_number: str,
    payment_type: str,
    item_reference: str,
    channel: str | None,
    method: str,
    amount: Decimal,
    cash_received: Decimal | None,
) -> tuple[str | None, domain.Assessment]:
    """What recording this payment would come to, by the rules `commands.record_payment` applies; reads only.

    An unknown account or item is one more problem (as `POST /payments` would refuse it)."""
    config = await load_settings(session)
    item = await open_item(session, account_number, payment_type, item_reference)
    assessment = domain.assess_payment(
        config,
        channel=channel or config.default_channel,
        method=method,
        outstanding=item.outstanding if item is not None else None,
        amount=quantize(amount, item.currency) if item is not None else amount,
        cash_received=cash_received,
    )
    if item is None:
        known = select(accounts.c.account_number).where(accounts.c.account_number == account_number)
        missing = (
            NotFound("unknown_account", f"no consumer with account {account_number}", field="account_number")
            if (await session.execute(known)).first() is None
            else NotFound("unknown_item", f"no {payment_type} {item_reference} on this account", field="item_reference")
        )
        assessment = domain.Assessment(
            analysis=None, change=assessment.change, problems=(missing, *assessment.problems)
        )
    if item is not None:
        try:
            await arrangements.check_payable(session, payment_type, item_reference)
        except Rejected as held:
            assessment = domain.Assessment(
                analysis=assessment.analysis, change=assessment.change, problems=(held, *assessment.problems)
            )
    return (item.currency if item is not None else None), assessment


# The customer's payment history: newest payment date first, the payment id breaking ties.
ACCOUNT_HISTORY_SORT = "account:-date"


async def account_payments(
    session: AsyncSession, account_number: str, *, limit: int, cursor: str | None
) -> tuple[list[Row[Any]], str | None]:
    """One page of an account's payments, and the cursor of the next page if there is one."""
    await known_account(session, account_number)
    key = (payments.c.payment_date, payments.c.payment_id)
    statement = select(payments).where(payments.c.account_number == account_number)
    if cursor:
        after = decode_cursor(cursor, sort=ACCOUNT_HISTORY_SORT, types=(date, str))
        statement = statement.where(after_key(key, after, descending=True))
    statement = statement.order_by(payments.c.payment_date.desc(), payments.c.payment_id.desc()).limit(limit + 1)
    rows = (await session.execute(statement)).all()
    return page(rows, limit, sort=ACCOUNT_HISTORY_SORT, key=lambda row: (row.payment_date, row.payment_id))


async def payment_for_intent(session: AsyncSession, payment_intent_id: str) -> Row[Any] | None:
    """The online payment the gateway recorded for a PaymentIntent, if it has arrived yet."""
    query = select(payments).where(payments.c.payment_intent_id == payment_intent_id)
    return (await session.execute(query)).first()


# --- one payment ---


async def payment_with_context(session: AsyncSession, payment_id_or_receipt: str) -> Row[Any]:
    """A payment by payment id or receipt number, with its consumer and the item it paid."""
    query = (
        select(
            payments,
            accounts.c.name.label("consumer_name_now"),
            accounts.c.service_address,
            accounts.c.phone,
            accounts.c.email,
            receivables.c.description.label("item_description"),
            receivables.c.period_or_date,
            receivables.c.due_date.label("item_due_date"),
            receivables.c.amount.label("item_amount"),
        )
        .join(accounts, accounts.c.account_number == payments.c.account_number)
        .outerjoin(
            receivables,
            (receivables.c.payment_type == payments.c.payment_type)
            & (receivables.c.item_reference == payments.c.item_reference),
        )
        .where((payments.c.payment_id == payment_id_or_receipt) | (payments.c.receipt_number == payment_id_or_receipt))
    )
    row = (await session.execute(query)).first()
    if row is None:
        raise NotFound("payment_not_found", f"no payment {payment_id_or_receipt}")
    return row


# A payment with its consumer and item: read (`payment_with_context`) or as just posted (`posted_with_context`).
PaymentContext = Row[Any] | SimpleNamespace


def posted_with_context(payment: Mapping[str, Any], item_with_account: Any) -> SimpleNamespace:
    """What `payment_with_context` reads for a payment, from the rows it was posted with (no round trip).

    `payment` as inserted (RETURNING every column), `item_with_account` as locked before posting: posting changes
    neither the item's description, dates and amount nor the account's name and contacts."""
    return SimpleNamespace(
        **payment,
        consumer_name_now=item_with_account.name,
        service_address=item_with_account.service_address,
        phone=item_with_account.phone,
        email=item_with_account.email,
        item_description=item_with_account.description,
        period_or_date=item_with_account.period_or_date,
        item_due_date=item_with_account.due_date,
        item_amount=item_with_account.amount,
    )


# --- the payments list: search, filters, sort and keyset paging ---

# The type of each sort column's value in a cursor; the payment id after it breaks ties.
SORT_KEY_TYPES: dict[str, type[date] | type[Decimal]] = {"payment_date": date, "amount": Decimal}


def payments_query(query: PaymentQuery) -> Select[Any]:
    """The filtered, sorted list; keyset paging continues strictly after the cursor's row."""
    sort_column = payments.c[SORTS[query.sort]]
    statement = select(payments)
    if query.q and query.q.strip():
        statement = statement.where(payments.c.search_text.like(contains_pattern(query.q.strip().lower())))
    if query.date_from:
        statement = statement.where(payments.c.payment_date >= query.date_from)
    if query.date_to:
        statement = statement.where(payments.c.payment_date <= query.date_to)
    if query.method:
        statement = statement.where(payments.c.method == query.method)
    if query.status:
        statement = statement.where(payments.c.status == query.status)
    if query.payment_type:
        statement = statement.where(payments.c.payment_type == query.payment_type)
    if query.cursor:
        after = decode_cursor(query.cursor, sort=query.sort, types=(SORT_KEY_TYPES[SORTS[query.sort]], str))
        statement = statement.where(after_key((sort_column, payments.c.payment_id), after, descending=query.descending))
    order = (
        (sort_column.desc(), payments.c.payment_id.desc()) if query.descending else (sort_column, payments.c.payment_id)
    )
    return statement.order_by(*order)


async def list_payments(session: AsyncSession, query: PaymentQuery) -> tuple[list[Row[Any]], str | None]:
    """One page of the list, and the cursor of the next page if there is one."""
    rows = (await session.execute(payments_query(query).limit(query.limit + 1))).all()
    sort_key = SORTS[query.sort]
    return page(rows, query.limit, sort=query.sort, key=lambda row: (getattr(row, sort_key), row.payment_id))


async def stream_payments(
    sessions: async_sessionmaker[AsyncSession], query: PaymentQuery, batch: int = 2000
) -> AsyncIterator[Row[Any]]:
    """Every row of the filtered list through a server-side cursor: memory stays flat at any size.

    Opens its own session: the stream outlives the route that started it."""
    async with sessions() as session:
        result = await session.stream(payments_query(query).execution_options(yield_per=batch))
        async for row in result:
            yield row


# --- money safety: credit on the account, the payment's credit notes, disputes, adjustments, approvals ---


async def available_credit(session: AsyncSession, account_number: str) -> list[Row[Any]]:
    """The account's usable credit: active credit notes with something left, expiring first first."""
    query = (
        select(credit_balances)
        .where(
            credit_balances.c.account_number == account_number,
            credit_balances.c.status == "Active",
            credit_balances.c.remaining > 0,
        )
        .order_by(credit_balances.c.expires_at, credit_balances.c.credit_note_number)
    )
    return list((await session.execute(query)).all())


# What `payment_money_safety` finds for a payment just posted.
NO_MONEY_SAFETY: dict[str, Any] = {"credit_notes": [], "disputes": [], "attachments": [], "adjustments": []}


async def payment_money_safety(session: AsyncSession, payment_id: str, receipt_number: str) -> dict[str, Any]:
    """Every credit note made from a payment, its disputes (with attachment names) and its adjustments."""
    notes = (
        await session.execute(
            select(credit_balances)
            .where(credit_balances.c.receipt_number == receipt_number)
            .order_by(credit_balances.c.created_at, credit_balances.c.credit_note_number)
        )
    ).all()
    found = (
        await session.execute(
            select(disputes).where(disputes.c.payment_id == payment_id).order_by(disputes.c.opened_at)
        )
    ).all()
    files = (
        await session.execute(
            select(
                dispute_attachments.c.attachment_id,
                dispute_attachments.c.dispute_id,
                dispute_attachments.c.filename,
                dispute_attachments.c.content_type,
                dispute_attachments.c.size,
            )
            .where(dispute_attachments.c.dispute_id.in_([d.dispute_id for d in found]))
            .order_by(dispute_attachments.c.uploaded_at)
        )
    ).all()
    changes = (
        await session.execute(
            select(adjustments).where(adjustments.c.payment_id == payment_id).order_by(adjustments.c.requested_at)
        )
    ).all()
    return {
        "credit_notes": list(notes),
        "disputes": list(found),
        "attachments": list(files),
        "adjustments": list(changes),
    }


async def find_adjustment(session: AsyncSession, adjustment_id: str) -> Row[Any]:
    row = (await session.execute(select(adjustments).where(adjustments.c.adjustment_id == adjustment_id))).first()
    if row is None:
        raise NotFound("adjustment_not_found", f"no adjustment {adjustment_id}")
    return row


async def find_dispute(session: AsyncSession, dispute_id: str) -> Row[Any]:
    row = (await session.execute(select(disputes).where(disputes.c.dispute_id == dispute_id))).first()
    if row is None:
        raise NotFound("dispute_not_found", f"no dispute {dispute_id}")
    return row


async def find_attachment(session: AsyncSession, dispute_id: str, attachment_id: str) -> Row[Any]:
    row = (
        await session.execute(
            select(dispute_attachments).where(
                dispute_attachments.c.dispute_id == dispute_id, dispute_attachments.c.attachment_id == attachment_id
            )
        )
    ).first()
    if row is None:
        raise NotFound("attachment_not_found", f"no attachment {attachment_id} on dispute {dispute_id}")
    return row


async def pending_approvals(session: AsyncSession) -> list[Approval]:
    """Adjustments above the limit waiting for a billing manager, oldest first."""
    return await waiting(session, approvals)
