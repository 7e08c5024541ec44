"""Payouts' event handlers: commissions from the payments agents collect, their reversals, refund lines from
credit-note refund requests, and payout statuses from the gateway's transfer and payout webhooks."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.payouts import batches, domain, runs
from services.payouts.commands import add_line
from services.payouts.domain import LineKind, LineStatus
from services.payouts.payees import customer_payee
from services.payouts.storage import lines, payees, payments, rules
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


def commission_line_id(receipt_number: str) -> str:
    return f"COM-{receipt_number}"


async def agent_for(session: AsyncSession, channel: str, received_by: str) -> Any:
    """The agent payee earning on a payment: the one linked to its channel and user, else to the channel alone."""
    c = payees.c
    statement = (
        select(c.payee_id, c.payee_group)
        .where(c.agent_channel == channel, (c.agent_user == received_by) | c.agent_user.is_(None))
        .order_by(c.agent_user.is_(None), c.payee_id)  # as domain.agent_for picks for a batch
        .limit(1)
    )
    return (await session.execute(statement)).first()


def _rule(row: Any) -> domain.CommissionRule:
    return domain.CommissionRule(
        rule_id=row.rule_id,
        kind=domain.RuleKind(row.kind),
        currency=row.currency,
        effective_from=row.effective_from,
        effective_to=row.effective_to,
        percent=row.percent,
        fixed=row.fixed,
        tiers=tuple(domain.Tier(Decimal(t["from_volume"]), Decimal(t["percent"])) for t in row.tiers),
        minimum_per_payment=row.minimum_per_payment,
        cap_per_payment=row.cap_per_payment,
        cap_per_month=row.cap_per_month,
        payee_id=row.payee_id,
        payee_group=row.payee_group,
    )


async def rule_in_force(
    session: AsyncSession, payee_id: str, group: str | None, day: date
) -> domain.CommissionRule | None:
    scope = rules.c.payee_id == payee_id
    if group:
        scope = scope | (rules.c.payee_group == group)
    found = [_rule(r) for r in await session.execute(select(rules).where(scope))]
    return domain.choose_rule(found, payee_id=payee_id, group=group, day=day)


async def month_to_date(
    session: AsyncSession, payee_id: str, currency: str, day: date, receipt: str
) -> domain.MonthToDate:
    """The payee's collected volume (payments still counting) and commissions earlier in `day`'s month."""
    start, end = domain.month_of(day)
    volume = (
        await session.execute(
            select(func.coalesce(func.sum(payments.c.amount), 0)).where(
                payments.c.payee_id == payee_id,
                payments.c.currency == currency,
                payments.c.payment_date >= start,
                payments.c.payment_date < end,
                payments.c.status == PaymentStatus.POSTED,
                payments.c.receipt_number != receipt,
            )
        )
    ).scalar_one()
    earned = (
        await session.execute(
            select(func.coalesce(func.sum(lines.c.amount), 0)).where(
                lines.c.payee_id == payee_id,
                lines.c.currency == currency,
                lines.c.kind == LineKind.COMMISSION,
                lines.c.earned_on >= start,
                lines.c.earned_on < end,
            )
        )
    ).scalar_one()
    return domain.MonthToDate(Decimal(volume), Decimal(earned))


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
    # One payee's month-to-date figures are read and extended by one transaction at a time.
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtext(f"payouts.payee:{agent.payee_id}"))))
    rule = await rule_in_force(session, agent.payee_id, agent.payee_group, posted.payment_date)
    if rule is None:
        return
    currency = posted.amount.currency
    month = await month_to_date(session, agent.payee_id, currency, posted.payment_date, posted.receipt_number)
    commission = domain.commission_for(rule, posted.amount.amount, currency, month)
    if commission.amount == 0:
        return
    await add_line(
        session,
        {
            "line_id": commission_line_id(posted.receipt_number),
            "payee_id": agent.payee_id,
            "kind": LineKind.COMMISSION.value,
            "amount": commission.amount,
            "currency": currency,
            "earned_on": posted.payment_date,
            "source_ref": posted.receipt_number,
            "description": f"Commission on {posted.receipt_number} ({posted.channel}, {posted.received_by})",
            "rule_id": rule.rule_id,
            "calculation": {
                "rule": rule.describe(),
                "payment": format(posted.amount.amount, "f"),
                "month_volume_before": format(month.volume, "f"),
                "month_commission_before": format(month.commission, "f"),
                "steps": commission.explanation,
                "rounding": domain.ROUNDING_RULE,
            },
            "status": LineStatus.OPEN.value,
            "created_by": domain.SYSTEM,
            "created_at": posted.posted_at,
        },
    )


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
