"""Payouts' consumer of payments' events a delivery batch at a time.

Payouts keeps every posted payment (the volume a tiered commission is worked out on, and what a cancellation or
refund reverses) and accrues a commission on those an agent collected. One event at a time cost two statements
for each payment no agent earns on, and eight for one an agent does, for every payment of a lockbox file or a
morning at the counters. Here a run of consecutive `payment.posted` events takes a fixed handful of statements:
one read of the agents of the run's channels and one insert of the payments; for the ones agents collected, the
agents' locks in payee order, one read of their rules and one of their month-to-date figures, then the
commissions worked out in the run's order (each payment's month to date is the stored one plus the run's earlier
payments and commissions, as one event at a time would read it), and one insert of the lines and one of their
events. Other event types (cancellations, status changes) are applied by their own handlers, in their place, so
the order within a partition holds. Anything unusual (a commission line already there) raises, and the batch goes
one event at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Date, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.payouts import domain, earning
from services.payouts.commands import line_event
from services.payouts.domain import LineKind
from services.payouts.storage import lines, payees, payments
from services.payouts.storage import rules as rules_table
from shared.contracts import PaymentStatus, Topic, parse_data
from shared.contracts.events import PaymentPosted
from shared.messaging import Applying, EventHandler, apply_in_runs
from shared.outbox import Outgoing, stage_all

POSTED = "payment.posted"

# Executed with many rows: compiled once and cached, where `.values([...])` would compile each time.
_ADD_PAYMENTS = pg_insert(payments).on_conflict_do_nothing().returning(payments.c.receipt_number)
_ADD_LINES = pg_insert(lines).on_conflict_do_nothing().returning(lines.c.line_id)


class PaymentBatches:
    """The batch handler of payouts' payments consumer; `handlers` are its per-event handlers."""

    def __init__(self, handlers: Mapping[str, EventHandler]) -> None:
        self.handlers = handlers

    async def on_payments_batch(self, session: AsyncSession, batch: Sequence[Applying]) -> None:
        await apply_in_runs(session, batch, (POSTED,), self.posted, self.handlers)

    async def posted(self, session: AsyncSession, run: Sequence[Applying]) -> None:
        """A run of `payment.posted`: every payment inserted at once, the commissions of the new ones worked out."""
        announced = [(applying, parse_data(applying.envelope, PaymentPosted)) for applying in run]
        c = payees.c
        channels = sorted({posted.channel for _, posted in announced})
        agents = [
            domain.Agent(r.payee_id, r.payee_group, r.agent_channel, r.agent_user)
            for r in await session.execute(
                select(c.payee_id, c.payee_group, c.agent_channel, c.agent_user).where(c.agent_channel.in_(channels))
            )
        ]
        earners = {
            posted.receipt_number: agent
            for _, posted in announced
            if agents and (agent := domain.agent_for(agents, posted.channel, posted.received_by)) is not None
        }
        months: dict[MonthKey, domain.MonthToDate] = {}
        if earners:
            # Taken, and the month's figures read, before the run's payments count in them.
            for payee_id in sorted({agent.payee_id for agent in earners.values()}):
                await session.execute(earning.payee_lock(payee_id))
            months = await _months_to_date(
                session, [(p, earners[p.receipt_number]) for _, p in announced if p.receipt_number in earners]
            )
        rows = []
        for _, posted in announced:
            agent = earners.get(posted.receipt_number)
            rows.append(_payment_row(posted, agent.payee_id if agent else None))
        new = set((await session.execute(_ADD_PAYMENTS, rows)).scalars())
        if not earners:
            return
        rules = await _rules_of(session, set(earners.values()))
        accrued: list[dict[str, Any]] = []
        staged: list[Outgoing] = []
        for applying, posted in announced:
            agent = earners.get(posted.receipt_number)
            if agent is None or posted.receipt_number not in new:
                continue
            new.discard(posted.receipt_number)  # the same payment announced twice in a run counts once
            key = (agent.payee_id, posted.amount.currency, domain.month_of(posted.payment_date)[0])
            month = months.get(key, domain.MonthToDate())
            months[key] = domain.MonthToDate(month.volume + posted.amount.amount, month.commission)
            rule = domain.choose_rule(rules, payee_id=agent.payee_id, group=agent.payee_group, day=posted.payment_date)
            if rule is None:
                continue
            commission = domain.commission_for(rule, posted.amount.amount, posted.amount.currency, month)
            if commission.amount == 0:
                continue
            months[key] = domain.MonthToDate(month.volume + posted.amount.amount, month.commission + commission.amount)
            line = earning.commission_line(posted, agent.payee_id, rule, month, commission)
            accrued.append(line)
            staged.append(Outgoing(Topic.PAYOUTS_EVENTS, line_event(line), applying.context))
        if accrued:
            added = (await session.execute(_ADD_LINES, accrued)).scalars().all()
            if len(added) != len(accrued):
                raise RuntimeError("a commission line was already there: applying the batch one event at a time")
            await stage_all(session, staged)


