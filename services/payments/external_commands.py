"""Commands from other enterprise systems (`payments.commands.v1`): a lockbox file, a POS terminal.

A batch of `payment.record_requested` is posted in one go (`post_batch`): one idempotency claim, one settings
read, one account read, one lock of every item (in account order), one draw of numbers, one update per table
and one insert each of payments, audit entries and outbox rows, a fixed handful of statements where one command
at a time costs a dozen each. Anything out of the ordinary (a command that breaks a rule, an unknown account or
item, a key seen before, a number taken under an older format) raises: the batch rolls back and the consumer
applies each command alone through `on_payment_record_requested`, so a bad command goes to the DLQ alone and
the others are posted as before.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, String, any_, bindparam, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments import arrangements, domain
from services.payments.commands import (
    POSTED_COLUMNS,
    RECORD_PAYMENT,
    SEQUENCES,
    RecordPayment,
    emit,
    payment_processed,
    posted_values,
    posting_events,
    record_payment,
)
from services.payments.queries import load_settings
from services.payments.storage import accounts, audit_log, idempotency_keys, payments, receivables
from shared import audit, idempotency
from shared.bulk_insert import column_arrays, insert_from_arrays
from shared.contracts import Envelope, Topic, parse_data
from shared.contracts.events import PaymentRecordRejected, PaymentRecordRequested
from shared.messaging import Applying, Subscription
from shared.money import quantize
from shared.outbox import Outgoing, stage_all

RECORD_REQUESTED = "payment.record_requested"


class OneByOne(Exception):
    """The batch needs the one-command-at-a-time path (a key seen before, a number taken under an older format)."""


def _command(envelope: Envelope) -> RecordPayment:
    request = parse_data(envelope, PaymentRecordRequested)
    return RecordPayment(**request.model_dump(exclude={"currency"}))


async def on_payment_record_requested(session: AsyncSession, envelope: Envelope) -> None:
    """One command alone; the command's id is its idempotency key."""
    await record_payment(
        session, _command(envelope), received_by=envelope.source, idempotency_key=f"command:{envelope.id}"
    )


async def on_command_rejected(session: AsyncSession, envelope: Envelope, reason: str) -> None:
    """Tell the sending system why its command was not recorded (the command itself goes to the DLQ)."""
    rejection = PaymentRecordRejected(command_id=envelope.id, reason=reason, errors=[reason])
    await emit(session, "payment.record_rejected", envelope.subject or "unknown", rejection)


async def post_batch(session: AsyncSession, batch: Sequence[Applying]) -> None:
    """Post every command of a batch, in the order given, in the caller's transaction; raises if any one cannot be.

    Each step is a function of its own so `bench/lockbox_pipeline.py` can time it."""
    commands = _commands(batch)
    config = await load_settings(session)
    channels = [command.channel or config.default_channel for command in commands]
    for command, channel in zip(commands, channels, strict=True):
        config.check(channel=channel, method=command.method)

    if await arrangements.any_held(session, ((c.payment_type, c.item_reference) for c in commands)):
        raise OneByOne("an item is held by a payment arrangement")
    account_rows = await _accounts(session, {c.account_number for c in commands})
    items = await _lock_items(session, commands)
    amounts = [quantize(c.amount, items[(c.payment_type, c.item_reference)].currency) for c in commands]
    keys = [(c.payment_type, c.item_reference) for c in commands]
    allocations = domain.allocate_in_order(
        {key: item.outstanding for key, item in items.items()},
        list(zip(keys, amounts, strict=True)),
        config.overpayment_threshold,
    )
    changes = [domain.change_given(a, c.cash_received) for a, c in zip(amounts, commands, strict=True)]
    numbers = await _draw_numbers(session, config, [c.payment_date.year for c in commands])
    await _claim_keys(session, batch, commands, numbers)
    await _apply_to_balances(session, commands, keys, [allocation for _, allocation in allocations])

    now = datetime.now(UTC)
    rows = []
    for command, envelope_source, channel, item_key, amount, (due, allocation), change, drawn in zip(
        commands,
        (a.envelope.source for a in batch),
        channels,
        keys,
        amounts,
        allocations,
        changes,
        numbers,
        strict=True,
    ):
        rows.append(
            posted_values(
                command,
                drawn,
                consumer_name=account_rows[command.account_number].name,
                currency=items[item_key].currency,
                channel=channel,
                amount=amount,
                due=due,
                allocation=allocation,
                change=change,
                received_by=envelope_source,
                now=now,
            )
        )
    posted = await _insert_payments(session, rows, now)
    await _stage_events(session, batch, posted, [account_rows[p.account_number] for p in posted], items)


