"""The `payments` schema (receivables read model, payments, settings, idempotency keys, audit log) and its reads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Computed,
    Date,
    DateTime,
    Index,
    Numeric,
    Row,
    Select,
    Sequence,
    String,
    Table,
    Text,
    false,
    func,
    literal,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments.domain import SORTS, Cursor, PaymentQuery
from shared.db import service_metadata
from shared.errors import Rejected
from shared.service import PlumbingTables

SCHEMA = "payments"
metadata = service_metadata(SCHEMA)
plumbing = PlumbingTables(metadata)
MONEY = Numeric(14, 2)

accounts = Table(
    "accounts",
    metadata,
    Column("account_number", String(50), primary_key=True),
    Column("name", Text, nullable=False),
    Column("service_address", Text, nullable=False),
    Column("phone", String(50)),
    Column("email", String(200)),
    Column("currency", String(3), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Billing's own figure at its last account event; what was allocated here since comes off it.
    Column("reported_balance", MONEY),
    Column("collected_since_report", MONEY, nullable=False, server_default=text("0")),
    # Case-insensitive partial search by name or account number, served by a trigram index.
    Column("search_text", Text, Computed("lower(name || ' ' || account_number)", persisted=True)),
    Index(
        "ix_accounts_search_trgm", "search_text", postgresql_using="gin", postgresql_ops={"search_text": "gin_trgm_ops"}
    ),
)

# Bills, service charges and installments billing told us about; `outstanding` falls as payments allocate.
receivables = Table(
    "receivables",
    metadata,
    Column("payment_type", String(20), primary_key=True),
    Column("item_reference", String(100), primary_key=True),
    Column("account_number", String(50), nullable=False, index=True),
    Column("description", Text, nullable=False),
    Column("period_or_date", String(20)),
    Column("issued_on", Date),
    Column("due_date", Date, nullable=False),
    Column("amount", MONEY, nullable=False),
    Column("outstanding", MONEY, nullable=False),
    Column("currency", String(3), nullable=False),
)

payment_id_seq = Sequence("payment_id_seq", metadata=metadata)
transaction_id_seq = Sequence("transaction_id_seq", metadata=metadata)
receipt_number_seq = Sequence("receipt_number_seq", metadata=metadata)

payments = Table(
    "payments",
    metadata,
    Column("payment_id", String(40), primary_key=True),
    Column("transaction_id", String(40), nullable=False, unique=True),
    Column("receipt_number", String(40), nullable=False, unique=True),
    Column("account_number", String(50), nullable=False),
    Column("payment_type", String(20), nullable=False),
    Column("item_reference", String(100), nullable=False),
    Column("channel", String(50), nullable=False),
    Column("method", String(50), nullable=False),
    Column("amount", MONEY, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("payment_date", Date, nullable=False),
    Column("consumer_name", Text, nullable=False),
    Column("status", String(30), nullable=False),
    Column("verification", String(30), nullable=False),
    Column("received_by", Text, nullable=False),
    Column("due", MONEY, nullable=False),
    Column("applied", MONEY, nullable=False),
    Column("outcome", String(10), nullable=False),
    Column("cash_received", MONEY),
    Column("change_given", MONEY),
    Column("notes", Text),
    # First seen: the counter's submission, or the gateway's first event for an online payment.
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    # When it was allocated; null while an online payment is pending or after it failed.
    Column("posted_at", DateTime(timezone=True)),
    Column("online", Boolean, nullable=False, server_default=false()),
    Column("payment_intent_id", String(100), unique=True),
    Column("gateway_status", String(30)),
    Column("webhook_status", String(30)),
    Column("settlement_status", String(30)),
    Column("settled_at", DateTime(timezone=True)),
    Column("verified_by", Text),
    Column("verified_at", DateTime(timezone=True)),
    Column("cancelled_by", Text),
    Column("cancelled_at", DateTime(timezone=True)),
    Column("cancel_reason", Text),
    Column("credit_note_number", String(40)),
    Column("credit_note_amount", MONEY),
    Column(
        "search_text",
        Text,
        Computed("lower(consumer_name || ' ' || receipt_number || ' ' || account_number)", persisted=True),
    ),
    Index(None, "account_number", "recorded_at"),
    # Keyset paging: one index per sort order, payment id breaking ties.
    Index("ix_payments_payment_date_id", "payment_date", "payment_id"),
    Index("ix_payments_amount_id", "amount", "payment_id"),
    Index("ix_payments_status_payment_date_id", "status", "payment_date", "payment_id"),
    Index(
        "ix_payments_search_trgm", "search_text", postgresql_using="gin", postgresql_ops={"search_text": "gin_trgm_ops"}
    ),
)

# A retried request with the same key gets the first answer back; a different body is a conflict.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("payment_id", String(40)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Choices and number formats an admin edits; one JSON value per key, defaults in `domain.PaymentSettings`.
settings = Table(
    "settings",
    metadata,
    Column("key", String(50), primary_key=True),
    Column("value", JSONB, nullable=False),
    Column("updated_by", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("actor", Text, nullable=False),
    Column("action", String(50), nullable=False),
    Column("subject", String(100), nullable=False),
    Column("details", JSONB, nullable=False),
)


# --- reads: consumer look-up, the payments list and its export ---


async def search_consumers(session: AsyncSession, q: str, limit: int) -> list[dict[str, Any]]:
    pattern = like_pattern(q)
    query = (
        select(accounts.c.account_number, accounts.c.name, accounts.c.service_address)
        .where(accounts.c.search_text.like(pattern))
        .order_by(accounts.c.name, accounts.c.account_number)
        .limit(limit)
    )
    return [dict(row) for row in (await session.execute(query)).mappings()]


async def account_with_items(session: AsyncSession, account_number: str) -> tuple[Row[Any], list[Row[Any]]] | None:
    account = (await session.execute(select(accounts).where(accounts.c.account_number == account_number))).first()
    if account is None:
        return None
    items = (
        await session.execute(
            select(receivables)
            .where(receivables.c.account_number == account_number)
            .order_by(receivables.c.due_date, receivables.c.item_reference)
        )
    ).all()
    return account, list(items)


async def recent_payments(session: AsyncSession, account_number: str, limit: int = 10) -> list[Row[Any]]:
    query = (
        select(payments)
        .where(payments.c.account_number == account_number)
        .order_by(payments.c.recorded_at.desc(), payments.c.payment_id.desc())
        .limit(limit)
    )
    return list((await session.execute(query)).all())


async def payment_with_context(session: AsyncSession, payment_id_or_receipt: str) -> Row[Any] | None:
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
    return (await session.execute(query)).first()


def like_pattern(text_: str) -> str:
    """Case-folded substring pattern; the user's own % and _ are taken literally."""
    term = text_.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{term}%"


