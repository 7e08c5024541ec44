"""Changing an arrangement in force: modify (reschedule what is left, with a reason and an audit record), cancel,
and re-age into a settlement plan that keeps the old one's history."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from services.collections import domain, worklist
from services.collections.commands import (
    CreateArrangement,
    close,
    create_now,
    insert_schedule,
    locked_arrangement,
    money,
    publish_payable,
    published_installments,
    schedule_of,
)
from services.collections.domain import ArrangementStatus, Frequency
from services.collections.runtime import Desk, publish, track
from services.collections.storage import arrangements, audit_log, idempotency_keys, installments
from shared import audit, idempotency
from shared.contracts.events import ArrangementModified
from shared.errors import Rejected
from shared.receivables import installment_reference


@dataclass(frozen=True)
class ModifyArrangement:
    reason: str
    installments: int | None = None
    frequency: Frequency | None = None
    first_due_date: date | None = None
    grace_days: int | None = None
    amounts: tuple[Decimal, ...] = field(default_factory=tuple)


async def cancel_arrangement(
    session: AsyncSession, arrangement_id: str, *, reason: str, actor: str, desk: Desk
) -> None:
    arrangement = await locked_arrangement(session, arrangement_id)
    domain.check_can_cancel(ArrangementStatus(arrangement.status))
    await close(session, arrangement, ArrangementStatus.CANCELLED, reason=reason, actor=actor, desk=desk)
    await worklist.refresh_account(session, arrangement.account_number, desk)


# --- modifying ---


async def modify_arrangement(
    session: AsyncSession, arrangement_id: str, command: ModifyArrangement, *, actor: str, desk: Desk
) -> None:
    """Reschedule what is left to pay under a new plan id; the old unpaid installments are withdrawn."""
    today, now = desk.clock.today(), desk.clock.now()
    arrangement = await locked_arrangement(session, arrangement_id)
    domain.check_can_modify(ArrangementStatus(arrangement.status))
    if not command.reason.strip():
        raise Rejected("reason_required", "say why the arrangement changes", field="reason")
    remaining = arrangement.total - arrangement.paid
    frequency = command.frequency or Frequency(arrangement.frequency)
    grace = arrangement.grace_days if command.grace_days is None else command.grace_days
    current = await schedule_of(session, arrangement.plan_id)
    unpaid = [r for r in current if r.paid < r.amount]
    first = command.first_due_date or min((r.due_date for r in unpaid), default=today)
    count = len(command.amounts) or command.installments or len(unpaid) or 1
    terms = domain.Terms(
        total=remaining, installments=count, frequency=frequency, first_due_date=first, grace_days=grace
    )
    domain.validate_terms(terms, today=today, owed=remaining, limits=desk.limits)
    if command.amounts:
        domain.validate_amounts(command.amounts, remaining)
        dates = domain.due_dates(first, count, frequency)
        schedule = [
            domain.ScheduledInstallment(n + 1, a, d)
            for n, (a, d) in enumerate(zip(command.amounts, dates, strict=True))
        ]
    else:
        schedule = terms.schedule()
    version = arrangement.version + 1
    plan_id = f"{arrangement_id}.{version}"
    await session.execute(
        update(installments)
        .where(installments.c.plan_id == arrangement.plan_id, installments.c.paid < installments.c.amount)
        .values(superseded=True)
    )
    await insert_schedule(session, arrangement_id, plan_id, schedule)
    before = {
        "plan_id": arrangement.plan_id,
        "installments": arrangement.installment_count,
        "frequency": arrangement.frequency,
        "first_due_date": arrangement.first_due_date,
        "grace_days": arrangement.grace_days,
    }
    after = {
        "plan_id": plan_id,
        "installments": count,
        "frequency": frequency.value,
        "first_due_date": first,
        "grace_days": grace,
        "amounts": [str(i.amount) for i in schedule],
    }
    await session.execute(
        update(arrangements)
        .where(arrangements.c.arrangement_id == arrangement_id)
        .values(
            version=version,
            plan_id=plan_id,
            installment_count=count,
            frequency=frequency.value,
            first_due_date=first,
            grace_days=grace,
        )
    )
    await audit.record(
        session,
        audit_log,
        actor=actor,
        action="arrangement.modified",
        subject=arrangement_id,
        before=before,
        after=after,
        reason=command.reason,
        at=now,
    )
    published = await publish_payable(session, arrangement, plan_id, today)
    modified = ArrangementModified(
        arrangement_id=arrangement_id,
        account_number=arrangement.account_number,
        plan_id=plan_id,
        withdrawn_references=[installment_reference(r.plan_id, r.number) for r in unpaid],
        installments=published_installments(published, arrangement.currency),
        remaining=money(remaining, arrangement.currency),
        reason=command.reason,
        modified_by=actor,
        modified_at=now,
    )
    await publish(session, "arrangement.modified", arrangement.account_number, modified)
    await track(
        session,
        "customer_plan_setup",
        actor,
        {
            "plan_id": arrangement_id,
            "plan_type": "settlement" if arrangement.reaged_from else "standard",
            "customer_initiated": arrangement.customer_initiated,
            "terms_modified": True,
            "approval_time": 0,
        },
        at=now,
    )
    await worklist.refresh_account(session, arrangement.account_number, desk)


async def reage_arrangement(
    session: AsyncSession,
    arrangement_id: str,
    command: CreateArrangement,
    *,
    reason: str,
    actor: str,
    idempotency_key: str,
    desk: Desk,
) -> str:
    """A settlement plan for what is left of an Active or Broken arrangement; the old one keeps its history."""
    return await idempotency.once(
        session,
        idempotency_keys,
        operation="arrangement.reage",
        key=idempotency_key,
        request={"arrangement_id": arrangement_id, "reason": reason, "terms": command},
        run=lambda: _reage(session, arrangement_id, command, reason=reason, actor=actor, desk=desk),
    )


async def _reage(
    session: AsyncSession, arrangement_id: str, command: CreateArrangement, *, reason: str, actor: str, desk: Desk
) -> str:
    arrangement = await locked_arrangement(session, arrangement_id)
    domain.check_can_reage(ArrangementStatus(arrangement.status))
    if not reason.strip():
        raise Rejected("reason_required", "say why the arrangement is re-aged", field="reason")
    if arrangement.status == ArrangementStatus.ACTIVE.value:
        # An active plan lapses first (cancelled for re-aging), so its remaining balance moves into the new one.
        await close(session, arrangement, ArrangementStatus.CANCELLED, reason=reason, actor=actor, desk=desk)
    settlement = dataclasses.replace(command, account_number=arrangement.account_number, reaged_from=arrangement_id)
    return await create_now(session, settlement, actor=actor, desk=desk)
