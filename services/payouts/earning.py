"""A commission for the agent who collected a payment: who earns it, under which rule, on what month to date, and
the line that records it with its calculation. Shared by the per-event handler and the batch handler."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.payouts import domain
from services.payouts.domain import LineKind, LineStatus
from services.payouts.storage import lines, payees, payments, rules
from shared.contracts import PaymentStatus
from shared.contracts.events import PaymentPosted


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


def rule_of(row: Any) -> domain.CommissionRule:
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
    found = [rule_of(r) for r in await session.execute(select(rules).where(scope))]
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


def payee_lock(payee_id: str) -> Any:
    """One payee's month-to-date figures are read and extended by one transaction at a time."""
    return select(func.pg_advisory_xact_lock(func.hashtext(f"payouts.payee:{payee_id}")))


def commission_line(
    posted: PaymentPosted,
    payee_id: str,
    rule: domain.CommissionRule,
    month: domain.MonthToDate,
    commission: domain.Commission,
) -> dict[str, Any]:
    """The earning line of a payment's commission, with how it was worked out."""
    return {
        "line_id": commission_line_id(posted.receipt_number),
        "payee_id": payee_id,
        "kind": LineKind.COMMISSION.value,
        "amount": commission.amount,
        "currency": posted.amount.currency,
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
    }