def _commands(batch: Sequence[Applying]) -> list[RecordPayment]:
    if any(applying.envelope.type != RECORD_REQUESTED for applying in batch):
        raise OneByOne("not only payment.record_requested")
    return [_command(applying.envelope) for applying in batch]


async def _apply_to_balances(
    session: AsyncSession,
    commands: Sequence[RecordPayment],
    keys: Sequence[tuple[str, str]],
    allocations: Sequence[domain.Allocation],
) -> None:
    """What the batch applied, off each item's outstanding and onto each account's collected figure."""
    # Locks were taken item by item in account order; the accounts are updated in that order too.
    applied_per_item: dict[tuple[str, str], Decimal] = {}
    applied_per_account: dict[str, Decimal] = {}
    for command, key, allocation in zip(commands, keys, allocations, strict=True):
        applied_per_item[key] = applied_per_item.get(key, Decimal(0)) + allocation.applied
        applied_per_account[command.account_number] = (
            applied_per_account.get(command.account_number, Decimal(0)) + allocation.applied
        )
    await session.execute(
        update(receivables)
        .where(receivables.c.payment_type == bindparam("t"), receivables.c.item_reference == bindparam("r"))
        .values(outstanding=receivables.c.outstanding - bindparam("applied", type_=receivables.c.outstanding.type)),
        [{"t": t, "r": r, "applied": applied} for (t, r), applied in sorted(applied_per_item.items())],
    )
    await session.execute(
        update(accounts)
        .where(accounts.c.account_number == bindparam("a"))
        .values(
            collected_since_report=accounts.c.collected_since_report
            + bindparam("applied", type_=accounts.c.collected_since_report.type)
        ),
        [{"a": a, "applied": applied} for a, applied in sorted(applied_per_account.items())],
    )


async def _insert_payments(session: AsyncSession, rows: Sequence[dict[str, Any]], now: datetime) -> list[Row[Any]]:
    """The payments, in the batch's order, and an audit entry for each."""
    inserted = await session.execute(_INSERT_PAYMENTS, column_arrays(rows, POSTED_COLUMNS))
    by_id = {payment.payment_id: payment for payment in inserted}
    posted = [by_id[row["payment_id"]] for row in rows]
    entries = [
        {
            "id": str(uuid.uuid4()),
            "at": now,
            "actor": payment.received_by,
            "action": "payment.posted",
            "subject": payment.payment_id,
            "after": audit.as_json(
                {"amount": payment.amount, "item": payment.item_reference, "receipt_number": payment.receipt_number}
            ),
        }
        for payment in posted
    ]
    await session.execute(_INSERT_AUDIT, column_arrays(entries, _AUDIT_COLUMNS))
    return posted


async def _stage_events(
    session: AsyncSession,
    batch: Sequence[Applying],
    posted: Sequence[Row[Any]],
    account_rows: Sequence[Row[Any]],
    items: dict[tuple[str, str], Any],
) -> None:
    """Each payment's events (and its usage event) in the outbox, continuing its command's trace."""
    events: list[Outgoing] = []
    for applying, payment, account in zip(batch, posted, account_rows, strict=True):
        events += posting_events(
            payment, account, items[(payment.payment_type, payment.item_reference)], applying.context
        )
        tracked = payment_processed(payment)
        events.append(Outgoing(tracked.topic, tracked.envelope, applying.context))
    await stage_all(session, events)


def _texts(name: str) -> Any:
    return bindparam(name, type_=ARRAY(String))


# The batch's reads bind one array per column, so each is one statement text whatever the batch's size: prepared
# once per connection and its plan cached, where an IN list of a bind per value was a new statement (parsed and
# planned again) for every batch size.
_ACCOUNTS = select(accounts).where(accounts.c.account_number == any_(_texts("numbers")))
_WANTED_ITEMS = (
    func.unnest(_texts("accounts"), _texts("types"), _texts("references"))
    .table_valued("account_number", "payment_type", "item_reference")
    .render_derived(name="wanted")
)
_LOCK_ITEMS = (
    select(receivables)
    .where(
        tuple_(receivables.c.account_number, receivables.c.payment_type, receivables.c.item_reference).in_(
            select(_WANTED_ITEMS.c.account_number, _WANTED_ITEMS.c.payment_type, _WANTED_ITEMS.c.item_reference)
        )
    )
    .order_by(receivables.c.account_number, receivables.c.payment_type, receivables.c.item_reference)
    .with_for_update(of=receivables)
)
_TAKEN_NUMBERS = (
    select(payments.c.payment_id)
    .where(
        (payments.c.payment_id == any_(_texts("payment_ids")))
        | (payments.c.transaction_id == any_(_texts("transaction_ids")))
        | (payments.c.receipt_number == any_(_texts("receipt_numbers")))
    )
    .limit(1)
)


