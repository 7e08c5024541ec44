"""Staff decisions on a recorded payment: the billing manager verifies an online one, an admin cancels one.

Each runs inside the caller's transaction and stages its event there, like every state change in `commands.py`
(whose building blocks it uses: the locked payment, the item, the allocation).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments import domain
from services.payments.commands import allocate, emit, find_for_update, lock_item
from services.payments.domain import Verification
from services.payments.storage import audit_log, payments
from shared import audit
from shared.contracts import PaymentStatus, counts_as_collected
from shared.contracts.events import Money, PaymentCancelled, PaymentVerified


async def verify_payment(session: AsyncSession, payment_id_or_receipt: str, *, verified_by: str) -> str:
    """The billing manager approves an online payment; returns its payment id."""
    payment = await find_for_update(session, payment_id_or_receipt)
    domain.check_verifiable(payment.online, payment.verification, payment.status)
    now = datetime.now(UTC)
    await session.execute(
        update(payments)
        .where(payments.c.payment_id == payment.payment_id)
        .values(verification=Verification.VERIFIED, verified_by=verified_by, verified_at=now)
    )
    await audit.record(
        session,
        audit_log,
        actor=verified_by,
        action="payment.verified",
        subject=payment.payment_id,
        before={"verification": payment.verification},
        after={"verification": Verification.VERIFIED},
    )
    verified = PaymentVerified(
        payment_id=payment.payment_id,
        receipt_number=payment.receipt_number,
        account_number=payment.account_number,
        verified_by=verified_by,
        verified_at=now,
    )
    await emit(session, "payment.verified", payment.account_number, verified)
    return str(payment.payment_id)


async def cancel_payment(session: AsyncSession, payment_id_or_receipt: str, *, reason: str, cancelled_by: str) -> str:
    """Admin only: reverse the allocation and take the payment out of what was collected."""
    payment = await find_for_update(session, payment_id_or_receipt)
    domain.check_cancellable(payment.status, reason)
    item = await lock_item(session, payment.account_number, payment.payment_type, payment.item_reference)
    if counts_as_collected(payment.status):
        await allocate(session, payment.account_number, item, -payment.applied)
    now = datetime.now(UTC)
    await session.execute(
        update(payments)
        .where(payments.c.payment_id == payment.payment_id)
        .values(status=PaymentStatus.CANCELLED, cancelled_by=cancelled_by, cancelled_at=now, cancel_reason=reason)
    )
    await audit.record(
        session,
        audit_log,
        actor=cancelled_by,
        action="payment.cancelled",
        subject=payment.payment_id,
        before={"status": payment.status},
        after={"status": PaymentStatus.CANCELLED, "reversed": payment.applied},
        reason=reason,
    )
    cancelled = PaymentCancelled(
        payment_id=payment.payment_id,
        receipt_number=payment.receipt_number,
        account_number=payment.account_number,
        amount=Money(amount=payment.amount, currency=payment.currency),
        reason=reason,
        cancelled_by=cancelled_by,
        cancelled_at=now,
    )
    await emit(session, "payment.cancelled", payment.account_number, cancelled)
    return str(payment.payment_id)
