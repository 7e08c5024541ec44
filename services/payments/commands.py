"""Payments' state changes: recording a payment (at the counter or by command); verifying and cancelling one
are in `decisions.py`.

Each runs inside the caller's transaction and stages its events there (`shared.outbox.stage`), so a change and
its events commit together. Also the building blocks the online payments (`online.py`) and the credit-note
projection share: numbering, allocating to an item, announcing a posting.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from opentelemetry.context import Context
from pydantic import BaseModel
from sqlalchemy import Row, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments import arrangements, domain
from services.payments.domain import Verification
from services.payments.queries import load_settings
from services.payments.storage import (
    accounts,
    audit_log,
    idempotency_keys,
    item_holds,
    payment_id_seq,
    payments,
    receipt_number_seq,
    receivables,
    transaction_id_seq,
)
from shared import audit, idempotency
from shared.contracts import PaymentStatus, Topic, new_envelope
from shared.contracts.events import (
    ConsumerSnapshot,
    ItemSnapshot,
    Money,
    PaymentOverpaid,
    PaymentPosted,
    PaymentStatusChanged,
    PaymentType,
    UsageTracked,
)
from shared.errors import NotFound
from shared.money import quantize
from shared.outbox import Outgoing, stage, stage_all

SOURCE = "payments"
SYSTEM = "System"
# Counter payments and commands from other systems share one key space (commands use `command:<id>`).
RECORD_PAYMENT = "payment.record"
SEQUENCES = {"payment_id": payment_id_seq, "transaction_id": transaction_id_seq, "receipt_number": receipt_number_seq}


async def emit(session: AsyncSession, event_type: str, subject: str, data: BaseModel, *, topic: str = "") -> None:
    """Stage an event in the outbox of the current transaction."""
    envelope = new_envelope(event_type, source=SOURCE, subject=subject, data=data)
    await stage(session, topic or Topic.PAYMENTS_EVENTS, envelope)


def usage_event(event: str, user: str, subject: str, **properties: str) -> Outgoing:
    """A usage-tracking event of the seed's tracking plan."""
    usage = UsageTracked(event=event, user_id=user, properties=properties, occurred_at=datetime.now(UTC))
    return Outgoing(Topic.ANALYTICS_EVENTS, new_envelope("usage.tracked", source=SOURCE, subject=subject, data=usage))


def payment_processed(payment: Any) -> Outgoing:
    """The tracking plan's `payment_processed` of a posted payment: its row, or the values it is inserted with."""
    return usage_event(
        "payment_processed",
        payment.received_by,
        payment.account_number,
        payment_type=payment.payment_type,
        method=payment.method,
        channel=payment.channel,
    )


async def track(session: AsyncSession, event: str, user: str, subject: str, **properties: str) -> None:
    """Stage a usage-tracking event."""
    await stage_all(session, [usage_event(event, user, subject, **properties)])


# --- building blocks of every way a payment comes in ---


async def next_numbers(session: AsyncSession, config: domain.PaymentSettings, year: int) -> dict[str, str]:
    """Payment id, transaction id and receipt number in the configured formats, in one round trip.

    Sequence values never repeat, so two payments never draw the same number. Only a format edited back onto
    numbers issued under an older format could meet an old one; those are skipped.
    """
    draw = select(*(SEQUENCES[kind].next_value().label(kind) for kind in domain.NUMBER_KINDS))
    values = (await session.execute(draw)).one()._mapping
    return await _unused_numbers(session, config, year, values)


async def _unused_numbers(
    session: AsyncSession, config: domain.PaymentSettings, year: int, values: Any
) -> dict[str, str]:
    """The numbers `values` (drawn from the sequences) render to, or fresh ones if an edited format met old ones."""
    numbers = {kind: config.format_for(kind).render(int(values[kind]), year) for kind in domain.NUMBER_KINDS}
    if config.number_formats is None:
        return numbers  # never edited: one format over never-repeating values, so nothing to look up
    taken = select(payments.c.payment_id).where(
        (payments.c.payment_id == numbers["payment_id"])
        | (payments.c.transaction_id == numbers["transaction_id"])
        | (payments.c.receipt_number == numbers["receipt_number"])
    )
    if (await session.execute(taken.limit(1))).first() is None:
        return numbers
    return await next_numbers(session, config, year)


def unknown_account(account_number: str) -> NotFound:
    return NotFound("unknown_account", f"no consumer with account {account_number}", field="account_number")


def unknown_item(payment_type: str, reference: str) -> NotFound:
    return NotFound("unknown_item", f"no {payment_type} {reference} on this account", field="item_reference")


