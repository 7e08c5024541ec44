"""Adjustments of a posted payment: moved to another item of the same account, or its amount corrected, with a
reason. At or under the configured limit it applies at once; above it it waits for a billing manager (maker-checker,
`shared/approvals.py`: the requester never decides, and a decision applies it exactly once).

Applying is a reversal of the old allocation plus a new allocation, in one transaction, with one audit record
linking both; the receipt is re-issued under the next version (`payment.adjusted`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments import arrangements, domain
from services.payments.commands import SOURCE, allocate, emit, find_for_update, lock_item
from services.payments.domain import AdjustmentKind, AdjustmentPlan
from services.payments.queries import load_settings
from services.payments.storage import adjustments, approvals, audit_log, idempotency_keys, payments
from shared import audit, idempotency
from shared.approvals import Approval, decide, needs_approval, request_approval
from shared.contracts import Topic
from shared.contracts.events import ItemRef, ItemSnapshot, Money, PaymentAdjusted, PaymentType
from shared.errors import NotFound, Rejected

APPROVAL_KIND = "payment_adjustment"
PENDING = "Pending approval"
APPLIED = "Applied"
REJECTED = "Rejected"


@dataclass(frozen=True)
class AdjustPayment:
    kind: AdjustmentKind
    reason: str
    payment_type: PaymentType | None = None
    item_reference: str | None = None
    amount: Decimal | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "reason": self.reason,
            "payment_type": self.payment_type.value if self.payment_type else None,
            "item_reference": self.item_reference,
            "amount": f"{self.amount:.2f}" if self.amount is not None else None,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> AdjustPayment:
        return cls(
            kind=AdjustmentKind(value["kind"]),
            reason=value["reason"],
            payment_type=PaymentType(value["payment_type"]) if value.get("payment_type") else None,
            item_reference=value.get("item_reference"),
            amount=Decimal(value["amount"]) if value.get("amount") is not None else None,
        )


async def request_adjustment(
    session: AsyncSession, payment_id_or_receipt: str, command: AdjustPayment, *, requested_by: str, key: str
) -> str:
    """Adjust a payment once per `key`: applied at once at or under the limit, else pending; returns its id."""
    return await idempotency.once(
        session,
        idempotency_keys,
        operation="payment.adjust",
        key=key,
        request={"payment": payment_id_or_receipt, **command.as_json()},
        run=lambda: _request(session, payment_id_or_receipt, command, requested_by=requested_by),
    )


async def _plan(session: AsyncSession, payment: Row[Any], command: AdjustPayment) -> tuple[AdjustmentPlan, Any, Any]:
    """The adjustment checked against the payment and items as they are now (items locked, in one fixed order)."""
    kind = command.kind
    if kind is AdjustmentKind.MOVE and (command.payment_type is None or not command.item_reference):
        raise Rejected("item_required", "a move names the item to move the payment to", field="item_reference")
    target = (
        (command.payment_type.value, command.item_reference)
        if kind is AdjustmentKind.MOVE and command.payment_type and command.item_reference
        else (payment.payment_type, payment.item_reference)
    )
    current = (payment.payment_type, payment.item_reference)
    same = target == current
    # Lock order by item key, so two adjustments between the same items can never deadlock.
    locked = {}
    for key in sorted({current, target}):
        locked[key] = await lock_item(session, payment.account_number, key[0], key[1])
    if not same:
        await arrangements.check_payable(session, *target)
    plan = domain.plan_adjustment(
        kind,
        payment.status,
        domain.PaymentLedger(payment.amount, payment.applied, payment.credited, payment.refunded),
        target_outstanding=locked[target].outstanding,
        new_amount=command.amount,
        same_item=same,
    )
    return plan, locked[current], locked[target]


async def _request(
    session: AsyncSession, payment_id_or_receipt: str, command: AdjustPayment, *, requested_by: str
) -> str:
    if not command.reason.strip():
        raise Rejected("reason_required", "an adjustment needs a reason", field="reason")
    payment = await find_for_update(session, payment_id_or_receipt)
    plan, _, _ = await _plan(session, payment, command)
    config = await load_settings(session)
    now = datetime.now(UTC)
    adjustment_id = f"ADJ-{uuid.uuid4().hex[:12]}"
    await session.execute(
        adjustments.insert().values(
            adjustment_id=adjustment_id,
            payment_id=payment.payment_id,
            kind=command.kind.value,
            status=PENDING,
            request=command.as_json(),
            reason=command.reason,
            requested_by=requested_by,
            requested_at=now,
        )
    )
    if not needs_approval(plan.size, config.adjustment_approval_limit):
        await apply_adjustment(session, adjustment_id)
        return adjustment_id
    approval = await request_approval(
        session,
        approvals,
        topic=Topic.PAYMENTS_EVENTS,
        source=SOURCE,
        kind=APPROVAL_KIND,
        subject=payment.payment_id,
        payload={"adjustment_id": adjustment_id, **command.as_json()},
        requested_by=requested_by,
        reason=command.reason,
        amount=plan.size,
        currency=payment.currency,
        account_number=payment.account_number,
        now=now,
    )
    await session.execute(
        update(adjustments).where(adjustments.c.adjustment_id == adjustment_id).values(approval_id=approval.approval_id)
    )
    await audit.record(
        session,
        audit_log,
        actor=requested_by,
        action="payment.adjustment_requested",
        subject=payment.payment_id,
        after={"adjustment_id": adjustment_id, "approval_id": approval.approval_id, **command.as_json()},
        reason=command.reason,
        at=now,
    )
    return adjustment_id


def _item_json(item: Any, applied: Decimal) -> dict[str, Any]:
    return {"payment_type": item.payment_type, "item_reference": item.item_reference, "amount": applied}


async def apply_adjustment(session: AsyncSession, adjustment_id: str, *, approved_by: str | None = None) -> None:
    """Reverse the old allocation and make the new one, checked against things as they are now."""
    row = (
        await session.execute(select(adjustments).where(adjustments.c.adjustment_id == adjustment_id).with_for_update())
    ).first()
    if row is None:
        raise NotFound("adjustment_not_found", f"no adjustment {adjustment_id}")
    command = AdjustPayment.from_json(row.request)
    payment = await find_for_update(session, row.payment_id)
    plan, old_item, new_item = await _plan(session, payment, command)
    same = (old_item.payment_type, old_item.item_reference) == (new_item.payment_type, new_item.item_reference)
    await allocate(session, payment.account_number, old_item, -plan.reversed)
    due = new_item.outstanding + (plan.reversed if same else Decimal(0))
    await allocate(session, payment.account_number, new_item, plan.applied)
    now = datetime.now(UTC)
    version = payment.receipt_version + 1
    await session.execute(
        update(payments)
        .where(payments.c.payment_id == payment.payment_id)
        .values(
            amount=plan.amount,
            payment_type=new_item.payment_type,
            item_reference=new_item.item_reference,
            applied=plan.applied,
            due=due,
            outcome=domain.Analysis(due=due, paid=plan.amount).outcome,
            receipt_version=version,
        )
    )
    before = {"item": _item_json(old_item, plan.reversed), "amount": payment.amount, "applied": payment.applied}
    after = {
        "adjustment_id": adjustment_id,
        "approval_id": row.approval_id,
        "reversal": _item_json(old_item, plan.reversed),
        "allocation": _item_json(new_item, plan.applied),
        "amount": plan.amount,
        "receipt_version": version,
    }
    # One record for the reversal and the new allocation: they happened together or not at all.
    await audit.record(
        session,
        audit_log,
        actor=approved_by or row.requested_by,
        action="payment.adjusted",
        subject=payment.payment_id,
        before=before,
        after=after,
        reason=row.reason,
        at=now,
    )
    await session.execute(
        update(adjustments)
        .where(adjustments.c.adjustment_id == adjustment_id)
        .values(
            status=APPLIED,
            before=audit.as_json(before),
            after=audit.as_json(after),
            approved_by=approved_by,
            applied_at=now,
        )
    )

    def money(amount: Decimal) -> Money:
        return Money(amount=amount, currency=payment.currency)

    adjusted = PaymentAdjusted(
        adjustment_id=adjustment_id,
        payment_id=payment.payment_id,
        receipt_number=payment.receipt_number,
        account_number=payment.account_number,
        kind=command.kind.value,
        previous_item=ItemRef(payment_type=PaymentType(old_item.payment_type), item_reference=old_item.item_reference),
        previous_amount=money(payment.amount),
        previous_applied=money(plan.reversed),
        item=ItemSnapshot(
            payment_type=PaymentType(new_item.payment_type),
            item_reference=new_item.item_reference,
            description=new_item.description,
            period_or_date=new_item.period_or_date,
            issued_on=new_item.issued_on,
            due=money(due),
            amount=money(new_item.amount),
            paid_before=money(new_item.amount - due),
        ),
        amount=money(plan.amount),
        applied=money(plan.applied),
        reason=row.reason,
        requested_by=row.requested_by,
        approved_by=approved_by,
        approval_id=row.approval_id,
        receipt_version=version,
        adjusted_at=now,
    )
    await emit(session, "payment.adjusted", payment.account_number, adjusted)


async def decide_adjustment(
    session: AsyncSession, approval_id: str, *, approver: str, approve: bool, reason: str | None = None
) -> Approval:
    """A billing manager's decision on a pending adjustment; an approval applies it in this same transaction."""
    decided = await decide(
        session,
        approvals,
        approval_id,
        topic=Topic.PAYMENTS_EVENTS,
        source=SOURCE,
        approver=approver,
        approve=approve,
        reason=reason,
    )
    adjustment_id = str(decided.payload["adjustment_id"])
    if approve:
        await apply_adjustment(session, adjustment_id, approved_by=approver)
    else:
        await session.execute(
            update(adjustments).where(adjustments.c.adjustment_id == adjustment_id).values(status=REJECTED)
        )
        await audit.record(
            session,
            audit_log,
            actor=approver,
            action="payment.adjustment_rejected",
            subject=decided.subject,
            after={"adjustment_id": adjustment_id, "approval_id": approval_id},
            reason=reason,
        )
    return decided
