"""The compliance scheduler: a periodic pass, driven by the service's clock, that marks installments missed
(with an alert to the assigned executive), breaks plans after N misses, breaks promises to pay whose date passed,
and brings worklist rows whose answer changed with the date up to today.

Exactly once, whatever restarts: each arrangement is handled in its own transaction under its row lock, and a
miss is announced only when its row in `installment_outcomes` (unique per installment and outcome) is new, so a
second pass, a pass restarted half-way, or two instances side by side never stage a second `installment.missed`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Row, func, literal_column, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.collections import commands, domain, worklist
from services.collections.domain import ArrangementStatus, Outcome
from services.collections.runtime import Desk, publish, raise_alert, track
from services.collections.storage import accounts, activities, arrangements, installment_outcomes, installments
from shared.contracts.events import InstallmentMissed, Money, PromiseBroken
from shared.receivables import installment_reference
from shared.scheduling import Periodic

log = logging.getLogger(__name__)


@dataclass
class PassResult:
    missed: int = 0
    broken: int = 0
    promises_broken: int = 0
    accounts_refreshed: int = 0


async def _due_arrangements(session: AsyncSession, today: date, limit: int) -> list[str]:
    """Active arrangements with an unpaid installment past its grace and not yet marked missed."""
    grace_end = installments.c.due_date + arrangements.c.grace_days * literal_column("interval '1 day'")
    already = (
        select(installment_outcomes.c.plan_id)
        .where(
            installment_outcomes.c.plan_id == installments.c.plan_id,
            installment_outcomes.c.number == installments.c.number,
            installment_outcomes.c.outcome == Outcome.MISSED.value,
        )
        .exists()
    )
    query = (
        select(arrangements.c.arrangement_id)
        .join(installments, installments.c.arrangement_id == arrangements.c.arrangement_id)
        .where(
            arrangements.c.status == ArrangementStatus.ACTIVE.value,
            installments.c.superseded.is_(False),
            installments.c.paid < installments.c.amount,
            grace_end < today,
            ~already,
        )
        .group_by(arrangements.c.arrangement_id)
        .order_by(func.min(installments.c.due_date))
        .limit(limit)
    )
    return list((await session.execute(query)).scalars())


async def check_arrangement(session: AsyncSession, arrangement_id: str, desk: Desk) -> tuple[int, bool]:
    """Mark this arrangement's newly missed installments and break it after N; returns (missed, broken)."""
    today = desk.clock.today()
    arrangement = await commands.locked_arrangement(session, arrangement_id)
    if arrangement.status != ArrangementStatus.ACTIVE.value:
        return 0, False
    rows = await session.execute(
        select(installments)
        .where(
            installments.c.plan_id == arrangement.plan_id,
            installments.c.paid < installments.c.amount,
        )
        .order_by(installments.c.number)
    )
    missed_count = arrangement.missed_count
    newly = 0
    for row in rows:
        state = domain.InstallmentState(row.number, row.amount, row.due_date, row.paid, row.paid_on, row.superseded)
        if domain.evaluate(state, grace_days=arrangement.grace_days, today=today) is not Outcome.MISSED:
            continue
        if not await _record_outcome(session, row, Outcome.MISSED, today):
            continue
        missed_count += 1
        newly += 1
        await _announce_miss(session, arrangement, row, missed_count, desk)
    if newly:
        await session.execute(
            update(arrangements)
            .where(arrangements.c.arrangement_id == arrangement_id)
            .values(missed_count=missed_count)
        )
    broken = newly > 0 and domain.should_break(missed_count, desk.break_after_missed)
    if broken:
        await commands.close(
            session,
            arrangement,
            ArrangementStatus.BROKEN,
            reason=f"{missed_count} installments missed",
            actor=domain.SYSTEM,
            desk=desk,
        )
    await worklist.refresh_account(session, arrangement.account_number, desk)
    return newly, broken


async def _record_outcome(session: AsyncSession, installment: Row[Any], outcome: Outcome, today: date) -> bool:
    """True only the first time this installment gets this outcome."""
    inserted = await session.execute(
        pg_insert(installment_outcomes)
        .values(
            plan_id=installment.plan_id,
            number=installment.number,
            outcome=outcome.value,
            arrangement_id=installment.arrangement_id,
            recorded_on=today,
        )
        .on_conflict_do_nothing()
        .returning(installment_outcomes.c.plan_id)
    )
    return inserted.first() is not None


