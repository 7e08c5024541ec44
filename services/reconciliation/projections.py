"""The expected side, kept from other services' events: counter takings (one deposit per branch, day and kind),
online payments and their payment intents, and Stripe payouts with their balance transactions."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.reconciliation import batches, commands, domain
from services.reconciliation.domain import ExceptionKind, ItemStatus
from services.reconciliation.settings import ReconciliationSettings
from services.reconciliation.storage import expected_items, gateway_intents, payments, payouts
from shared.contracts import Envelope, Topic, parse_data
from shared.contracts.events import (
    GatewayPaymentStatusChanged,
    GatewayPayoutListed,
    PaymentCancelled,
    PaymentPosted,
    PaymentStatusChanged,
)
from shared.messaging import EventHandler, Subscription

ONLINE = "Online"
CLOSED_STATUSES = ("Cancelled", "Refunded", "Failed")


class ExpectedSide:
    """Handlers that need the service's settings (windows per channel, counter methods, branches)."""

    def __init__(self, settings: ReconciliationSettings) -> None:
        self.settings = settings

    def window(self, channel: str) -> int:
        return self.settings.window_days.get(channel, self.settings.default_window_days)

    online = ONLINE

    def payment_row(self, posted: PaymentPosted) -> dict[str, Any]:
        """The payment as payments announced it."""
        return {
            "payment_id": posted.payment_id,
            "receipt_number": posted.receipt_number,
            "account_number": posted.consumer.account_number,
            "channel": posted.channel,
            "method": posted.method,
            "amount": posted.amount.amount,
            "currency": posted.amount.currency,
            "cash_received": posted.cash_received.amount if posted.cash_received else None,
            "change_given": posted.change_given.amount if posted.change_given else None,
            "received_by": posted.received_by,
            "payment_date": posted.payment_date,
            "status": posted.status,
        }

    def expected_item(self, posted: PaymentPosted) -> dict[str, Any]:
        """What the bank should show for a payment not paid online: a counter deposit or a transfer."""
        counter = domain.is_counter_cash(posted.method, self.settings.counter_methods)
        branch = self.settings.teller_branches.get(posted.received_by, posted.channel)
        return {
            "item_id": f"pay:{posted.payment_id}",
            "kind": "counter" if counter else "transfer",
            "channel": posted.channel,
            # A transfer names its invoice in the remittance text; a counter deposit is found by its group.
            "reference": posted.payment_id if counter else posted.item.item_reference,
            "group_key": domain.deposit_group(branch, posted.payment_date, posted.method) if counter else None,
            "amount": posted.amount.amount,
            "currency": posted.amount.currency,
            "origin_date": posted.payment_date,
            "window_days": self.window(posted.channel),
            "status": ItemStatus.EXPECTED,
            "payment_id": posted.payment_id,
            "account_number": posted.consumer.account_number,
        }

    async def on_payment_posted(self, session: AsyncSession, envelope: Envelope) -> None:
        posted = parse_data(envelope, PaymentPosted)
        first = (
            await session.execute(
                pg_insert(payments)
                .values(**self.payment_row(posted))
                .on_conflict_do_nothing()
                .returning(payments.c.payment_id)
            )
        ).first()
        if first is None:
            return  # the same posting announced again
        if posted.channel == ONLINE:
            await self._link_online(session, posted)
            return  # its money reaches the bank in a Stripe payout (gateway.payout_listed)
        await session.execute(pg_insert(expected_items).values(**self.expected_item(posted)).on_conflict_do_nothing())

    async def _link_online(self, session: AsyncSession, posted: PaymentPosted) -> None:
        # payment.posted does not carry the payment intent: the one unlinked intent of the same account, item
        # and amount is it (the gateway event may also come second: on_gateway_payment_status_changed links then).
        intent = (
            await session.execute(
                select(gateway_intents.c.payment_intent_id)
                .outerjoin(payments, payments.c.payment_intent_id == gateway_intents.c.payment_intent_id)
                .where(
                    gateway_intents.c.account_number == posted.consumer.account_number,
                    gateway_intents.c.item_reference == posted.item.item_reference,
                    gateway_intents.c.amount == posted.amount.amount,
                    payments.c.payment_id.is_(None),
                )
                .order_by(gateway_intents.c.payment_intent_id)
                .limit(1)
            )
        ).scalar()
        if intent is not None:
            await self._link(session, posted.payment_id, intent)

    async def _link(self, session: AsyncSession, payment_id: str, intent: str) -> None:
        await session.execute(
            update(payments).where(payments.c.payment_id == payment_id).values(payment_intent_id=intent)
        )
        await session.execute(
            update(expected_items)
            .where(expected_items.c.payment_intent_id == intent, expected_items.c.payment_id.is_(None))
            .values(payment_id=payment_id)
        )

    async def on_gateway_payment_status_changed(self, session: AsyncSession, envelope: Envelope) -> None:
        event = parse_data(envelope, GatewayPaymentStatusChanged)
        await session.execute(
            pg_insert(gateway_intents)
            .values(
                payment_intent_id=event.payment_intent_id,
                account_number=event.account_number,
                item_reference=event.item_reference,
                amount=event.amount.amount,
                currency=event.amount.currency,
            )
            .on_conflict_do_nothing()
        )
        linked = (
            await session.execute(
                select(payments.c.payment_id).where(payments.c.payment_intent_id == event.payment_intent_id)
            )
        ).first()
        if linked is not None:
            return
        payment_id = (
            await session.execute(
                select(payments.c.payment_id)
                .where(
                    payments.c.channel == ONLINE,
                    payments.c.payment_intent_id.is_(None),
                    payments.c.account_number == event.account_number,
                    payments.c.amount == event.amount.amount,
                )
                .order_by(payments.c.payment_id)
                .limit(1)
            )
        ).scalar()
        if payment_id is not None:
            await self._link(session, payment_id, event.payment_intent_id)

    async def on_payout_listed(self, session: AsyncSession, envelope: Envelope) -> None:
        """A payout's balance transactions become expected items grouped by the payout (net of Stripe's fees);
        a charge whose amount differs from its payment's is an exception (leg one of the three-way match)."""
        payout = parse_data(envelope, GatewayPayoutListed)
        now = datetime.now(UTC)
        gross = sum((t.amount.amount for t in payout.balance_transactions), Decimal(0))
        fees = sum((t.fee.amount for t in payout.balance_transactions), Decimal(0))
        first = (
            await session.execute(
                pg_insert(payouts)
                .values(
                    payout_id=payout.payout_id,
                    amount=payout.amount.amount,
                    currency=payout.amount.currency,
                    arrival_date=payout.arrival_date,
                    status=payout.status,
                    gross=gross,
                    fees=fees,
                    transaction_count=len(payout.balance_transactions),
                    received_at=now,
                )
                .on_conflict_do_nothing()
                .returning(payouts.c.payout_id)
            )
        ).first()
        if first is None:
            await session.execute(
                update(payouts).where(payouts.c.payout_id == payout.payout_id).values(status=payout.status)
            )
            return
        net = sum((t.net.amount for t in payout.balance_transactions), Decimal(0))
        if net != payout.amount.amount:
            await commands.raise_exception(
                session,
                ExceptionKind.AMOUNT_DIFFERENCE,
                f"payout:{payout.payout_id}",
                payout.amount.amount - net,
                payout.amount.currency,
                f"payout {payout.payout_id} is {payout.amount.amount} but its balance transactions net {net}",
            )
        intents = [t.payment_intent_id for t in payout.balance_transactions if t.payment_intent_id]
        known = {
            r.payment_intent_id: r
            for r in await session.execute(
                select(gateway_intents).where(gateway_intents.c.payment_intent_id.in_(intents))
            )
        }
        linked = dict(
            (
                await session.execute(
                    select(payments.c.payment_intent_id, payments.c.payment_id).where(
                        payments.c.payment_intent_id.in_(intents)
                    )
                )
            ).all()
        )
        for t in payout.balance_transactions:
            intent = known.get(t.payment_intent_id) if t.payment_intent_id else None
            await session.execute(
                pg_insert(expected_items)
                .values(
                    item_id=f"txn:{t.balance_transaction_id}",
                    kind="payout_txn",
                    channel=ONLINE,
                    reference=t.payment_intent_id or t.balance_transaction_id,
                    group_key=payout.payout_id,
                    amount=t.net.amount,
                    gateway_fee=t.fee.amount,
                    currency=t.net.currency,
                    origin_date=payout.arrival_date,
                    window_days=self.window(ONLINE),
                    status=ItemStatus.EXPECTED,
                    payment_id=linked.get(t.payment_intent_id),
                    payment_intent_id=t.payment_intent_id,
                    account_number=t.account_number or (intent.account_number if intent else None),
                )
                .on_conflict_do_nothing()
            )
            if t.type == "charge" and t.payment_intent_id:
                if intent is None:
                    detail = f"charge {t.source_id} in payout {payout.payout_id}: payment intent unknown here"
                elif intent.amount != t.amount.amount:
                    detail = f"charge {t.source_id} is {t.amount.amount}, its payment {intent.amount}"
                else:
                    await session.execute(
                        update(gateway_intents)
                        .where(gateway_intents.c.payment_intent_id == t.payment_intent_id)
                        .values(payout_id=payout.payout_id)
                    )
                    continue
                await commands.raise_exception(
                    session,
                    ExceptionKind.AMOUNT_DIFFERENCE,
                    f"item:txn:{t.balance_transaction_id}",
                    t.amount.amount - (intent.amount if intent else Decimal(0)),
                    t.amount.currency,
                    detail,
                    now=now,
                )
        await commands.run_reconciliation(session, self.settings, today=now.date())


