"""Items held by collections' payment arrangements (`collections.events.v1`), a read model like `projections.py`.

While an arrangement is in force, the bills and charges it covers are paid through its installments (`PA-…/n`,
which arrive as `installment_plan.created` on billing's topic), so they are not separately payable: the counter,
command and self-service paths refuse them (`check_payable`) and the open items leave them out. A rescheduled or
ended arrangement's unpaid installment references are withdrawn the same way. When the arrangement breaks, is
cancelled or completes, its covered items are released at what the arrangement left unpaid of them (its payments
taken off in the order it took them over); a re-age holds them again under the settlement plan.

Every event here is on one topic keyed by account, so an account's holds see them in order. An online payment
already taken by Stripe for a held bill is still posted (the money is in); collections counts it towards the
arrangement, and the bill reopens at no more than what the arrangement left unpaid.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, String, bindparam, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments import domain
from services.payments.domain import HoldKind
from services.payments.storage import audit_log, item_holds, receivables
from shared import audit
from shared.contracts import Envelope, Topic, parse_data
from shared.contracts.events import (
    ArrangementClosed,
    ArrangementCreated,
    ArrangementModified,
    ArrangementPaymentApplied,
    PaymentType,
)
from shared.messaging import Subscription

COLLECTIONS = "collections"


async def check_payable(session: AsyncSession, payment_type: str, reference: str) -> None:
    """Refuse a payment naming an item an arrangement holds, naming the field."""
    hold = (
        await session.execute(
            select(item_holds.c.kind, item_holds.c.arrangement_id).where(
                item_holds.c.payment_type == payment_type, item_holds.c.item_reference == reference
            )
        )
    ).first()
    if hold is not None:
        refuse_if_held(payment_type, reference, hold.kind, hold.arrangement_id)


def refuse_if_held(payment_type: str, reference: str, kind: str | None, arrangement_id: str | None) -> None:
    """`check_payable` for a hold read by the caller (`kind` None: no arrangement ever held the item)."""
    if kind is not None and HoldKind(kind).holds:
        raise domain.held_item(payment_type, reference, HoldKind(kind), str(arrangement_id))


async def any_held(session: AsyncSession, keys: Iterable[tuple[str, str]]) -> bool:
    """Whether an arrangement holds any of these (payment type, reference) items (a batch then goes one by one,
    so each such command is refused alone, naming the field)."""
    wanted = sorted(set(keys))
    if not wanted:
        return False
    found = await session.execute(_HOLDS_OF, {"types": [t for t, _ in wanted], "references": [r for _, r in wanted]})
    return any(HoldKind(kind).holds for (kind,) in found)


# One array per column, so a batch of any size is the same statement text (prepared once per connection).
_WANTED = (
    func.unnest(bindparam("types", type_=ARRAY(String)), bindparam("references", type_=ARRAY(String)))
    .table_valued("payment_type", "item_reference")
    .render_derived(name="wanted")
)
_HOLDS_OF = select(item_holds.c.kind).where(
    tuple_(item_holds.c.payment_type, item_holds.c.item_reference).in_(
        select(_WANTED.c.payment_type, _WANTED.c.item_reference)
    )
)


def held_items() -> Any:
    """The (payment type, reference) pairs held now, for leaving them out of the open items."""
    return select(item_holds.c.payment_type, item_holds.c.item_reference).where(
        item_holds.c.kind != HoldKind.RELEASED.value
    )


async def _holds_of(session: AsyncSession, arrangement_id: str) -> list[Row[Any]]:
    query = (
        select(item_holds)
        .where(item_holds.c.arrangement_id == arrangement_id, item_holds.c.kind != HoldKind.WITHDRAWN.value)
        .order_by(item_holds.c.held_at, item_holds.c.position, item_holds.c.item_reference)
        .with_for_update()
    )
    return list((await session.execute(query)).all())


async def _set_owed(session: AsyncSession, holds: list[Row[Any]], owed: list[Decimal]) -> None:
    for hold, left in zip(holds, owed, strict=True):
        if left != hold.owed:
            await session.execute(
                update(item_holds)
                .where(
                    item_holds.c.payment_type == hold.payment_type,
                    item_holds.c.item_reference == hold.item_reference,
                )
                .values(owed=left)
            )


async def _withdraw(session: AsyncSession, account: str, arrangement_id: str, references: list[str], at: Any) -> None:
    for reference in references:
        values = {"account_number": account, "arrangement_id": arrangement_id, "kind": HoldKind.WITHDRAWN.value}
        await session.execute(
            pg_insert(item_holds)
            .values(payment_type=PaymentType.INSTALLMENT.value, item_reference=reference, held_at=at, **values)
            .on_conflict_do_update(index_elements=["payment_type", "item_reference"], set_=values)
        )


async def on_arrangement_created(session: AsyncSession, envelope: Envelope) -> None:
    created = parse_data(envelope, ArrangementCreated)
    if created.reaged_from is not None:
        # The settlement plan took over what the re-aged one left unpaid: its items stay held, now under this plan.
        await session.execute(
            update(item_holds)
            .where(item_holds.c.arrangement_id == created.reaged_from, item_holds.c.kind == HoldKind.COVERED.value)
            .values(arrangement_id=created.arrangement_id)
        )
    for position, item in enumerate(created.covered_items):
        values = {
            "account_number": created.account_number,
            "arrangement_id": created.arrangement_id,
            "kind": HoldKind.COVERED.value,
            "amount": item.amount.amount,
            "owed": item.amount.amount,
            "position": position,
            "held_at": created.created_at,
        }
        await session.execute(
            pg_insert(item_holds)
            .values(payment_type=item.payment_type.value, item_reference=item.item_reference, **values)
            .on_conflict_do_update(index_elements=["payment_type", "item_reference"], set_=values)
        )


async def on_arrangement_modified(session: AsyncSession, envelope: Envelope) -> None:
    modified = parse_data(envelope, ArrangementModified)
    await _withdraw(
        session, modified.account_number, modified.arrangement_id, modified.withdrawn_references, modified.modified_at
    )


async def on_payment_applied(session: AsyncSession, envelope: Envelope) -> None:
    """What the arrangement received (or lost back) comes off (or goes back on) what its covered items owe."""
    applied = parse_data(envelope, ArrangementPaymentApplied)
    holds = await _holds_of(session, applied.arrangement_id)
    owed = [h.owed or Decimal(0) for h in holds]
    if applied.reversed:
        left = domain.give_back_in_reverse(owed, [h.amount or Decimal(0) for h in holds], applied.amount.amount)
    else:
        left = domain.take_off_in_order(owed, applied.amount.amount)
    await _set_owed(session, holds, left)


async def on_arrangement_closed(session: AsyncSession, envelope: Envelope) -> None:
    """Broken, cancelled or completed: covered items are payable again at what is left; re-aged: still held."""
    closed = parse_data(envelope, ArrangementClosed)
    withdrawn = closed.withdrawn_references
    await _withdraw(session, closed.account_number, closed.arrangement_id, withdrawn, closed.closed_at)
    holds = await _holds_of(session, closed.arrangement_id)
    if envelope.type == "arrangement.reaged":
        await session.execute(
            update(item_holds)
            .where(item_holds.c.arrangement_id == closed.arrangement_id, item_holds.c.kind == HoldKind.RELEASED.value)
            .values(kind=HoldKind.COVERED.value)
        )
        return
    for hold in holds:
        if hold.kind == HoldKind.RELEASED.value:
            continue
        await _reopen(session, hold, closed)
    await session.execute(
        update(item_holds)
        .where(item_holds.c.arrangement_id == closed.arrangement_id, item_holds.c.kind == HoldKind.COVERED.value)
        .values(kind=HoldKind.RELEASED.value)
    )


async def _reopen(session: AsyncSession, hold: Row[Any], closed: ArrangementClosed) -> None:
    item = (
        await session.execute(
            select(receivables)
            .where(receivables.c.payment_type == hold.payment_type, receivables.c.item_reference == hold.item_reference)
            .with_for_update()
        )
    ).first()
    if item is None:
        return  # billing's item not seen yet: it arrives as billed
    outstanding = min(item.outstanding, max(hold.owed or Decimal(0), Decimal(0)))
    await session.execute(
        update(receivables)
        .where(receivables.c.payment_type == item.payment_type, receivables.c.item_reference == item.item_reference)
        .values(outstanding=outstanding)
    )
    await audit.record(
        session,
        audit_log,
        actor=closed.closed_by,
        action="item.released",
        subject=item.item_reference,
        before={"outstanding": item.outstanding, "held_by": closed.arrangement_id},
        after={"outstanding": outstanding},
        reason=f"arrangement {closed.arrangement_id} {closed.status}: {closed.reason}",
    )


def subscriptions() -> list[Subscription]:
    return [
        Subscription(
            COLLECTIONS,
            Topic.COLLECTIONS_EVENTS,
            {
                "arrangement.created": on_arrangement_created,
                "arrangement.modified": on_arrangement_modified,
                "arrangement.payment_applied": on_payment_applied,
                "arrangement.broken": on_arrangement_closed,
                "arrangement.cancelled": on_arrangement_closed,
                "arrangement.completed": on_arrangement_closed,
                "arrangement.reaged": on_arrangement_closed,
            },
        )
    ]
