"""Online payments follow the gateway (`gateway.events.v1`), forward only.

The gateway's first event records the payment (Pending); later events move its status and settlement forward,
and a late or out-of-order one is kept in the audit trail and changes nothing. Like every command, each event
is applied in one transaction with the events it stages.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Row, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments import disputes, domain
from services.payments.commands import (
    SYSTEM,
    allocate,
    announce_posting,
    announce_status,
    emit,
    find_account,
    lock_item,
    next_numbers,
)
from services.payments.domain import Verification
from services.payments.queries import load_settings
from services.payments.storage import audit_log, credit_balances, payments
from shared import audit, ledger
from shared.contracts import Envelope, PaymentStatus, Topic, counts_as_collected, parse_data
from shared.contracts.events import (
    GatewayPaymentStatusChanged,
    GatewaySettlementStatusChanged,
    Money,
    PaymentPartiallyRefunded,
)
from shared.errors import NotFound
from shared.messaging import Subscription
from shared.money import quantize

ONLINE_CHANNEL = "Online"
OUT_OF_ORDER = "arrived out of order or after the fact: the payment has moved past it"


async def _online_payment(session: AsyncSession, payment_intent_id: str) -> Row[Any] | None:
    query = select(payments).where(payments.c.payment_intent_id == payment_intent_id).with_for_update()
    return (await session.execute(query)).first()


async def _payment_row(session: AsyncSession, payment_id: str, *, lock: bool = False) -> Row[Any]:
    query = select(payments).where(payments.c.payment_id == payment_id)
    return (await session.execute(query.with_for_update() if lock else query)).one()


async def on_gateway_payment_status_changed(session: AsyncSession, envelope: Envelope) -> None:
    event = parse_data(envelope, GatewayPaymentStatusChanged)
    # A dispute's later words (under review, won, lost) are applied by `disputes.py`, not by the status rank.
    disputing = event.gateway_status in domain.DISPUTE_GATEWAY_STATUSES
    incoming = PaymentStatus.DISPUTED if disputing else domain.online_status(event.gateway_status)
    account = await find_account(session, event.account_number)
    item = await lock_item(session, event.account_number, event.payment_type, event.item_reference)
    payment = await _online_payment(session, event.payment_intent_id)
    created = payment is None
    if payment is None:
        config = await load_settings(session)
        year = event.occurred_at.year
        amount = quantize(event.amount.amount, event.amount.currency)
        numbers = await next_numbers(session, config, year)
        payment_id = numbers["payment_id"]
        await session.execute(
            payments.insert().values(
                **numbers,
                account_number=event.account_number,
                consumer_name=account.name,
                payment_type=event.payment_type,
                item_reference=event.item_reference,
                channel=ONLINE_CHANNEL,
                method="Credit Card",
                amount=amount,
                currency=event.amount.currency,
                payment_date=event.occurred_at.date(),
                status=PaymentStatus.PENDING,
                verification=Verification.PENDING,
                received_by=SYSTEM,
                due=item.outstanding,
                applied=Decimal(0),
                outcome=domain.Analysis(due=item.outstanding, paid=amount).outcome,
                # Processing time counts from when the customer started paying, if the gateway says.
                recorded_at=event.initiated_at or event.occurred_at,
                online=True,
                payment_intent_id=event.payment_intent_id,
                gateway_status="created",
                webhook_status="Not Confirmed",
                settlement_status="N/A",
            )
        )
        payment = await _payment_row(session, payment_id, lock=True)
        await audit.record(
            session,
            audit_log,
            actor=SYSTEM,
            action="payment.recorded",
            subject=payment_id,
            after={"payment_intent_id": event.payment_intent_id},
        )
        if incoming is PaymentStatus.PENDING:
            await announce_status(session, payment, "", at=event.occurred_at)
            return

    current = PaymentStatus(payment.status)
    previous = "" if created else current
    if event.gateway_status == "partially_refunded" and not created:
        settled = await lock_item(session, payment.account_number, payment.payment_type, payment.item_reference)
        await _partial_refund(session, payment, settled, event)
        return
    if disputing:
        outcome = await disputes.on_gateway_dispute(
            session,
            payment,
            event.gateway_status,
            gateway_dispute_id=event.dispute_id or event.payment_intent_id,
            reason=event.dispute_reason,
            at=event.occurred_at,
        )
        if outcome == "ignored":
            await audit.record(
                session,
                audit_log,
                actor=SYSTEM,
                action="gateway.event_ignored",
                subject=payment.payment_id,
                before={"status": current},
                after={"gateway_status": event.gateway_status, "gateway_event_id": event.gateway_event_id},
                reason=OUT_OF_ORDER,
            )
        return
    if not domain.moves_forward(current, incoming):
        # Out of order or after the fact (e.g. failed after succeeded): kept in the audit, changes nothing.
        await audit.record(
            session,
            audit_log,
            actor=SYSTEM,
            action="gateway.event_ignored",
            subject=payment.payment_id,
            before={"status": current},
            after={"gateway_status": event.gateway_status, "gateway_event_id": event.gateway_event_id},
            reason=OUT_OF_ORDER,
        )
        return

    values: dict[str, Any] = {
        "status": incoming,
        "gateway_status": event.gateway_status,
        "webhook_status": event.webhook_status,
    }
    if incoming is PaymentStatus.POSTED:
        # Money taken by the gateway cannot be refused: beyond the threshold it becomes credit all the same.
        applied = domain.Analysis(due=item.outstanding, paid=payment.amount)
        values |= {
            "posted_at": event.occurred_at,
            "due": item.outstanding,
            "applied": min(payment.amount, item.outstanding),
            "outcome": applied.outcome,
        }
        if domain.settlement_moves_forward(payment.settlement_status, event.settlement_status):
            values["settlement_status"] = event.settlement_status
        await allocate(session, payment.account_number, item, min(payment.amount, item.outstanding))
    elif incoming is PaymentStatus.REFUNDED:
        # Refunded money is not going to be settled; what was refunded is all of it.
        values |= {"settlement_status": domain.NOT_SETTLED, "refunded": payment.amount}
        if counts_as_collected(current):
            # The item the payment settles now (an adjustment may have moved it since the gateway first saw it).
            settled = await lock_item(session, payment.account_number, payment.payment_type, payment.item_reference)
            await allocate(session, payment.account_number, settled, -payment.applied)
    await session.execute(update(payments).where(payments.c.payment_id == payment.payment_id).values(**values))
    updated = await _payment_row(session, payment.payment_id)
    if incoming is PaymentStatus.POSTED:
        await audit.record(
            session,
            audit_log,
            actor=SYSTEM,
            action="payment.posted",
            subject=payment.payment_id,
            after={"amount": payment.amount},
        )
        await announce_posting(session, updated, account, item)
    else:
        await announce_status(session, updated, previous, at=event.occurred_at)


async def _partial_refund(
    session: AsyncSession, payment: Row[Any], item: Row[Any], event: GatewayPaymentStatusChanged
) -> None:
    """Part of the payment went back: unused credit first, then what it settled (`shared.ledger.refund_split`).

    Stripe reports the total refunded so far, so a late or repeated report refunds nothing twice."""
    total = event.amount_refunded.amount if event.amount_refunded else None
    if total is None:
        # No amount, nothing to move: kept in the audit trail for staff to follow up.
        await audit.record(
            session,
            audit_log,
            actor=SYSTEM,
            action="payment.partially_refunded",
            subject=payment.payment_id,
            after={"refunded": None},
            reason="the gateway did not say how much was refunded",
        )
        return
    refund = total - payment.refunded
    if not counts_as_collected(payment.status) or refund <= 0 or total >= payment.amount:
        await audit.record(
            session,
            audit_log,
            actor=SYSTEM,
            action="gateway.event_ignored",
            subject=payment.payment_id,
            before={"status": payment.status, "refunded": payment.refunded},
            after={"gateway_status": event.gateway_status, "refunded": total},
            reason=OUT_OF_ORDER,
        )
        return
    unused = (
        await session.execute(
            select(func.coalesce(func.sum(credit_balances.c.remaining), 0)).where(
                credit_balances.c.receipt_number == payment.receipt_number, credit_balances.c.status == "Active"
            )
        )
    ).scalar_one()
    split = ledger.refund_split(refund, applied=payment.applied, unused_credit=Decimal(unused))
    await allocate(session, payment.account_number, item, -split.settled_reduction)
    await session.execute(
        update(payments)
        .where(payments.c.payment_id == payment.payment_id)
        .values(applied=payment.applied - split.settled_reduction, refunded=total)
    )
    await audit.record(
        session,
        audit_log,
        actor=SYSTEM,
        action="payment.partially_refunded",
        subject=payment.payment_id,
        before={"applied": payment.applied, "refunded": payment.refunded},
        after={
            "applied": payment.applied - split.settled_reduction,
            "refunded": total,
            "credit_to_void": split.credit_to_void,
        },
    )

    def money(amount: Decimal) -> Money:
        return Money(amount=amount, currency=payment.currency)

    refunded = PaymentPartiallyRefunded(
        payment_id=payment.payment_id,
        receipt_number=payment.receipt_number,
        account_number=payment.account_number,
        payment_type=payment.payment_type,
        item_reference=payment.item_reference,
        refunded=money(refund),
        refunded_total=money(total),
        settled_reduction=money(split.settled_reduction),
        credit_to_void=money(split.credit_to_void),
        refunded_at=event.occurred_at,
    )
    await emit(session, "payment.partially_refunded", payment.account_number, refunded)


async def on_gateway_settlement_status_changed(session: AsyncSession, envelope: Envelope) -> None:
    event = parse_data(envelope, GatewaySettlementStatusChanged)
    payment = await _online_payment(session, event.payment_intent_id)
    if payment is None:
        raise NotFound(
            "unknown_payment_intent", f"no payment for intent {event.payment_intent_id}", field="payment_intent_id"
        )
    if not domain.settlement_moves_forward(payment.settlement_status, event.settlement_status):
        await audit.record(
            session,
            audit_log,
            actor=SYSTEM,
            action="gateway.event_ignored",
            subject=payment.payment_id,
            before={"settlement_status": payment.settlement_status},
            after={"settlement_status": event.settlement_status},
            reason=OUT_OF_ORDER,
        )
        return
    values: dict[str, Any] = {"settlement_status": event.settlement_status}
    if event.webhook_status is not None:
        values["webhook_status"] = event.webhook_status
    if event.settlement_status == "Success":
        values["settled_at"] = event.occurred_at
    await session.execute(update(payments).where(payments.c.payment_id == payment.payment_id).values(**values))
    await announce_status(
        session, await _payment_row(session, payment.payment_id), payment.status, at=event.occurred_at
    )


def subscriptions() -> list[Subscription]:
    """The event consumer of `gateway.events.v1`."""
    return [
        Subscription(
            "gateway",
            Topic.GATEWAY_EVENTS,
            {
                "gateway.payment_status_changed": on_gateway_payment_status_changed,
                "gateway.settlement_status_changed": on_gateway_settlement_status_changed,
            },
        )
    ]