async def find_account(session: AsyncSession, account_number: str) -> Row[Any]:
    account = (await session.execute(select(accounts).where(accounts.c.account_number == account_number))).first()
    if account is None:
        raise unknown_account(account_number)
    return account


async def lock_item(session: AsyncSession, account_number: str, payment_type: str, reference: str) -> Row[Any]:
    """The item a payment goes to, locked: concurrent payments for one item allocate one after another, never
    beyond what is owed."""
    item = (
        await session.execute(
            select(receivables)
            .where(
                receivables.c.payment_type == payment_type,
                receivables.c.item_reference == reference,
                receivables.c.account_number == account_number,
            )
            .with_for_update()
        )
    ).first()
    if item is None:
        raise unknown_item(payment_type, reference)
    return item


async def allocate(session: AsyncSession, account_number: str, item: Row[Any], applied: Decimal) -> None:
    """Take `applied` off the item and the account; negative gives it back (cancellation, refund).

    One statement (the item's update in a WITH): a round trip less on every payment, while the item stays locked."""
    item_taken = (
        update(receivables)
        .where(receivables.c.payment_type == item.payment_type, receivables.c.item_reference == item.item_reference)
        .values(outstanding=receivables.c.outstanding - applied)
        .cte("item_taken")
    )
    await session.execute(
        update(accounts)
        .where(accounts.c.account_number == account_number)
        .values(collected_since_report=accounts.c.collected_since_report + applied)
        .add_cte(item_taken)
    )


# The item a payment goes to (locked), its account's name and contacts, any arrangement's hold on it and the
# payment's three numbers from their sequences: one round trip, built once (each request only binds values).
# A refused payment leaves its numbers unused, as a rolled-back one always did: unique, never reused, not gapless.
ITEM_FOR_PAYMENT = (
    select(
        receivables,
        accounts.c.name,
        accounts.c.service_address,
        accounts.c.phone,
        accounts.c.email,
        item_holds.c.kind.label("hold_kind"),
        item_holds.c.arrangement_id.label("hold_arrangement"),
        *(SEQUENCES[kind].next_value().label(kind) for kind in domain.NUMBER_KINDS),
    )
    .join(accounts, accounts.c.account_number == receivables.c.account_number)
    .outerjoin(
        item_holds,
        (item_holds.c.payment_type == receivables.c.payment_type)
        & (item_holds.c.item_reference == receivables.c.item_reference),
    )
    .where(
        receivables.c.payment_type == bindparam("payment_type"),
        receivables.c.item_reference == bindparam("item_reference"),
        receivables.c.account_number == bindparam("account_number"),
    )
    .with_for_update(of=receivables)
)


async def lock_item_for_payment(session: AsyncSession, command: RecordPayment) -> Row[Any]:
    """The item (locked, the account not), its account's name and contacts and three freshly drawn numbers; the
    same refusals, in the same order, as checking the arrangement's hold, then the account, then the item."""
    item = (
        await session.execute(
            ITEM_FOR_PAYMENT,
            {
                "payment_type": command.payment_type,
                "item_reference": command.item_reference,
                "account_number": command.account_number,
            },
        )
    ).first()
    if item is None:
        await arrangements.check_payable(session, command.payment_type, command.item_reference)
        await find_account(session, command.account_number)
        raise unknown_item(command.payment_type, command.item_reference)
    arrangements.refuse_if_held(command.payment_type, command.item_reference, item.hold_kind, item.hold_arrangement)
    return item


def _consumer(account: Row[Any]) -> ConsumerSnapshot:
    return ConsumerSnapshot(
        account_number=account.account_number,
        name=account.name,
        service_address=account.service_address,
        phone=account.phone,
        email=account.email,
    )


async def announce_posting(session: AsyncSession, payment: Row[Any], account: Row[Any], item: Row[Any]) -> None:
    """Stage `payment.posted`, and `payment.overpaid` when more came in than was due."""
    await stage_all(session, posting_events(payment, account, item))