async def _announce_miss(
    session: AsyncSession, arrangement: Row[Any], installment: Row[Any], missed_count: int, desk: Desk
) -> None:
    a, i = arrangement, installment
    today, now = desk.clock.today(), desk.clock.now()
    reference = installment_reference(i.plan_id, i.number)
    missed = InstallmentMissed(
        arrangement_id=a.arrangement_id,
        account_number=a.account_number,
        item_reference=reference,
        number=i.number,
        amount=Money(amount=i.amount, currency=a.currency),
        unpaid=Money(amount=i.amount - i.paid, currency=a.currency),
        due_date=i.due_date,
        grace_days=a.grace_days,
        missed_count=missed_count,
        executive=a.executive,
        missed_on=today,
    )
    await publish(session, "installment.missed", missed.account_number, missed)
    await raise_alert(
        session,
        executive=missed.executive,
        account=missed.account_number,
        kind="installment_missed",
        message=f"{reference} ({missed.unpaid.amount} unpaid) was due {missed.due_date} and is past its grace",
        arrangement_id=missed.arrangement_id,
        at=now,
    )
    await track(
        session,
        "compliance_check",
        domain.SYSTEM,
        {
            "plan_id": missed.arrangement_id,
            "payment_status": Outcome.MISSED.value,
            "alert_response_time": None,
            "action_taken": "alert_raised",
        },
        at=now,
    )


async def break_promises(session: AsyncSession, desk: Desk, *, limit: int) -> int:
    """Open promises to pay whose date has passed short of their amount become Broken, with an alert."""
    today, now = desk.clock.today(), desk.clock.now()
    due = (
        await session.execute(
            select(activities)
            .where(
                activities.c.promise_status == domain.PromiseStatus.OPEN.value,
                activities.c.promise_date < today,
            )
            .order_by(activities.c.promise_date)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).all()
    for promise in due:
        await session.execute(
            update(activities)
            .where(activities.c.activity_id == promise.activity_id)
            .values(promise_status=domain.PromiseStatus.BROKEN.value)
        )
        broken = PromiseBroken(
            activity_id=promise.activity_id,
            account_number=promise.account_number,
            promised=Money(amount=promise.promise_amount),
            paid=Money(amount=promise.promise_paid),
            promised_on=promise.promise_date,
            executive=promise.executive,
            broken_on=today,
        )
        await publish(session, "promise.broken", promise.account_number, broken)
        await raise_alert(
            session,
            executive=promise.executive,
            account=promise.account_number,
            kind="promise_broken",
            message=f"promise to pay {promise.promise_amount} by {promise.promise_date} was not kept",
            arrangement_id=promise.arrangement_id,
            at=now,
        )
    return len(due)


async def run_compliance_pass(
    sessions: async_sessionmaker[AsyncSession], desk: Desk, *, now: datetime | None = None, batch: int = 200
) -> PassResult:
    """One pass for the clock's today (or `now`, which sets the clock): misses, breaks, promises, worklist."""
    if now is not None:
        desk.clock.set(now)
    today = desk.clock.today()
    result = PassResult()
    done: set[str] = set()
    while True:
        async with sessions() as session:
            due = [a for a in await _due_arrangements(session, today, batch) if a not in done]
        if not due:
            break
        for arrangement_id in due:
            async with sessions() as session, session.begin():
                missed, broken = await check_arrangement(session, arrangement_id, desk)
            done.add(arrangement_id)
            result.missed += missed
            result.broken += int(broken)
    while True:
        async with sessions() as session, session.begin():
            count = await break_promises(session, desk, limit=batch)
        result.promises_broken += count
        if count < batch:
            break
    while True:
        async with sessions() as session, session.begin():
            stale = (
                await session.execute(
                    select(accounts.c.account_number)
                    .where(accounts.c.next_change_on <= today)
                    .order_by(accounts.c.next_change_on)
                    .limit(batch)
                    .with_for_update(skip_locked=True)
                )
            ).scalars()
            refreshed = 0
            for account in list(stale):
                await worklist.refresh_account(session, account, desk)
                refreshed += 1
        result.accounts_refreshed += refreshed
        if refreshed < batch:
            break
    return result


class ComplianceSchedule(Periodic[PassResult]):
    """Runs a pass every `every_seconds` while the service runs."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], desk: Desk, *, every_seconds: float) -> None:
        # The next pass retries a failed one; each arrangement and batch is its own transaction.
        super().__init__(
            every_seconds=every_seconds, name="collections-compliance", failure="compliance pass failed", log=log
        )
        self.sessions = sessions
        self.desk = desk

    async def check(self, now: datetime | None) -> PassResult:
        result = await run_compliance_pass(self.sessions, self.desk, now=now)
        if result.missed or result.broken or result.promises_broken:
            log.info("compliance pass", extra=result.__dict__)
        return result
