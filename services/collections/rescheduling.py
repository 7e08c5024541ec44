"""Changing an arrangement in force: modify (reschedule what is left, with a reason and an audit record), cancel,
and re-age into a settlement plan that keeps the old one's history. A modification or re-age whose new terms are
above the limits an executive may agree alone waits for a billing manager (shared maker-checker approvals), like a
new arrangement: nothing changes until it is approved, then it is applied as asked, in the approval's transaction."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.collections import commands, domain, worklist
from services.collections.commands import (
    CreateArrangement,
    close,
    coverable_items,
    create_now,
    insert_schedule,
    locked_arrangement,
    money,
    publish_payable,
    published_installments,
    schedule_of,
)
from services.collections.domain import ArrangementStatus, Frequency
from services.collections.runtime import SOURCE, Desk, publish, track
from services.collections.storage import approvals, arrangements, audit_log, idempotency_keys, installments
from shared import approvals as maker_checker
from shared import audit, idempotency
from shared.contracts import Topic
from shared.contracts.events import ArrangementModified
from shared.errors import Conflict, Rejected
from shared.receivables import installment_reference

MODIFY_KIND = "arrangement_modification"
REAGE_KIND = "arrangement_reage"


def is_approval(identifier: str) -> bool:
    """A re-age answers the settlement plan's id, or the id of the approval it waits for (`shared.approvals`)."""
    return identifier.startswith("APR-")


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
    session: AsyncSession,
    arrangement_id: str,
    command: ModifyArrangement,
    *,
    actor: str,
    desk: Desk,
    approved_by: str | None = None,
) -> str | None:
    """Reschedule what is left to pay under a new plan id; the old unpaid installments are withdrawn. Above the
    limits (and not yet approved) nothing changes: returns the approval it waits for."""
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
    if approved_by is None and domain.needs_approval(terms, desk.limits):
        return await _ask(
            session,
            arrangement,
            MODIFY_KIND,
            _modify_payload(command, arrangement.version),
            actor=actor,
            reason=f"modify to {domain.plan_terms(terms)} for {remaining}: {command.reason}",
            amount=remaining,
            desk=desk,
        )
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
        "approved_by": approved_by,
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
    return None


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
    session: AsyncSession,
    arrangement_id: str,
    command: CreateArrangement,
    *,
    reason: str,
    actor: str,
    desk: Desk,
    approved_by: str | None = None,
) -> str:
    """The settlement plan's id; above the limits (and not yet approved) the id of the approval it waits for."""
    arrangement = await locked_arrangement(session, arrangement_id)
    domain.check_can_reage(ArrangementStatus(arrangement.status))
    if not reason.strip():
        raise Rejected("reason_required", "say why the arrangement is re-aged", field="reason")
    if approved_by is None:
        # What the settlement plan would cover: the old plan's unpaid rest and the items it names (or everything
        # overdue outside any plan), as `create_now` adds it up.
        items = await coverable_items(
            session, dataclasses.replace(command, account_number=arrangement.account_number), desk.clock.today()
        )
        owed = sum((r.amount - r.paid for r in items), domain.ZERO) + max(arrangement.total - arrangement.paid, 0)
        terms = domain.Terms(
            total=owed,
            installments=command.installments,
            frequency=command.frequency,
            first_due_date=command.first_due_date,
            grace_days=command.grace_days,
            down_payment=command.down_payment,
        )
        domain.validate_terms(terms, today=desk.clock.today(), owed=owed, limits=desk.limits)
        if domain.needs_approval(terms, desk.limits):
            return await _ask(
                session,
                arrangement,
                REAGE_KIND,
                _reage_payload(command, reason),
                actor=actor,
                reason=f"re-age into {domain.plan_terms(terms)} for {owed}: {reason}",
                amount=owed,
                desk=desk,
            )
    if arrangement.status == ArrangementStatus.ACTIVE.value:
        # An active plan lapses first (cancelled for re-aging), so its remaining balance moves into the new one.
        await close(session, arrangement, ArrangementStatus.CANCELLED, reason=reason, actor=actor, desk=desk)
    settlement = dataclasses.replace(command, account_number=arrangement.account_number, reaged_from=arrangement_id)
    return await create_now(session, settlement, actor=actor, desk=desk, approved_by=approved_by)


# --- approvals of a modification or re-age above the limits ---