def posting_events(payment: Any, account: Any, item: Any, context: Context | None = None) -> list[Outgoing]:
    """`payment.posted`, and `payment.overpaid` when more came in than was due, continuing `context`'s trace.

    `payment` is the payment's row (or its values as the row holds them), `account` and `item` rows of theirs."""
    currency = payment.currency
    consumer = _consumer(account)

    def money(amount: Decimal) -> Money:
        return Money(amount=amount, currency=currency)

    analysis = domain.Analysis(due=payment.due, paid=payment.amount)
    posted = PaymentPosted(
        payment_id=payment.payment_id,
        transaction_id=payment.transaction_id,
        receipt_number=payment.receipt_number,
        consumer=consumer,
        item=ItemSnapshot(
            payment_type=payment.payment_type,
            item_reference=payment.item_reference,
            description=item.description,
            period_or_date=item.period_or_date,
            issued_on=item.issued_on,
            due=money(payment.due),
            amount=money(item.amount),
            paid_before=money(item.amount - payment.due),
        ),
        channel=payment.channel,
        method=payment.method,
        amount=money(payment.amount),
        payment_date=payment.payment_date,
        posted_at=payment.posted_at,
        received_by=payment.received_by,
        status=payment.status,
        verification=payment.verification,
        difference=money(analysis.difference),
        outcome=analysis.outcome,
        cash_received=money(payment.cash_received) if payment.cash_received is not None else None,
        change_given=money(payment.change_given) if payment.change_given is not None else None,
        notes=payment.notes,
    )
    events = [posting_event("payment.posted", payment.account_number, posted, context)]
    if analysis.outcome is domain.Outcome.OVER:
        overpaid = PaymentOverpaid(
            payment_id=payment.payment_id,
            receipt_number=payment.receipt_number,
            consumer=consumer,
            payment_amount=money(payment.amount),
            overpaid=money(analysis.overpaid),
            posted_at=payment.posted_at,
        )
        events.append(posting_event("payment.overpaid", payment.account_number, overpaid, context))
    return events


def posting_event(event_type: str, subject: str, data: BaseModel, context: Context | None) -> Outgoing:
    envelope = new_envelope(event_type, source=SOURCE, subject=subject, data=data)
    return Outgoing(Topic.PAYMENTS_EVENTS, envelope, context)


async def announce_status(
    session: AsyncSession, payment: Row[Any], previous: str, *, at: datetime, actor: str = SYSTEM
) -> None:
    """`payment.status_changed` and its audit entry, for the payment as it is now."""
    changed = PaymentStatusChanged(
        payment_id=payment.payment_id,
        receipt_number=payment.receipt_number,
        account_number=payment.account_number,
        previous_status=previous,
        status=payment.status,
        webhook_status=payment.webhook_status,
        settlement_status=payment.settlement_status,
        changed_at=at,
    )
    await emit(session, "payment.status_changed", payment.account_number, changed)
    await audit.record(
        session,
        audit_log,
        actor=actor,
        action="payment.status_changed",
        subject=payment.payment_id,
        before={"status": previous},
        after={
            "status": payment.status,
            "webhook_status": payment.webhook_status,
            "settlement_status": payment.settlement_status,
        },
    )


# --- recording a payment: at the counter (HTTP) or from another enterprise system (payments.commands.v1) ---


@dataclass(frozen=True)
class RecordPayment:
    account_number: str
    payment_type: PaymentType
    item_reference: str
    channel: str | None
    method: str
    amount: Decimal
    payment_date: date
    cash_received: Decimal | None = None
    notes: str | None = None


def posted_values(
    command: RecordPayment,
    numbers: dict[str, str],
    *,
    consumer_name: str,
    currency: str,
    channel: str,
    amount: Decimal,
    due: Decimal,
    allocation: domain.Allocation,
    change: Decimal | None,
    received_by: str,
    now: datetime,
) -> dict[str, Any]:
    """The payments row of `command` posted now, every column of `POSTED_COLUMNS`: one builder for the counter, a
    command from another system and a lockbox batch, so the three write the same row."""
    return {
        **numbers,
        "account_number": command.account_number,
        "consumer_name": consumer_name,
        "payment_type": command.payment_type,
        "item_reference": command.item_reference,
        "channel": channel,
        "method": command.method,
        "amount": amount,
        "currency": currency,
        "payment_date": command.payment_date,
        "status": PaymentStatus.POSTED,
        "verification": Verification.VERIFIED,
        "received_by": received_by,
        "due": due,
        "applied": allocation.applied,
        "outcome": domain.Analysis(due=due, paid=amount).outcome,
        "cash_received": command.cash_received,
        "change_given": change,
        "notes": command.notes,
        "recorded_at": now,
        "posted_at": now,
    }


