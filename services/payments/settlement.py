"""Settlement at the bank (`reconciliation.events.v1`): a payment whose money reconciliation found on the bank
statement (three ways for Stripe: payment, payout, bank line) turns Settled.

The bank statement is the last word on settlement, so Settled ranks above every gateway settlement status
(`domain.settlement_moves_forward`): a late gateway event never moves it back, and a repeated or late
reconciliation of a payment already Settled changes nothing but the audit trail.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments import domain
from services.payments.commands import SYSTEM, announce_status
from services.payments.storage import audit_log, payments
from shared import audit
from shared.contracts import Envelope, Topic, parse_data
from shared.contracts.events import PaymentSettlementReconciled
from shared.errors import NotFound
from shared.messaging import Subscription


async def _payment(session: AsyncSession, event: PaymentSettlementReconciled) -> Row[Any]:
    # Reconciliation may know an online payment only by its payment intent (the gateway leg came first).
    if event.payment_id:
        where = payments.c.payment_id == event.payment_id
    elif event.payment_intent_id:
        where = payments.c.payment_intent_id == event.payment_intent_id
    else:
        raise NotFound(
            "unknown_payment", "the settlement names neither a payment nor a payment intent", field="payment_id"
        )
    row = (await session.execute(select(payments).where(where).with_for_update())).first()
    if row is None:
        raise NotFound(
            "unknown_payment",
            f"no payment {event.payment_id or event.payment_intent_id} to settle",
            field="payment_id" if event.payment_id else "payment_intent_id",
        )
    return row


async def on_payment_settlement_reconciled(session: AsyncSession, envelope: Envelope) -> None:
    event = parse_data(envelope, PaymentSettlementReconciled)
    payment = await _payment(session, event)
    if payment.status in domain.MONEY_WENT_BACK or not domain.settlement_moves_forward(
        payment.settlement_status, domain.SETTLED
    ):
        await audit.record(
            session,
            audit_log,
            actor=SYSTEM,
            action="reconciliation.event_ignored",
            subject=payment.payment_id,
            before={"status": payment.status, "settlement_status": payment.settlement_status},
            after={"settlement_status": domain.SETTLED, "match_id": event.match_id},
            reason="the payment is already settled, or its money went back",
        )
        return
    await session.execute(
        update(payments)
        .where(payments.c.payment_id == payment.payment_id)
        # The gateway's paid payout may already have set when it settled; the bank's date does not replace it.
        .values(settlement_status=domain.SETTLED, settled_at=payment.settled_at or event.settled_at)
    )
    updated = (await session.execute(select(payments).where(payments.c.payment_id == payment.payment_id))).one()
    await announce_status(session, updated, payment.status, at=event.settled_at)


def subscriptions() -> list[Subscription]:
    """The event consumer of `reconciliation.events.v1`."""
    return [
        Subscription(
            "reconciliation",
            Topic.RECONCILIATION_EVENTS,
            {"payment.settlement_reconciled": on_payment_settlement_reconciled},
        )
    ]