def payments_query(query: PaymentQuery) -> Select[Any]:
    """The filtered, sorted list; keyset paging continues strictly after the cursor's row."""
    sort_column = payments.c[SORTS[query.sort]]
    statement = select(payments)
    if query.q and query.q.strip():
        statement = statement.where(payments.c.search_text.like(like_pattern(query.q)))
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
        try:
            value: Any = (
                date.fromisoformat(query.cursor.sort_value)
                if SORTS[query.sort] == "payment_date"
                else Decimal(query.cursor.sort_value)
            )
        except (ValueError, ArithmeticError):
            raise Rejected("invalid_cursor", "cursor does not belong to this sort", field="cursor") from None
        after = tuple_(sort_column, payments.c.payment_id)
        statement = statement.where(
            after < tuple_(literal(value), literal(query.cursor.payment_id))
            if query.descending
            else after > tuple_(literal(value), literal(query.cursor.payment_id))
        )
    order = (
        (sort_column.desc(), payments.c.payment_id.desc()) if query.descending else (sort_column, payments.c.payment_id)
    )
    return statement.order_by(*order)


def cursor_after(row: Row[Any], query: PaymentQuery) -> Cursor:
    value = getattr(row, SORTS[query.sort])
    return Cursor(value.isoformat() if isinstance(value, date) else str(value), row.payment_id)


async def list_payments(session: AsyncSession, query: PaymentQuery) -> tuple[list[Row[Any]], Cursor | None]:
    rows = list((await session.execute(payments_query(query).limit(query.limit + 1))).all())
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    return rows, cursor_after(rows[-1], query) if more and rows else None


async def stream_payments(session: AsyncSession, query: PaymentQuery, batch: int = 2000) -> AsyncIterator[Row[Any]]:
    """Every row of the filtered list through a server-side cursor: memory stays flat at any size."""
    result = await session.stream(payments_query(query).execution_options(yield_per=batch))
    async for row in result:
        yield row