# Item and account allocation, the payment, its audit entry and the key's result: one statement, built once.
# Data-modifying CTEs run once each whether referenced or not.
POSTED_COLUMNS = (
    *domain.NUMBER_KINDS,
    "account_number",
    "consumer_name",
    "payment_type",
    "item_reference",
    "channel",
    "method",
    "amount",
    "currency",
    "payment_date",
    "status",
    "verification",
    "received_by",
    "due",
    "applied",
    "outcome",
    "cash_received",
    "change_given",
    "notes",
    "recorded_at",
    "posted_at",
)
_APPLIED = bindparam("new_applied", type_=payments.c.applied.type)
POST_PAYMENT = (
    payments.insert()
    .values({c: bindparam(f"new_{c}", type_=payments.c[c].type) for c in POSTED_COLUMNS})
    .returning(payments)
    .add_cte(
        update(receivables)
        .where(
            receivables.c.payment_type == bindparam("new_payment_type"),
            receivables.c.item_reference == bindparam("new_item_reference"),
        )
        .values(outstanding=receivables.c.outstanding - _APPLIED)
        .cte("item_taken"),
        update(accounts)
        .where(accounts.c.account_number == bindparam("new_account_number"))
        .values(collected_since_report=accounts.c.collected_since_report + _APPLIED)
        .cte("account_taken"),
        audit_log.insert()
        .values({c.name: bindparam(f"audit_{c.name}", type_=c.type) for c in audit_log.c})
        .cte("audited"),
        update(idempotency_keys)
        .where(
            idempotency_keys.c.operation == bindparam("key_operation"),
            idempotency_keys.c.key == bindparam("key_value"),
        )
        .values(result=bindparam("new_payment_id"))
        .cte("remembered"),
    )
)


def posting_parameters(values: dict[str, Any], posted: audit.AuditEntry, idempotency_key: str) -> dict[str, Any]:
    """The bind values of `POST_PAYMENT`: the payment's column values, its audit entry and the key it answers."""
    written = {f"new_{column}": value for column, value in values.items()}
    written |= {f"audit_{column}": value for column, value in vars(posted).items()}
    # No parameter is named like a column: SQLAlchemy would add it to the SET of an UPDATE here.
    written |= {"key_operation": RECORD_PAYMENT, "key_value": idempotency_key}
    return written


async def record_payment(
    session: AsyncSession, command: RecordPayment, *, received_by: str, idempotency_key: str
) -> str:
    """Post a payment exactly once for `idempotency_key` (a command from another system; the counter's own path is
    `counter.py`): the payment id, the first one on a retry."""
    fingerprint = idempotency.request_fingerprint(command)
    key = {"operation": RECORD_PAYMENT, "key": idempotency_key}
    earlier = await idempotency.claim(session, idempotency_keys, **key, fingerprint=fingerprint)
    if earlier is not None:
        return earlier
    payment = await _post_payment(session, command, received_by=received_by, idempotency_key=idempotency_key)
    return str(payment.payment_id)


async def _post_payment(
    session: AsyncSession, command: RecordPayment, *, received_by: str, idempotency_key: str
) -> Row[Any]:
    """Four round trips after the key's claim: the settings, the item with its numbers, one statement writing the
    allocation, the payment, its audit entry and the key's result, and the outbox insert. Each round trip waits
    for the event loop too, so under load they cost far more than Postgres's share."""
    config = await load_settings(session)
    channel = command.channel or config.default_channel
    config.check(channel=channel, method=command.method)
    # One row is the item (locked), its account's name and contacts, its hold and the drawn numbers.
    item = account = await lock_item_for_payment(session, command)
    amount = quantize(command.amount, item.currency)
    allocation = domain.allocate(item.outstanding, amount, config.overpayment_threshold)
    change = domain.change_given(amount, command.cash_received)

    now = datetime.now(UTC)
    numbers = await _unused_numbers(session, config, command.payment_date.year, item._mapping)
    payment_id = numbers["payment_id"]
    posted = audit.entry(
        actor=received_by,
        action="payment.posted",
        subject=payment_id,
        after={"amount": amount, "item": command.item_reference, "receipt_number": numbers["receipt_number"]},
    )
    values = posted_values(
        command,
        numbers,
        consumer_name=account.name,
        currency=item.currency,
        channel=channel,
        amount=amount,
        due=item.outstanding,
        allocation=allocation,
        change=change,
        received_by=received_by,
        now=now,
    )
    payment: Row[Any] = (await session.execute(POST_PAYMENT, posting_parameters(values, posted, idempotency_key))).one()
    # Posted, overpaid and the usage event in one insert.
    await stage_all(session, [*posting_events(payment, account, item), payment_processed(payment)])
    return payment


# --- staff actions on a payment ---


async def find_for_update(session: AsyncSession, payment_id_or_receipt: str) -> Row[Any]:
    row = (
        await session.execute(
            select(payments)
            .where(
                (payments.c.payment_id == payment_id_or_receipt) | (payments.c.receipt_number == payment_id_or_receipt)
            )
            .with_for_update()
        )
    ).first()
    if row is None:
        raise NotFound("payment_not_found", f"no payment {payment_id_or_receipt}")
    return row
