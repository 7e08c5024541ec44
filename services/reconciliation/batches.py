"""Reconciliation's consumer of payments' events a delivery batch at a time.

Every posted payment is expected somewhere: a counter payment in its branch's deposit, a transfer at the bank by
its invoice, an online payment in a Stripe payout (through its payment intent). One event at a time cost two
statements each for every payment of a lockbox file or a morning at the counters. Here a run of consecutive
`payment.posted` events takes one insert of the payments (returning which are new), one insert of the expected
bank items of the new ones not paid online, and for the new online ones one read of the unlinked payment intents
of their accounts and items, linked in the run's order as one event at a time would (each payment the lowest
matching intent not yet taken), then written with two statements. Other event types (cancellations, status
changes) are applied by their own handlers, in their place, so the order within a partition holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.reconciliation.storage import expected_items, gateway_intents, payments
from shared.contracts import parse_data
from shared.contracts.events import PaymentPosted
from shared.messaging import Applying, EventHandler, apply_in_runs

if TYPE_CHECKING:
    from services.reconciliation.projections import ExpectedSide

POSTED = "payment.posted"

# Executed with many rows: compiled once and cached, where `.values([...])` would compile each time.
_ADD_PAYMENTS = pg_insert(payments).on_conflict_do_nothing().returning(payments.c.payment_id)
_ADD_ITEMS = pg_insert(expected_items).on_conflict_do_nothing()
_LINK_PAYMENT = (
    update(payments)
    .where(payments.c.payment_id == bindparam("b_payment_id"))
    .values(payment_intent_id=bindparam("b_intent"))
)
_LINK_ITEMS = (
    update(expected_items)
    .where(expected_items.c.payment_intent_id == bindparam("b_intent"), expected_items.c.payment_id.is_(None))
    .values(payment_id=bindparam("b_payment_id"))
)


class PaymentBatches:
    """The batch handler of reconciliation's payments consumer: `expected` makes a payment's rows (the same
    `ExpectedSide` the per-event handler uses), `handlers` are the per-event handlers."""

    def __init__(self, expected: ExpectedSide, handlers: Mapping[str, EventHandler]) -> None:
        self.expected = expected
        self.handlers = handlers

    async def on_payments_batch(self, session: AsyncSession, batch: Sequence[Applying]) -> None:
        await apply_in_runs(session, batch, (POSTED,), self.posted, self.handlers)

    async def posted(self, session: AsyncSession, run: Sequence[Applying]) -> None:
        announced = [parse_data(applying.envelope, PaymentPosted) for applying in run]
        rows = [self.expected.payment_row(posted) for posted in announced]
        new = set((await session.execute(_ADD_PAYMENTS, rows)).scalars())
        fresh: list[PaymentPosted] = []
        for posted in announced:
            if posted.payment_id in new:
                new.discard(posted.payment_id)  # the same posting announced twice in a run counts once
                fresh.append(posted)
        items = [self.expected.expected_item(p) for p in fresh if p.channel != self.expected.online]
        if items:
            await session.execute(_ADD_ITEMS, items)
        online = [p for p in fresh if p.channel == self.expected.online]
        if online:
            await self._link_online(session, online)

    async def _link_online(self, session: AsyncSession, online: Sequence[PaymentPosted]) -> None:
        """Each online payment linked to the lowest unlinked intent of its account, item and amount, in order."""
        pairs = sorted({(p.consumer.account_number, p.item.item_reference) for p in online})
        g = gateway_intents.c
        unlinked = list(
            await session.execute(
                select(g.payment_intent_id, g.account_number, g.item_reference, g.amount)
                .outerjoin(payments, payments.c.payment_intent_id == g.payment_intent_id)
                .where(tuple_(g.account_number, g.item_reference).in_(pairs), payments.c.payment_id.is_(None))
                .order_by(g.payment_intent_id)
            )
        )
        links: list[dict[str, str]] = []
        for posted in online:
            key = (posted.consumer.account_number, posted.item.item_reference, posted.amount.amount)
            intent = next((r for r in unlinked if (r.account_number, r.item_reference, r.amount) == key), None)
            if intent is not None:
                unlinked.remove(intent)
                links.append({"b_payment_id": posted.payment_id, "b_intent": intent.payment_intent_id})
        if links:
            await session.execute(_LINK_PAYMENT, links)
            await session.execute(_LINK_ITEMS, links)