async def on_payment_cancelled(session: AsyncSession, envelope: Envelope) -> None:
    """A cancelled payment is no longer expected at the bank; one already matched becomes an exception."""
    cancelled = parse_data(envelope, PaymentCancelled)
    await _payment_gone(session, cancelled.payment_id, "Cancelled", cancelled.amount.amount, cancelled.amount.currency)


async def on_payment_status_changed(session: AsyncSession, envelope: Envelope) -> None:
    changed = parse_data(envelope, PaymentStatusChanged)
    if changed.status not in CLOSED_STATUSES:
        return
    row = (await session.execute(select(payments).where(payments.c.payment_id == changed.payment_id))).first()
    if row is not None:
        await _payment_gone(session, changed.payment_id, changed.status, row.amount, row.currency)


async def _payment_gone(session: AsyncSession, payment_id: str, status: str, amount: Decimal, currency: str) -> None:
    await session.execute(update(payments).where(payments.c.payment_id == payment_id).values(status=status))
    item_id = f"pay:{payment_id}"
    removed = await session.execute(
        expected_items.delete()
        .where(and_(expected_items.c.item_id == item_id, expected_items.c.status.in_(commands.OPEN_ITEM)))
        .returning(expected_items.c.item_id)
    )
    if removed.first() is None:
        matched = (
            await session.execute(select(expected_items.c.match_id).where(expected_items.c.item_id == item_id))
        ).scalar()
        if matched:
            await commands.raise_exception(
                session,
                ExceptionKind.AMOUNT_DIFFERENCE,
                f"item:{item_id}",
                amount,
                currency,
                f"payment {payment_id} was {status} after its money was matched at the bank ({matched})",
            )


def subscriptions(settings: ReconciliationSettings) -> list[Subscription]:
    side = ExpectedSide(settings)
    paid: dict[str, EventHandler] = {
        "payment.posted": side.on_payment_posted,
        "payment.cancelled": on_payment_cancelled,
        "payment.status_changed": on_payment_status_changed,
    }
    return [
        Subscription(
            "payments",
            Topic.PAYMENTS_EVENTS,
            paid,
            batch_handler=batches.PaymentBatches(side, paid).on_payments_batch,
        ),
        Subscription(
            "gateway",
            Topic.GATEWAY_EVENTS,
            {
                "gateway.payment_status_changed": side.on_gateway_payment_status_changed,
                "gateway.payout_listed": side.on_payout_listed,
            },
        ),
        Subscription(
            "bank",
            Topic.RECONCILIATION_COMMANDS,
            {"bank.statement_line_received": commands.on_bank_statement_line_received},
        ),
    ]
