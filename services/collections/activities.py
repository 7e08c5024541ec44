"""Collection activities (calls, visits, promises to pay, notes) with their follow-ups, the executives' alerts,
and who works an account. Activities come over HTTP or, from field systems, as commands on
`collections.commands.v1`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.collections import domain, worklist
from services.collections.domain import ActivityKind
from services.collections.runtime import Desk, track
from services.collections.storage import accounts, activities, alerts, audit_log, idempotency_keys
from shared import audit, idempotency
from shared.contracts import Envelope, Topic, parse_data
from shared.contracts.events import CollectionActivityRecordRequested
from shared.errors import Conflict, Forbidden, NotFound, Rejected
from shared.messaging import Subscription


@dataclass(frozen=True)
class LogActivity:
    account_number: str
    activity_type: ActivityKind
    outcome: str | None = None
    customer_response: str | None = None
    notes: str | None = None
    promise_amount: Decimal | None = None
    promise_date: date | None = None
    follow_up_on: date | None = None
    arrangement_id: str | None = None


async def log_activity(
    session: AsyncSession, command: LogActivity, *, executive: str, idempotency_key: str, desk: Desk
) -> str:
    """Record an activity once per `idempotency_key`; returns its id."""
    return await idempotency.once(
        session,
        idempotency_keys,
        operation="activity.log",
        key=idempotency_key,
        request=command,
        run=lambda: _log(session, command, executive=executive, desk=desk),
    )


async def _log(session: AsyncSession, command: LogActivity, *, executive: str, desk: Desk) -> str:
    today, now = desk.clock.today(), desk.clock.now()
    domain.validate_activity(
        command.activity_type,
        promise_amount=command.promise_amount,
        promise_date=command.promise_date,
        follow_up_on=command.follow_up_on,
        today=today,
    )
    known = (
        await session.execute(
            select(accounts.c.account_number).where(accounts.c.account_number == command.account_number)
        )
    ).first()
    if known is None:
        raise NotFound("unknown_account", f"no account {command.account_number}", field="account_number")
    account = await worklist.lock_account(session, command.account_number)
    activity_id = f"ACT-{uuid.uuid4().hex[:12]}"
    promise = command.activity_type is ActivityKind.PROMISE_TO_PAY
    row = {
        "activity_id": activity_id,
        "account_number": command.account_number,
        "arrangement_id": command.arrangement_id or account.arrangement_id,
        "kind": command.activity_type.value,
        "outcome": command.outcome,
        "customer_response": command.customer_response,
        "notes": command.notes,
        "promise_amount": command.promise_amount,
        "promise_date": command.promise_date,
        "promise_status": domain.PromiseStatus.OPEN.value if promise else None,
        "follow_up_on": command.follow_up_on,
        "executive": executive,
        "created_at": now,
    }
    await session.execute(activities.insert().values(**row))
    changes: dict[str, object] = {}
    if command.activity_type in domain.CONTACTS:
        changes["last_contact_at"] = now
    if account.executive is None:
        changes["executive"] = executive
    if changes:
        await session.execute(
            update(accounts).where(accounts.c.account_number == command.account_number).values(**changes)
        )
    await audit.record(
        session, audit_log, actor=executive, action="activity.logged", subject=command.account_number, after=row, at=now
    )
    await track(
        session,
        "collection_activity",
        executive,
        {
            "activity_type": command.activity_type.value,
            "customer_response": command.customer_response,
            "outcome": command.outcome,
            "follow_up_scheduled": command.follow_up_on is not None,
        },
        at=now,
    )
    return activity_id


async def complete_follow_up(session: AsyncSession, activity_id: str, *, executive: str) -> None:
    done = (
        await session.execute(
            update(activities)
            .where(activities.c.activity_id == activity_id, activities.c.follow_up_on.is_not(None))
            .values(follow_up_done=True)
            .returning(activities.c.activity_id)
        )
    ).first()
    if done is None:
        raise NotFound("follow_up_not_found", f"no follow-up on activity {activity_id}", field="activity_id")


async def acknowledge_alert(
    session: AsyncSession, alert_id: str, *, executive: str, action_taken: str, desk: Desk
) -> None:
    """The executive responded to an alert: how long it took is what the tracking plan measures."""
    now = desk.clock.now()
    alert = (await session.execute(select(alerts).where(alerts.c.alert_id == alert_id).with_for_update())).first()
    if alert is None:
        raise NotFound("alert_not_found", f"no alert {alert_id}", field="alert_id")
    if alert.acknowledged_at is not None:
        raise Conflict("alert_already_acknowledged", f"alert {alert_id} was acknowledged already")
    if not action_taken.strip():
        raise Rejected("action_required", "say what was done about the alert", field="action_taken")
    await session.execute(
        update(alerts).where(alerts.c.alert_id == alert_id).values(acknowledged_at=now, action_taken=action_taken)
    )
    await track(
        session,
        "compliance_check",
        executive,
        {
            "plan_id": alert.arrangement_id,
            "payment_status": alert.kind,
            "alert_response_time": int((now - alert.raised_at).total_seconds()),
            "action_taken": action_taken,
        },
        at=now,
    )


async def assign_executive(session: AsyncSession, account: str, executive: str, *, actor: str, desk: Desk) -> None:
    row = await worklist.lock_account(session, account)
    if not executive.strip():
        raise Rejected("executive_required", "name the executive", field="executive")
    await session.execute(update(accounts).where(accounts.c.account_number == account).values(executive=executive))
    await audit.record(
        session,
        audit_log,
        actor=actor,
        action="account.assigned",
        subject=account,
        before={"executive": row.executive},
        after={"executive": executive},
        at=desk.clock.now(),
    )


def check_may_act_for(actor_name: str, executive: str, *, manager: bool) -> None:
    if not manager and actor_name != executive:
        raise Forbidden("not_your_queue", "an executive sees only their own queue", field="executive")


class ActivityCommands:
    """`collection_activity.record_requested` from field systems: the envelope id makes it idempotent."""

    def __init__(self, desk: Desk) -> None:
        self.desk = desk

    async def on_record_requested(self, session: AsyncSession, envelope: Envelope) -> None:
        request = parse_data(envelope, CollectionActivityRecordRequested)
        try:
            kind = ActivityKind(request.activity_type)
        except ValueError:
            raise Rejected(
                "unknown_activity_type", f"{request.activity_type!r} is not an activity type", field="activity_type"
            ) from None
        command = LogActivity(
            account_number=request.account_number,
            activity_type=kind,
            outcome=request.outcome,
            customer_response=request.customer_response,
            notes=request.notes,
            promise_amount=request.promise_amount,
            promise_date=request.promise_date,
            follow_up_on=request.follow_up_on,
        )
        await _log(session, command, executive=request.executive, desk=self.desk)


def subscriptions(desk: Desk) -> list[Subscription]:
    handlers = ActivityCommands(desk)
    return [
        Subscription(
            "commands",
            Topic.COLLECTIONS_COMMANDS,
            {"collection_activity.record_requested": handlers.on_record_requested},
        )
    ]
