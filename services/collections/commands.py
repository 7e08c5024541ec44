"""Arrangements' state changes: create (at once, or after a billing manager's approval), activate, approve or
reject, and close (broken, completed, cancelled, re-aged); `rescheduling.py` modifies, cancels and re-ages. Each
runs in the caller's transaction and stages its events there.

Once active, an arrangement's installments are published as a billing-shaped `installment_plan.created` on
`billing.receivables.v1`, so payments (and credit notes, kpi) offer and take them like any other item.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.collections import domain, worklist
from services.collections.domain import ArrangementStatus, Frequency
from services.collections.runtime import SOURCE, Desk, publish, raise_alert, track
from services.collections.storage import (
    accounts,
    approvals,
    arrangement_number_seq,
    arrangements,
    audit_log,
    idempotency_keys,
    installments,
    items,
)
from shared import approvals as maker_checker
from shared import audit, idempotency
from shared.contracts import Topic, new_envelope
from shared.contracts.events import (
    ArrangementClosed,
    ArrangementCreated,
    ArrangementInstallment,
    CoveredItem,
    Installment,
    InstallmentPlanCreated,
    Money,
    PaymentType,
)
from shared.errors import Conflict, NotFound, Rejected
from shared.outbox import stage
from shared.receivables import installment_reference

APPROVAL_KIND = "payment_arrangement"


@dataclass(frozen=True)
class CreateArrangement:
    account_number: str
    installments: int
    frequency: Frequency
    first_due_date: date
    grace_days: int = 0
    down_payment: Decimal = domain.ZERO
    items: tuple[str, ...] | None = None  # item references; None: everything overdue
    notes: str | None = None
    customer_initiated: bool = False
    negotiation_seconds: int | None = None
    reaged_from: str | None = None


async def locked_arrangement(session: AsyncSession, arrangement_id: str) -> Row[Any]:
    query = select(arrangements).where(arrangements.c.arrangement_id == arrangement_id).with_for_update()
    row = (await session.execute(query)).first()
    if row is None:
        raise NotFound("arrangement_not_found", f"no arrangement {arrangement_id}", field="arrangement_id")
    return row


def money(amount: Decimal, currency: str) -> Money:
    return Money(amount=amount, currency=currency)


# --- creating ---


async def create_arrangement(
    session: AsyncSession, command: CreateArrangement, *, actor: str, idempotency_key: str, desk: Desk
) -> str:
    """Create an arrangement once per `idempotency_key`; returns its id (Active, or Pending approval)."""
    return await idempotency.once(
        session,
        idempotency_keys,
        operation="arrangement.create",
        key=idempotency_key,
        request=command,
        run=lambda: create_now(session, command, actor=actor, desk=desk),
    )


async def coverable_items(session: AsyncSession, command: CreateArrangement, today: date) -> list[Row[Any]]:
    query = select(items).where(
        items.c.account_number == command.account_number,
        items.c.arrangement_id.is_(None),
        items.c.amount.is_not(None),
        items.c.amount > items.c.paid,
    )
    found = {r.item_reference: r for r in (await session.execute(query.order_by(items.c.due_date))).all()}
    if command.items is None:
        return [r for r in found.values() if r.due_date < today]
    missing = [ref for ref in command.items if ref not in found]
    if missing:
        raise Rejected(
            "item_not_coverable",
            f"{', '.join(missing)} is not an open item of {command.account_number} outside any arrangement",
            field="items",
        )
    return [found[ref] for ref in dict.fromkeys(command.items)]


async def create_now(
    session: AsyncSession, command: CreateArrangement, *, actor: str, desk: Desk, approved_by: str | None = None
) -> str:
    """Create an arrangement: in force at once, or Pending approval above the limits (unless `approved_by` already
    approved it, as a re-age is approved before it is made)."""
    today, now = desk.clock.today(), desk.clock.now()
    # Lock order everywhere: arrangements before the account row (payments and the scheduler lock an arrangement,
    # then refresh its account), so re-aging a lapsed plan never deadlocks with a payment on it.
    await session.execute(
        select(arrangements.c.arrangement_id)
        .where(
            arrangements.c.account_number == command.account_number,
            arrangements.c.status.not_in(worklist.SUPERSEDED_STATUSES),
        )
        .order_by(arrangements.c.seq)
        .with_for_update()
    )
    account = await worklist.refresh_account(session, command.account_number, desk)
    open_ = (
        await session.execute(
            select(arrangements.c.arrangement_id).where(
                arrangements.c.account_number == command.account_number,
                arrangements.c.status.in_([s.value for s in domain.OPEN_STATUSES]),
            )
        )
    ).first()
    if open_ is not None:
        raise Conflict(
            "arrangement_exists",
            f"{command.account_number} already has arrangement {open_.arrangement_id} in force or awaiting approval",
            field="account_number",
        )
    covered = await coverable_items(session, command, today)
    lapsed = await worklist.latest_arrangement(session, command.account_number)
    carried = domain.ZERO
    reaged_from = command.reaged_from
    if lapsed is not None and ArrangementStatus(lapsed.status) in domain.LAPSED_STATUSES:
        carried = max(lapsed.total - lapsed.paid, domain.ZERO)
        reaged_from = lapsed.arrangement_id if carried > 0 else reaged_from
    elif reaged_from is not None:
        raise Rejected("nothing_to_reage", f"{reaged_from} has no remaining balance to re-age", field="arrangement_id")
    owed = sum((r.amount - r.paid for r in covered), domain.ZERO) + carried
    terms = domain.Terms(
        total=owed,
        installments=command.installments,
        frequency=command.frequency,
        first_due_date=command.first_due_date,
        grace_days=command.grace_days,
        down_payment=command.down_payment,
    )
    domain.validate_terms(terms, today=today, owed=owed, limits=desk.limits)
    seq = int((await session.execute(select(arrangement_number_seq.next_value()))).scalar_one())
    arrangement_id = desk.arrangement_id(seq)
    executive = account.executive or actor
    if account.executive is None:
        await session.execute(
            update(accounts).where(accounts.c.account_number == command.account_number).values(executive=actor)
        )
    approval_required = approved_by is None and domain.needs_approval(terms, desk.limits)
    currency = covered[0].currency if covered else account.currency
    row = {
        "arrangement_id": arrangement_id,
        "seq": seq,
        "account_number": command.account_number,
        "status": (ArrangementStatus.PENDING_APPROVAL if approval_required else ArrangementStatus.ACTIVE).value,
        "plan_id": arrangement_id,
        "total": owed,
        "down_payment": command.down_payment,
        "currency": currency,
        "installment_count": command.installments,
        "frequency": command.frequency.value,
        "first_due_date": command.first_due_date,
        "grace_days": command.grace_days,
        "notes": command.notes,
        "covered": [
            {"payment_type": r.payment_type, "item_reference": r.item_reference, "amount": str(r.amount - r.paid)}
            for r in covered
        ],
        "executive": executive,
        "created_by": actor,
        "created_at": now,
        "reaged_from": reaged_from,
        "customer_initiated": command.customer_initiated,
        "negotiation_seconds": command.negotiation_seconds,
    }
    await session.execute(arrangements.insert().values(**row))
    await insert_schedule(session, arrangement_id, arrangement_id, terms.schedule())
    await audit.record(
        session, audit_log, actor=actor, action="arrangement.requested", subject=arrangement_id, after=row, at=now
    )
    days = domain.days_overdue(account.oldest_overdue_due, today)
    await track(
        session,
        "payment_plan_created",
        actor,
        {
            "plan_id": arrangement_id,
            "plan_terms": domain.plan_terms(terms),
            "customer_risk_score": domain.risk_score(days, account.amount_overdue, 1 if reaged_from else 0),
            "negotiation_time": command.negotiation_seconds,
            "approval_required": approval_required or approved_by is not None,
        },
        at=now,
    )
    if approval_required:
        approval = await maker_checker.request_approval(
            session,
            approvals,
            topic=Topic.COLLECTIONS_EVENTS,
            source=SOURCE,
            kind=APPROVAL_KIND,
            subject=arrangement_id,
            payload={"terms": domain.plan_terms(terms), "installments": command.installments},
            requested_by=actor,
            reason=f"{domain.plan_terms(terms)} for {owed} is above the limits an executive may agree alone",
            amount=owed,
            currency=currency,
            account_number=command.account_number,
            now=now,
        )
        await session.execute(
            update(arrangements)
            .where(arrangements.c.arrangement_id == arrangement_id)
            .values(approval_id=approval.approval_id)
        )
        await worklist.refresh_account(session, command.account_number, desk)
    else:
        await activate(session, arrangement_id, actor=actor, approved_by=approved_by, desk=desk)
    return arrangement_id


async def insert_schedule(
    session: AsyncSession, arrangement_id: str, plan_id: str, schedule: list[domain.ScheduledInstallment]
) -> None:
    await session.execute(
        installments.insert(),
        [
            {
                "plan_id": plan_id,
                "number": i.number,
                "arrangement_id": arrangement_id,
                "amount": i.amount,
                "due_date": i.due_date,
                "down_payment": i.down_payment,
            }
            for i in schedule
        ],
    )


async def schedule_of(session: AsyncSession, plan_id: str) -> list[Row[Any]]:
    query = select(installments).where(installments.c.plan_id == plan_id).order_by(installments.c.number)
    return list((await session.execute(query)).all())


def published_installments(rows: list[Row[Any]], currency: str) -> list[ArrangementInstallment]:
    return [
        ArrangementInstallment(
            number=r.number,
            item_reference=installment_reference(r.plan_id, r.number),
            amount=money(r.amount, currency),
            due_date=r.due_date,
            down_payment=r.down_payment,
        )
        for r in rows
    ]


async def publish_payable(session: AsyncSession, arrangement: Row[Any], plan_id: str, today: date) -> list[Row[Any]]:
    """The installments as billing-shaped items: what the counter, online and command paths pay against."""
    schedule = await schedule_of(session, plan_id)
    plan = InstallmentPlanCreated(
        account_number=arrangement.account_number,
        plan_id=plan_id,
        created_on=today,
        installments=[
            Installment(number=r.number, amount=money(r.amount, arrangement.currency), due_date=r.due_date)
            for r in schedule
        ],
    )
    envelope = new_envelope("installment_plan.created", source=SOURCE, subject=arrangement.account_number, data=plan)
    await stage(session, Topic.BILLING_RECEIVABLES, envelope)
    return schedule


def _covered_items(arrangement: Row[Any]) -> list[CoveredItem]:
    return [
        CoveredItem(
            payment_type=PaymentType(c["payment_type"]),
            item_reference=c["item_reference"],
            amount=money(Decimal(c["amount"]), arrangement.currency),
        )
        for c in arrangement.covered
    ]


async def activate(
    session: AsyncSession, arrangement_id: str, *, actor: str, approved_by: str | None, desk: Desk
) -> None:
    """Put an arrangement in force: take over its items, re-age the lapsed one, publish its installments."""
    now, today = desk.clock.now(), desk.clock.today()
    arrangement = await locked_arrangement(session, arrangement_id)
    refs = [c["item_reference"] for c in arrangement.covered]
    if refs:
        await session.execute(
            update(items)
            .where(items.c.account_number == arrangement.account_number, items.c.item_reference.in_(refs))
            .values(arrangement_id=arrangement_id)
        )
    await session.execute(
        update(arrangements)
        .where(arrangements.c.arrangement_id == arrangement_id)
        .values(status=ArrangementStatus.ACTIVE.value, activated_at=now, approved_by=approved_by)
    )
    if arrangement.reaged_from is not None:
        previous = await locked_arrangement(session, arrangement.reaged_from)
        await close(
            session,
            previous,
            ArrangementStatus.REAGED,
            reason=f"re-aged into settlement plan {arrangement_id}",
            actor=actor,
            desk=desk,
        )
    schedule = await publish_payable(session, arrangement, arrangement.plan_id, today)
    created = ArrangementCreated(
        arrangement_id=arrangement_id,
        plan_id=arrangement.plan_id,
        account_number=arrangement.account_number,
        total=money(arrangement.total, arrangement.currency),
        down_payment=money(arrangement.down_payment, arrangement.currency),
        frequency=arrangement.frequency,
        first_due_date=arrangement.first_due_date,
        grace_days=arrangement.grace_days,
        installments=published_installments(schedule, arrangement.currency),
        covered_items=_covered_items(arrangement),
        reaged_from=arrangement.reaged_from,
        executive=arrangement.executive,
        created_by=arrangement.created_by,
        approved_by=approved_by,
        created_at=arrangement.created_at,
    )
    await publish(session, "arrangement.created", arrangement.account_number, created)
    await audit.record(
        session,
        audit_log,
        actor=approved_by or actor,
        action="arrangement.activated",
        subject=arrangement_id,
        before={"status": arrangement.status},
        after={"status": ArrangementStatus.ACTIVE.value, "approved_by": approved_by},
        at=now,
    )
    await track(
        session,
        "customer_plan_setup",
        arrangement.created_by,
        {
            "plan_id": arrangement_id,
            "plan_type": "settlement" if arrangement.reaged_from else "standard",
            "customer_initiated": arrangement.customer_initiated,
            "terms_modified": False,
            "approval_time": int((now - arrangement.created_at).total_seconds()) if approved_by else 0,
        },
        at=now,
    )
    await worklist.refresh_account(session, arrangement.account_number, desk)


# --- approvals by a billing manager ---


async def decide(
    session: AsyncSession, approval_id: str, *, approver: str, approve: bool, reason: str | None, desk: Desk
) -> maker_checker.Approval:
    """Record a billing manager's decision (never the requester's) under the approval's row lock; the caller
    applies it in the same transaction (`settle_creation`, or `rescheduling` for a modification or re-age)."""
    return await maker_checker.decide(
        session,
        approvals,
        approval_id,
        topic=Topic.COLLECTIONS_EVENTS,
        source=SOURCE,
        approver=approver,
        approve=approve,
        reason=reason,
        now=desk.clock.now(),
    )


async def settle_creation(
    session: AsyncSession, decided: maker_checker.Approval, *, approve: bool, reason: str | None, desk: Desk
) -> None:
    """A new arrangement approved (in force, in this transaction) or rejected."""
    approver = decided.decided_by or domain.SYSTEM
    arrangement = await locked_arrangement(session, decided.subject)
    if arrangement.status != ArrangementStatus.PENDING_APPROVAL.value:
        raise Conflict("arrangement_not_pending", f"{decided.subject} is {arrangement.status}, not awaiting approval")
    if approve:
        await activate(session, decided.subject, actor=approver, approved_by=approver, desk=desk)
    else:
        await session.execute(
            update(arrangements)
            .where(arrangements.c.arrangement_id == decided.subject)
            .values(status=ArrangementStatus.REJECTED.value, closed_at=desk.clock.now(), closed_reason=reason)
        )
        await audit.record(
            session,
            audit_log,
            actor=approver,
            action="arrangement.rejected",
            subject=decided.subject,
            before={"status": arrangement.status},
            after={"status": ArrangementStatus.REJECTED.value},
            reason=reason,
            at=desk.clock.now(),
        )
        await worklist.refresh_account(session, arrangement.account_number, desk)


# --- closing: broken, completed, cancelled, re-aged ---

CLOSE_EVENTS = {
    ArrangementStatus.BROKEN: "arrangement.broken",
    ArrangementStatus.COMPLETED: "arrangement.completed",
    ArrangementStatus.CANCELLED: "arrangement.cancelled",
    ArrangementStatus.REAGED: "arrangement.reaged",
}


async def close(
    session: AsyncSession, arrangement: Row[Any], status: ArrangementStatus, *, reason: str, actor: str, desk: Desk
) -> None:
    """End an arrangement (locked by the caller); its unpaid installments are withdrawn from payment."""
    now = desk.clock.now()
    unpaid = [r for r in await schedule_of(session, arrangement.plan_id) if r.paid < r.amount]
    await session.execute(
        update(arrangements)
        .where(arrangements.c.arrangement_id == arrangement.arrangement_id)
        .values(status=status.value, closed_at=now, closed_on=desk.clock.today(), closed_reason=reason)
    )
    await audit.record(
        session,
        audit_log,
        actor=actor,
        action=CLOSE_EVENTS[status],
        subject=arrangement.arrangement_id,
        before={"status": arrangement.status, "paid": arrangement.paid},
        after={"status": status.value},
        reason=reason,
        at=now,
    )
    closed = ArrangementClosed(
        arrangement_id=arrangement.arrangement_id,
        account_number=arrangement.account_number,
        status=status.value,
        paid=money(arrangement.paid, arrangement.currency),
        remaining=money(max(arrangement.total - arrangement.paid, domain.ZERO), arrangement.currency),
        withdrawn_references=[installment_reference(r.plan_id, r.number) for r in unpaid],
        covered_items=_covered_items(arrangement),
        reason=reason,
        closed_by=actor,
        closed_at=now,
    )
    await publish(session, CLOSE_EVENTS[status], arrangement.account_number, closed)
    if status is ArrangementStatus.BROKEN:
        await raise_alert(
            session,
            executive=arrangement.executive,
            account=arrangement.account_number,
            kind="arrangement_broken",
            message=f"{arrangement.arrangement_id} is broken: {reason}",
            arrangement_id=arrangement.arrangement_id,
            at=now,
        )
