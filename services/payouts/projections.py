"""Payouts' event handlers: commissions from the payments agents collect, their reversals, refund lines from
credit-note refund requests, and payout statuses from the gateway's transfer and payout webhooks."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.payouts import batches, domain, runs
from services.payouts.commands import add_line
from services.payouts.domain import LineKind, LineStatus
from services.payouts.earning import (
    agent_for,
    commission_line,
    commission_line_id,
    month_to_date,
    payee_lock,
    rule_in_force,
)
from services.payouts.payees import customer_payee
from services.payouts.storage import lines, payments
from shared.contracts import Envelope, PaymentStatus, Topic, parse_data
from shared.contracts.events import (
    CreditNoteRefundRequested,
    GatewayPayoutStatusChanged,
    PaymentCancelled,
    PaymentPosted,
    PaymentStatusChanged,
    PayoutBankStatusReported,
)
from shared.messaging import EventHandler, Subscription


async def on_payment_posted(session: AsyncSession, envelope: Envelope) -> None:
    """A commission for the agent whose channel collected the payment (if a rule is in force)."""
    posted = parse_data(envelope, PaymentPosted)
    agent = await agent_for(session, posted.channel, posted.received_by)
    first_sight = (
        await session.execute(
            pg_insert(payments)
            .values(
                receipt_number=posted.receipt_number,
                payment_id=posted.payment_id,
                account_number=posted.consumer.account_number,
                channel=posted.channel,
                received_by=posted.received_by,
                amount=posted.amount.amount,
                currency=posted.amount.currency,
                payment_date=posted.payment_date,
                status=PaymentStatus.POSTED,
                payee_id=agent.payee_id if agent else None,
            )
            .on_conflict_do_nothing()
            .returning(payments.c.receipt_number)
        )
    ).first()
    if first_sight is None or agent is None:
        return
    await session.execute(payee_lock(agent.payee_id))
    rule = await rule_in_force(session, agent.payee_id, agent.payee_group, posted.payment_date)
    if rule is None:
        return
    currency = posted.amount.currency
    month = await month_to_date(session, agent.payee_id, currency, posted.payment_date, posted.receipt_number)
    commission = domain.commission_for(rule, posted.amount.amount, currency, month)
    if commission.amount == 0:
        return
    await add_line(session, commission_line(posted, agent.payee_id, rule, month, commission))


async def _reverse_commission(
    session: AsyncSession, receipt_number: str, status: str, reason: str, at: datetime
) -> None:
    """Take back a payment's commission with an equal negative line (once), paid already or not."""
    await session.execute(update(payments).where(payments.c.receipt_number == receipt_number).values(status=status))
    original = (
        await session.execute(
            select(lines).where(lines.c.line_id == commission_line_id(receipt_number)).with_for_update()
        )
    ).first()
    if original is None:
        return
    await add_line(
        session,
        {
            "line_id": f"REV-{original.line_id}",
            "payee_id": original.payee_id,
            "kind": LineKind.REVERSAL.value,
            "amount": domain.reversal_of(original.amount),
            "currency": original.currency,
            "earned_on": at.astimezone(UTC).date(),
            "source_ref": receipt_number,
            "reverses_line_id": original.line_id,
            "description": f"Reversal of the commission on {receipt_number}",
            "reason": reason,
            "rule_id": original.rule_id,
            "status": LineStatus.OPEN.value,
            "created_by": domain.SYSTEM,
            "created_at": at,
        },
    )


async def on_payment_cancelled(session: AsyncSession, envelope: Envelope) -> None:
    cancelled = parse_data(envelope, PaymentCancelled)
    reason = f"payment cancelled: {cancelled.reason}"
    await _reverse_commission(
        session, cancelled.receipt_number, PaymentStatus.CANCELLED, reason, cancelled.cancelled_at
    )


async def on_payment_status_changed(session: AsyncSession, envelope: Envelope) -> None:
    """Refunded (by the gateway, or a dispute lost) takes the commission back."""
    changed = parse_data(envelope, PaymentStatusChanged)
    if changed.status != PaymentStatus.REFUNDED:
        return
    await _reverse_commission(
        session, changed.receipt_number, PaymentStatus.REFUNDED, "payment refunded", changed.changed_at
    )


async def on_credit_note_refund_requested(session: AsyncSession, envelope: Envelope) -> None:
    """A refund line for the customer whose credit is to be paid back (a payee is made for them if needed)."""
    refund = parse_data(envelope, CreditNoteRefundRequested)
    currency = domain.currency_code(refund.amount.currency)
    payee_id = await customer_payee(
        session, refund.account_number, refund.consumer_name or refund.account_number, currency
    )
    await add_line(
        session,
        {
            "line_id": f"REF-{refund.refund_id or refund.credit_note_number}",
            "payee_id": payee_id,
            "kind": LineKind.REFUND.value,
            "amount": refund.amount.amount,
            "currency": currency,
            "earned_on": refund.requested_at.astimezone(UTC).date(),
            "source_ref": refund.credit_note_number,
            "description": f"Refund of credit note {refund.credit_note_number}",
            "reason": refund.reason,
            "status": LineStatus.OPEN.value,
            "created_by": refund.requested_by,
            "created_at": refund.requested_at,
        },
    )


async def on_gateway_payout_status_changed(session: AsyncSession, envelope: Envelope) -> None:
    await runs.apply_gateway_status(session, parse_data(envelope, GatewayPayoutStatusChanged))


async def on_payout_bank_status_reported(session: AsyncSession, envelope: Envelope) -> None:
    """A bank payout's outcome from its statement line (a command on payouts.commands.v1)."""
    reported = parse_data(envelope, PayoutBankStatusReported)
    await runs.report_bank_status(
        session, reported.payout_id, reported.status, reason=reported.reason, actor=reported.reported_by
    )


def subscriptions() -> list[Subscription]:
    paid: dict[str, EventHandler] = {
        "payment.posted": on_payment_posted,
        "payment.cancelled": on_payment_cancelled,
        "payment.status_changed": on_payment_status_changed,
    }
    return [
        Subscription(
            "payments", Topic.PAYMENTS_EVENTS, paid, batch_handler=batches.PaymentBatches(paid).on_payments_batch
        ),
        Subscription(
            "creditnotes", Topic.CREDITNOTES_EVENTS, {"credit_note.refund_requested": on_credit_note_refund_requested}
        ),
        Subscription(
            "gateway", Topic.GATEWAY_EVENTS, {"gateway.payout_status_changed": on_gateway_payout_status_changed}
        ),
        Subscription(
            "commands", Topic.PAYOUTS_COMMANDS, {"payout.bank_status_reported": on_payout_bank_status_reported}
        ),
    ]