async def _ask(
    session: AsyncSession,
    arrangement: Row[Any],
    kind: str,
    payload: dict[str, Any],
    *,
    actor: str,
    reason: str,
    amount: Decimal,
    desk: Desk,
) -> str:
    """Ask a billing manager; one change of an arrangement waits at a time."""
    waiting = (
        await session.execute(
            select(approvals.c.approval_id).where(
                approvals.c.subject == arrangement.arrangement_id,
                approvals.c.kind.in_([MODIFY_KIND, REAGE_KIND]),
                approvals.c.status == maker_checker.ApprovalStatus.PENDING.value,
            )
        )
    ).first()
    if waiting is not None:
        raise Conflict(
            "change_awaiting_approval",
            f"{arrangement.arrangement_id} already has a change awaiting approval ({waiting.approval_id})",
            field="arrangement_id",
        )
    approval = await maker_checker.request_approval(
        session,
        approvals,
        topic=Topic.COLLECTIONS_EVENTS,
        source=SOURCE,
        kind=kind,
        subject=arrangement.arrangement_id,
        payload=payload,
        requested_by=actor,
        reason=reason,
        amount=amount,
        currency=arrangement.currency,
        account_number=arrangement.account_number,
        now=desk.clock.now(),
    )
    await audit.record(
        session,
        audit_log,
        actor=actor,
        action=f"{kind}.requested",
        subject=arrangement.arrangement_id,
        after={"approval_id": approval.approval_id, **payload},
        reason=reason,
        at=desk.clock.now(),
    )
    return approval.approval_id


def _modify_payload(command: ModifyArrangement, version: int) -> dict[str, Any]:
    return {
        "version": version,
        "reason": command.reason,
        "installments": command.installments,
        "frequency": command.frequency.value if command.frequency else None,
        "first_due_date": command.first_due_date.isoformat() if command.first_due_date else None,
        "grace_days": command.grace_days,
        "amounts": [str(a) for a in command.amounts],
    }


def _reage_payload(command: CreateArrangement, reason: str) -> dict[str, Any]:
    return {
        "reason": reason,
        "installments": command.installments,
        "frequency": command.frequency.value,
        "first_due_date": command.first_due_date.isoformat(),
        "grace_days": command.grace_days,
        "down_payment": str(command.down_payment),
        "items": list(command.items) if command.items is not None else None,
        "notes": command.notes,
    }


async def decide_approval(
    session: AsyncSession, approval_id: str, *, approver: str, approve: bool, reason: str | None, desk: Desk
) -> tuple[maker_checker.Approval, str]:
    """A billing manager's decision on a new arrangement, a modification or a re-age, applied in this
    transaction; returns the decision and the arrangement to show (the settlement plan of an approved re-age)."""
    decided = await commands.decide(session, approval_id, approver=approver, approve=approve, reason=reason, desk=desk)
    subject = decided.subject
    if decided.kind == commands.APPROVAL_KIND:
        await commands.settle_creation(session, decided, approve=approve, reason=reason, desk=desk)
        return decided, subject
    requester, asked = decided.requested_by, decided.payload
    if not approve:
        await audit.record(
            session,
            audit_log,
            actor=approver,
            action=f"{decided.kind}.rejected",
            subject=subject,
            after={"approval_id": approval_id},
            reason=reason,
            at=desk.clock.now(),
        )
        return decided, subject
    if decided.kind == MODIFY_KIND:
        arrangement = await locked_arrangement(session, subject)
        if arrangement.version != asked["version"]:
            raise Conflict("arrangement_changed", f"{subject} changed since this modification was asked for")
        change = ModifyArrangement(
            reason=asked["reason"],
            installments=asked["installments"],
            frequency=Frequency(asked["frequency"]) if asked["frequency"] else None,
            first_due_date=date.fromisoformat(asked["first_due_date"]) if asked["first_due_date"] else None,
            grace_days=asked["grace_days"],
            amounts=tuple(Decimal(a) for a in asked["amounts"]),
        )
        await modify_arrangement(session, subject, change, actor=requester, desk=desk, approved_by=approver)
        return decided, subject
    settlement = CreateArrangement(
        account_number="",
        installments=asked["installments"],
        frequency=Frequency(asked["frequency"]),
        first_due_date=date.fromisoformat(asked["first_due_date"]),
        grace_days=asked["grace_days"],
        down_payment=Decimal(asked["down_payment"]),
        items=tuple(asked["items"]) if asked["items"] is not None else None,
        notes=asked["notes"],
    )
    new_id = await _reage(
        session, subject, settlement, reason=asked["reason"], actor=requester, desk=desk, approved_by=approver
    )
    return decided, new_id