# The batch's inserts, one statement each from one array per column (shared/bulk_insert.py).
_INSERT_PAYMENTS = insert_from_arrays(payments, POSTED_COLUMNS).returning(payments)
_AUDIT_COLUMNS = ("id", "at", "actor", "action", "subject", "after")
_INSERT_AUDIT = insert_from_arrays(audit_log, _AUDIT_COLUMNS)
_KEY_COLUMNS = ("operation", "key", "request_hash", "result")
_CLAIM_KEYS = (
    insert_from_arrays(idempotency_keys, _KEY_COLUMNS).on_conflict_do_nothing().returning(idempotency_keys.c.key)
)


async def _accounts(session: AsyncSession, numbers: set[str]) -> dict[str, Any]:
    found = {row.account_number: row for row in await session.execute(_ACCOUNTS, {"numbers": sorted(numbers)})}
    missing = numbers - found.keys()
    if missing:
        raise OneByOne(f"unknown accounts {sorted(missing)[:5]}")
    return found


async def _lock_items(session: AsyncSession, commands: Sequence[RecordPayment]) -> dict[tuple[str, str], Any]:
    """Every item the batch pays, locked in account order (a counter payment locks one item, then its account;
    so neither it nor another batch can wait in a circle with this one)."""
    wanted = sorted({(c.account_number, c.payment_type, c.item_reference) for c in commands})
    locked = await session.execute(
        _LOCK_ITEMS,
        {
            "accounts": [a for a, _, _ in wanted],
            "types": [t for _, t, _ in wanted],
            "references": [r for _, _, r in wanted],
        },
    )
    items = {(row.payment_type, row.item_reference): row for row in locked}
    if len(items) != len(wanted):
        raise OneByOne("an item is unknown or on another account")
    return items


async def _draw_numbers(
    session: AsyncSession, config: domain.PaymentSettings, years: Sequence[int]
) -> list[dict[str, str]]:
    """Payment ids, transaction ids and receipt numbers for the whole batch in one round trip, ascending in the
    batch's order."""
    draw = select(*(SEQUENCES[kind].next_value().label(kind) for kind in domain.NUMBER_KINDS)).select_from(
        func.generate_series(1, len(years))
    )
    drawn = (await session.execute(draw)).all()
    values = {kind: sorted(int(row._mapping[kind]) for row in drawn) for kind in domain.NUMBER_KINDS}
    numbers = [
        {kind: config.format_for(kind).render(values[kind][i], year) for kind in domain.NUMBER_KINDS}
        for i, year in enumerate(years)
    ]
    if config.number_formats is not None:
        # A format edited back onto numbers issued under an older one could meet an old number.
        taken = {f"{kind}s": [n[kind] for n in numbers] for kind in domain.NUMBER_KINDS}
        if (await session.execute(_TAKEN_NUMBERS, taken)).first() is not None:
            raise OneByOne("a drawn number is taken")
    return numbers


async def _claim_keys(
    session: AsyncSession,
    batch: Sequence[Applying],
    commands: Sequence[RecordPayment],
    numbers: Sequence[dict[str, str]],
) -> None:
    """Claim every command's idempotency key with its result; a key seen before takes the one-by-one path, which
    answers it as a replay (or a conflict)."""
    rows = [
        {
            "operation": RECORD_PAYMENT,
            "key": f"command:{applying.envelope.id}",
            "request_hash": idempotency.request_fingerprint(command),
            "result": drawn["payment_id"],
        }
        for applying, command, drawn in zip(batch, commands, numbers, strict=True)
    ]
    claimed = (await session.execute(_CLAIM_KEYS, column_arrays(rows, _KEY_COLUMNS))).all()
    if len(claimed) != len(rows):
        raise OneByOne("an idempotency key was used before")


def subscriptions(max_batch: int | None = None) -> list[Subscription]:
    """The consumer of `payments.commands.v1`: a batch (of at most `max_batch`) at a time, one command at a time when
    that fails."""
    return [
        Subscription(
            "commands",
            Topic.PAYMENTS_COMMANDS,
            {RECORD_REQUESTED: on_payment_record_requested},
            on_command_rejected,
            batch_handler=post_batch,
            max_batch=max_batch,
        )
    ]