def _payment_row(posted: PaymentPosted, payee_id: str | None) -> dict[str, Any]:
    return {
        "receipt_number": posted.receipt_number,
        "payment_id": posted.payment_id,
        "account_number": posted.consumer.account_number,
        "channel": posted.channel,
        "received_by": posted.received_by,
        "amount": posted.amount.amount,
        "currency": posted.amount.currency,
        "payment_date": posted.payment_date,
        "status": PaymentStatus.POSTED,
        "payee_id": payee_id,
    }


MonthKey = tuple[str, str, date]  # payee, currency, first day of the month


async def _months_to_date(
    session: AsyncSession, earning_payments: Sequence[tuple[PaymentPosted, domain.Agent]]
) -> dict[MonthKey, domain.MonthToDate]:
    """Each payee's collected volume (payments still counting) and commissions, per currency and month, as stored:
    what `earning.month_to_date` reads for the run's first payment of each."""
    keys = {(a.payee_id, p.amount.currency, domain.month_of(p.payment_date)[0]) for p, a in earning_payments}
    payee_ids = sorted({k[0] for k in keys})
    start = min(k[2] for k in keys)
    end = domain.month_of(max(k[2] for k in keys))[1]
    p, ln = payments.c, lines.c
    month = func.date_trunc("month", p.payment_date).cast(Date)
    volumes = await session.execute(
        select(p.payee_id, p.currency, month, func.sum(p.amount))
        .where(p.payee_id.in_(payee_ids), p.status == PaymentStatus.POSTED)
        .where(p.payment_date >= start, p.payment_date < end)
        .group_by(p.payee_id, p.currency, month)
    )
    earned_month = func.date_trunc("month", ln.earned_on).cast(Date)
    earned = await session.execute(
        select(ln.payee_id, ln.currency, earned_month, func.sum(ln.amount))
        .where(ln.payee_id.in_(payee_ids), ln.kind == LineKind.COMMISSION)
        .where(ln.earned_on >= start, ln.earned_on < end)
        .group_by(ln.payee_id, ln.currency, earned_month)
    )
    found: dict[MonthKey, domain.MonthToDate] = {}
    for payee_id, currency, first, volume in volumes:
        found[(payee_id, currency, first)] = domain.MonthToDate(Decimal(volume), domain.ZERO)
    for payee_id, currency, first, commission in earned:
        before = found.get((payee_id, currency, first), domain.MonthToDate())
        found[(payee_id, currency, first)] = domain.MonthToDate(before.volume, Decimal(commission))
    return found


async def _rules_of(session: AsyncSession, agents: set[domain.Agent]) -> list[domain.CommissionRule]:
    """Every rule of the agents' own and their groups': `domain.choose_rule` picks the one in force per payment."""
    scope: ColumnElement[bool] = rules_table.c.payee_id.in_(sorted({a.payee_id for a in agents}))
    groups = sorted({a.payee_group for a in agents if a.payee_group})
    if groups:
        scope = scope | rules_table.c.payee_group.in_(groups)
    return [earning.rule_of(r) for r in await session.execute(select(rules_table).where(scope))]
