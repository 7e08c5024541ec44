"""Payouts' consumer of payments' events a delivery batch at a time.

Payouts keeps every posted payment (the volume a tiered commission is worked out on, and what a cancellation or
refund reverses), but only the payments an agent collected earn anything. One event at a time cost two
statements each (the agent looked up, the payment inserted) for every payment of a lockbox file or a morning at
the counters, though none of them earns. Here a run of consecutive `payment.posted` events takes one read of the
agents of the run's channels and one insert of the payments no agent earns on. A payment an agent collected goes
through `on_payment_posted` in its place, one at a time: its commission depends on the agent's month to date,
payment by payment. Other event types (cancellations, status changes) are applied by their own handlers, in
their place, so the order within a partition holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from opentelemetry import context as otel_context
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.payouts import domain
from services.payouts.storage import payees, payments
from shared.contracts import PaymentStatus, parse_data
from shared.contracts.events import PaymentPosted
from shared.messaging import Applying, EventHandler, apply_in_runs

POSTED = "payment.posted"

# Executed with many rows: compiled once and cached, where `.values([...])` would compile each time.
_ADD_PAYMENTS = pg_insert(payments).on_conflict_do_nothing()


class PaymentBatches:
    """The batch handler of payouts' payments consumer; `handlers` are its per-event handlers."""

    def __init__(self, handlers: Mapping[str, EventHandler]) -> None:
        self.handlers = handlers

    async def on_payments_batch(self, session: AsyncSession, batch: Sequence[Applying]) -> None:
        await apply_in_runs(session, batch, (POSTED,), self.posted, self.handlers)

    async def posted(self, session: AsyncSession, run: Sequence[Applying]) -> None:
        """A run of `payment.posted`: payments no agent earns on inserted at once, the others one by one."""
        announced = [(applying, parse_data(applying.envelope, PaymentPosted)) for applying in run]
        c = payees.c
        channels = sorted({posted.channel for _, posted in announced})
        agents = [
            domain.Agent(r.payee_id, r.payee_group, r.agent_channel, r.agent_user)
            for r in await session.execute(
                select(c.payee_id, c.payee_group, c.agent_channel, c.agent_user).where(c.agent_channel.in_(channels))
            )
        ]
        plain: list[dict[str, object]] = []
        earning: list[Applying] = []
        for applying, posted in announced:
            if agents and domain.agent_for(agents, posted.channel, posted.received_by) is not None:
                earning.append(applying)
                continue
            plain.append(
                {
                    "receipt_number": posted.receipt_number,
                    "payment_id": posted.payment_id,
                    "account_number": posted.consumer.account_number,
                    "channel": posted.channel,
                    "received_by": posted.received_by,
                    "amount": posted.amount.amount,
                    "currency": posted.amount.currency,
                    "payment_date": posted.payment_date,
                    "status": PaymentStatus.POSTED,
                    "payee_id": None,
                }
            )
        # No agent's month to date counts these (payee_id is empty), so they may go in before the earning ones.
        if plain:
            await session.execute(_ADD_PAYMENTS, plain)
        for applying in earning:
            token = otel_context.attach(applying.context)
            try:
                await self.handlers[POSTED](session, applying.envelope)
            finally:
                otel_context.detach(token)
