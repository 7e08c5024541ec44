"""Recording a payment at the counter (`POST /payments`), the service's hot path, on the pooled connection's driver
(`shared.direct`): five round trips, where the session took seven for less.

Begin; claim the key, reading the settings with it; lock the item, reading its account, its hold and three numbers
with it; one statement writing the allocation, the payment, its audit entry, the key's result and the outbox rows;
commit. The rules are `domain`'s and the statements `commands`'s, as for a command from another system
(`commands.record_payment`, on the session); only the way to the database differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Numeric, String, bindparam, exists, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.payments import arrangements, commands, domain, queries
from services.payments.commands import RECORD_PAYMENT, SEQUENCES, RecordPayment
from services.payments.storage import accounts, idempotency_keys, item_holds, payments, plumbing, settings
from shared import audit, idempotency
from shared.direct import DirectTransaction, outbox_insert, prepare
from shared.money import quantize

# The key's claim returns the settings in force (all stored values by key): no row when the key was seen before.
_CLAIM = prepare(
    pg_insert(idempotency_keys)
    .values(operation=bindparam("operation"), key=bindparam("key"), request_hash=bindparam("fingerprint"))
    .on_conflict_do_nothing()
    .returning(select(func.jsonb_object_agg(settings.c.key, settings.c.value)).scalar_subquery().label("settings"))
)
_EARLIER = prepare(
    select(idempotency_keys.c.request_hash, idempotency_keys.c.result).where(
        idempotency_keys.c.operation == bindparam("operation"), idempotency_keys.c.key == bindparam("key")
    )
)
_ITEM = prepare(commands.ITEM_FOR_PAYMENT)
# Why no item was found, in the order the refusals are checked: the arrangement's hold, the account, the item.
_MISSING_ITEM = prepare(
    select(
        select(item_holds.c.kind)
        .where(item_holds.c.payment_type == bindparam("payment_type"), item_holds.c.item_reference == bindparam("ref"))
        .scalar_subquery()
        .label("hold_kind"),
        select(item_holds.c.arrangement_id)
        .where(item_holds.c.payment_type == bindparam("payment_type"), item_holds.c.item_reference == bindparam("ref"))
        .scalar_subquery()
        .label("hold_arrangement"),
        exists().where(accounts.c.account_number == bindparam("account_number")).label("known_account"),
    )
)
_NUMBERS = prepare(select(*(SEQUENCES[kind].next_value().label(kind) for kind in domain.NUMBER_KINDS)))
_TAKEN = prepare(
    select(payments.c.payment_id)
    .where(
        (payments.c.payment_id == bindparam("payment_id"))
        | (payments.c.transaction_id == bindparam("transaction_id"))
        | (payments.c.receipt_number == bindparam("receipt_number"))
    )
    .limit(1)
)
_POST = prepare(commands.POST_PAYMENT.add_cte(outbox_insert(plumbing.outbox).cte("staged")))


@dataclass(frozen=True)
class Recorded:
    """The payment id, and the payment with its consumer and item as posted just now (None for a replay)."""

    payment_id: str
    posted: SimpleNamespace | None = None


async def record_payment(
    tx: DirectTransaction, command: RecordPayment, *, received_by: str, idempotency_key: str
) -> Recorded:
    """Post a payment exactly once for `idempotency_key`; a retry gets the first payment's id."""
    fingerprint = idempotency.request_fingerprint(command)
    key = {"operation": RECORD_PAYMENT, "key": idempotency_key}
    claimed = await tx.fetchrow(_CLAIM, key | {"fingerprint": fingerprint})
    if claimed is None:
        earlier = await tx.fetchrow(_EARLIER, key)
        assert earlier is not None, "a conflicting key is there to read"
        return Recorded(
            idempotency.replayed(earlier["request_hash"], earlier["result"], **key, fingerprint=fingerprint)
        )

    config = queries.settings_from(claimed["settings"] or {})
    channel = command.channel or config.default_channel
    config.check(channel=channel, method=command.method)
    item = await _lock_item(tx, command)
    amount = quantize(command.amount, item.currency)
    allocation = domain.allocate(item.outstanding, amount, config.overpayment_threshold)
    change = domain.change_given(amount, command.cash_received)
    numbers = await _unused_numbers(tx, config, command.payment_date.year, vars(item))

    now = datetime.now(UTC)
    values = _as_stored(
        commands.posted_values(
            command,
            numbers,
            consumer_name=item.name,
            currency=item.currency,
            channel=channel,
            amount=amount,
            due=item.outstanding,
            allocation=allocation,
            change=change,
            received_by=received_by,
            now=now,
        )
    )
    posted = audit.entry(
        actor=received_by,
        action="payment.posted",
        subject=numbers["payment_id"],
        after={"amount": amount, "item": command.item_reference, "receipt_number": numbers["receipt_number"]},
    )
    # Posted, overpaid and the usage event, built from the values as the payment row will hold them.
    row = SimpleNamespace(**values)
    events = [*commands.posting_events(row, item, item), commands.payment_processed(row)]
    written = commands.posting_parameters(values, posted, idempotency_key) | tx.staging(events)
    payment = await tx.fetchrow(_POST, written)
    assert payment is not None, "an INSERT ... RETURNING returns its row"
    return Recorded(payment["payment_id"], queries.posted_with_context(dict(payment), item))


async def _lock_item(tx: DirectTransaction, command: RecordPayment) -> Any:
    """`commands.lock_item_for_payment` on this transaction: the item locked, its account's name and contacts, its
    hold and three drawn numbers, or the same refusal in the same order."""
    params = {
        "payment_type": command.payment_type,
        "item_reference": command.item_reference,
        "account_number": command.account_number,
    }
    found = await tx.fetchrow(_ITEM, params)
    if found is None:
        why = await tx.fetchrow(
            _MISSING_ITEM, {"payment_type": command.payment_type, "ref": command.item_reference, **params}
        )
        assert why is not None, "a SELECT without FROM returns one row"
        arrangements.refuse_if_held(
            command.payment_type, command.item_reference, why["hold_kind"], why["hold_arrangement"]
        )
        if not why["known_account"]:
            raise commands.unknown_account(command.account_number)
        raise commands.unknown_item(command.payment_type, command.item_reference)
    item = SimpleNamespace(**found)
    arrangements.refuse_if_held(command.payment_type, command.item_reference, item.hold_kind, item.hold_arrangement)
    return item


async def _unused_numbers(
    tx: DirectTransaction, config: domain.PaymentSettings, year: int, values: dict[str, Any]
) -> dict[str, str]:
    """`commands.next_numbers` on this transaction: the drawn `values` rendered, or fresh ones while an edited
    format meets numbers issued under an older one."""
    while True:
        numbers = {kind: config.format_for(kind).render(int(values[kind]), year) for kind in domain.NUMBER_KINDS}
        if config.number_formats is None or await tx.fetchrow(_TAKEN, numbers) is None:
            return numbers
        drawn = await tx.fetchrow(_NUMBERS, {})
        assert drawn is not None
        values = dict(drawn)


def _as_stored(values: dict[str, Any]) -> dict[str, Any]:
    """The values as the payments row holds them (money at the column's scale, names as plain text), so the events
    built from them are the ones built from the row."""
    stored = {}
    for column, value in values.items():
        kind = payments.c[column].type
        if value is not None and isinstance(kind, Numeric) and kind.scale is not None:
            value = Decimal(value).quantize(Decimal(1).scaleb(-kind.scale))
        elif value is not None and isinstance(kind, String):
            value = str(value)
        stored[column] = value
    return stored
