"""The delinquency worklist row of an account, recomputed from its items and its arrangement, and the
disconnection answer that follows from it (with its event when the answer changes)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.collections import domain
from services.collections.domain import ArrangementStatus, Disconnection
from services.collections.runtime import Desk, publish
from services.collections.storage import accounts, arrangements, installments, items
from shared.contracts.events import DisconnectionChanged, Money

# Arrangements that no longer say anything about what the account owes.
SUPERSEDED_STATUSES = (ArrangementStatus.REJECTED.value, ArrangementStatus.REAGED.value)


async def lock_account(session: AsyncSession, account: str, currency: str = "USD") -> Row[Any]:
    """The account's worklist row, created if unseen, locked until the transaction ends.

    Every change to what an account owes takes this lock first, so the row and its disconnection answer move
    one change at a time (and the answer's event is staged exactly once per change).
    """
    await session.execute(
        pg_insert(accounts).values(account_number=account, currency=currency).on_conflict_do_nothing()
    )
    query = select(accounts).where(accounts.c.account_number == account).with_for_update()
    return (await session.execute(query)).one()


async def latest_arrangement(session: AsyncSession, account: str) -> Row[Any] | None:
    """The account's arrangement that still speaks for what it owes (never a rejected or re-aged one)."""
    query = (
        select(arrangements)
        .where(arrangements.c.account_number == account, arrangements.c.status.not_in(SUPERSEDED_STATUSES))
        .order_by(arrangements.c.seq.desc())
        .limit(1)
    )
    return (await session.execute(query)).first()


async def installment_states(session: AsyncSession, arrangement_id: str) -> list[domain.InstallmentState]:
    rows = await session.execute(
        select(installments)
        .where(installments.c.arrangement_id == arrangement_id)
        .order_by(installments.c.superseded, installments.c.due_date, installments.c.number)
    )
    return [domain.InstallmentState(r.number, r.amount, r.due_date, r.paid, r.paid_on, r.superseded) for r in rows]


async def position(session: AsyncSession, arrangement: Row[Any]) -> domain.ArrangementPosition:
    current = [
        i for i in await installment_states(session, arrangement.arrangement_id) if not i.superseded or i.paid > 0
    ]
    return domain.ArrangementPosition(
        arrangement_id=arrangement.arrangement_id,
        status=ArrangementStatus(arrangement.status),
        grace_days=arrangement.grace_days,
        installments=tuple(current),
        total=arrangement.total,
        paid=arrangement.paid,
        lapsed_on=arrangement.closed_on,
    )


async def open_items(session: AsyncSession, account: str) -> list[domain.OpenItem]:
    """Items billing issued that no arrangement took over, with something still owed."""
    rows = await session.execute(
        select(items.c.amount, items.c.paid, items.c.due_date).where(
            items.c.account_number == account,
            items.c.arrangement_id.is_(None),
            items.c.amount.is_not(None),
            items.c.amount > items.c.paid,
        )
    )
    return [domain.OpenItem(r.amount, r.paid, r.due_date) for r in rows]


def _event_types(before: str, after: Disconnection) -> list[str]:
    if before == after.value:
        return []
    kinds = []
    if before == Disconnection.HOLD.value:
        kinds.append("disconnection.hold_released")
    if after is Disconnection.HOLD:
        kinds.append("disconnection.hold_placed")
    elif after is Disconnection.ELIGIBLE:
        kinds.append("disconnection.eligible")
    elif before == Disconnection.ELIGIBLE.value:
        kinds.append("disconnection.cleared")
    return kinds


async def refresh_account(session: AsyncSession, account: str, desk: Desk) -> Row[Any]:
    """Recompute the account's worklist row for the clock's today; stage the disconnection events it implies."""
    row = await lock_account(session, account)
    arrangement = await latest_arrangement(session, account)
    plan = await position(session, arrangement) if arrangement is not None else None
    values, announced = review(account, row.currency, row.disconnection, plan, await open_items(session, account), desk)
    for kind, changed in announced:
        await publish(session, kind, account, changed)
    await session.execute(update(accounts).where(accounts.c.account_number == account).values(**values))
    return row


def review(
    account: str,
    currency: str,
    disconnection: str,
    plan: domain.ArrangementPosition | None,
    owing: list[domain.OpenItem],
    desk: Desk,
) -> tuple[dict[str, Any], list[tuple[str, DisconnectionChanged]]]:
    """The worklist row's new values for the clock's today, and the disconnection events (type, data) the change
    from `disconnection` implies: what `refresh_account` writes and stages, without I/O (the batches use it too)."""
    today = desk.clock.today()
    owed = domain.delinquency(owing, plan, today)
    days = domain.days_overdue(owed.oldest_overdue_due, today)
    plan_status = plan.status if plan is not None else None
    arrangement_id = plan.arrangement_id if plan is not None else None
    state, reason = domain.disconnection_answer(
        plan_status, arrangement_id, owed.amount_overdue, days, desk.disconnection
    )
    values: dict[str, Any] = {
        "amount_owed": owed.amount_owed,
        "amount_overdue": owed.amount_overdue,
        "oldest_overdue_due": owed.oldest_overdue_due,
        "next_change_on": _next_check(owed, plan_status, state, days, desk, today),
        "refreshed_on": today,
        "arrangement_id": arrangement_id,
        "plan_status": plan_status.value if plan_status else None,
        "disconnection_reason": reason,
    }
    kinds = _event_types(disconnection, state)
    if not kinds:
        return values, []
    now = desk.clock.now()
    values |= {"disconnection": state.value, "disconnection_since": now}
    changed = DisconnectionChanged(
        account_number=account,
        state=state.value,
        reason=reason,
        arrangement_id=arrangement_id,
        amount_overdue=Money(amount=owed.amount_overdue, currency=currency),
        days_overdue=days,
        changed_at=now,
    )
    return values, [(kind, changed) for kind in kinds]


def _next_check(
    owed: domain.Delinquency,
    plan_status: ArrangementStatus | None,
    state: Disconnection,
    days: int,
    desk: Desk,
    today: date,
) -> date | None:
    """The next day this row changes by time alone: an item falling due, or the disconnection threshold."""
    candidates = [d for d in (owed.next_change_on,) if d is not None]
    if (
        plan_status not in (ArrangementStatus.ACTIVE, ArrangementStatus.PENDING_APPROVAL)
        and state is not Disconnection.ELIGIBLE
        and owed.oldest_overdue_due is not None
        and owed.amount_overdue >= desk.disconnection.threshold_amount
    ):
        candidates.append(today + timedelta(days=max(desk.disconnection.threshold_days - days, 1)))
    return min(candidates) if candidates else None
