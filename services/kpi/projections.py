"""KPI's projections: payments, credit notes and billing's receivables folded into the aggregate rows.

Each handler runs inside the event consumer's transaction together with the inbox claim, so a redelivered
event changes nothing. When an event moves a metric that has alert thresholds, its handler has them checked
in the same transaction. The rebuild replays these same handlers with `replaying=True`: aggregates only, so
replaying history never raises an alert.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Table, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.kpi import domain
from services.kpi.alerts import Alerts
from services.kpi.batches import CREDIT_NOTE_EVENTS, KpiBatches, credit_note_counts
from services.kpi.domain import CountedEvent
from services.kpi.settings import KpiSettings
from services.kpi.storage import (
    BACKLOG_SCOPE,
    daily_collections,
    daily_dues,
    daily_events,
    daily_receipts,
    failed_payments,
    hourly_failures,
    payments,
    receivables,
    verification_backlog,
)
from shared.contracts import Envelope, PaymentStatus, Topic, counts_as_collected, parse_data
from shared.contracts.events import (
    PaymentAdjusted,
    PaymentCancelled,
    PaymentDisputeClosed,
    PaymentDisputeOpened,
    PaymentPartiallyRefunded,
    PaymentPosted,
    PaymentStatusChanged,
    PaymentVerified,
)
from shared.errors import Rejected
from shared.messaging import EventHandler, Subscription
from shared.receivables import ITEM_EVENT_TYPES, ReceivableItem, receivable_items

log = logging.getLogger(__name__)

ZERO = Decimal("0.00")


async def _bump(session: AsyncSession, table: Table, keys: Mapping[str, Any], counters: Mapping[str, Any]) -> None:
    """Add `counters` to the aggregate row identified by `keys`, creating it at zero first if needed."""
    statement = pg_insert(table).values(**keys, **counters)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=list(keys),
            set_={name: table.c[name] + statement.excluded[name] for name in counters},
        )
    )


async def _count_event(
    session: AsyncSession, day: date, event: CountedEvent, currency: str, amount: Decimal = ZERO, sign: int = 1
) -> None:
    await _bump(
        session,
        daily_events,
        {"day": day, "event": event.value, "currency": currency},
        {"count": sign, "amount": amount * sign},
    )


async def _backlog(session: AsyncSession, sign: int) -> None:
    await _bump(session, verification_backlog, {"scope": BACKLOG_SCOPE}, {"pending": sign})


async def _collect(session: AsyncSession, payment: Mapping[str, Any], sign: int) -> None:
    """Add (+1) or take back (-1) one payment in the collection aggregates (and the verification backlog)."""
    if payment["verification"] == domain.PENDING_VERIFICATION:
        await _backlog(session, sign)
    days = payment["collection_days"]
    await _bump(
        session,
        daily_collections,
        {
            "day": payment["payment_date"],
            "currency": payment["currency"],
            "channel": payment["channel"],
            "method": payment["method"],
            "payment_type": payment["payment_type"],
        },
        {
            "payments": sign,
            "collected": payment["amount"] * sign,
            "timed_payments": sign if days is not None else 0,
            "collection_days": (days or 0) * sign,
        },
    )
    await _bump(
        session,
        daily_receipts,
        {"day": payment["posted_day"], "currency": payment["currency"]},
        {"payments": sign, "received": payment["amount"] * sign},
    )


async def _payment_for_update(session: AsyncSession, payment_id: str) -> dict[str, Any] | None:
    found = (
        (await session.execute(select(payments).where(payments.c.payment_id == payment_id).with_for_update()))
        .mappings()
        .first()
    )
    return dict(found) if found is not None else None


# The hottest path (every payment): one round trip records the payment and adds it to both aggregates.
# 'all' is BACKLOG_SCOPE and 'Pending' is domain.PENDING_VERIFICATION.
_POST_PAYMENT = text(
    """
    WITH new_payment AS (
        INSERT INTO kpi.payments (payment_id, receipt_number, account_number, consumer_name, payment_type, channel,
            method, amount, currency, payment_date, posted_at, posted_day, collection_days, status, verification,
            counted)
        VALUES (:payment_id, :receipt_number, :account_number, :consumer_name, :payment_type, :channel, :method,
            :amount, :currency, :payment_date, :posted_at, :posted_day, :collection_days, :status, :verification,
            :counted)
        ON CONFLICT DO NOTHING
        RETURNING counted
    ), collected AS (
        INSERT INTO kpi.daily_collections AS d (day, currency, channel, method, payment_type, payments, collected,
            timed_payments, collection_days)
        SELECT CAST(:payment_date AS date), CAST(:currency AS varchar), CAST(:channel AS varchar),
            CAST(:method AS varchar), CAST(:payment_type AS varchar), 1, CAST(:amount AS numeric),
            CASE WHEN CAST(:collection_days AS integer) IS NULL THEN 0 ELSE 1 END,
            COALESCE(CAST(:collection_days AS integer), 0)
        FROM new_payment WHERE counted
        ON CONFLICT (day, currency, channel, method, payment_type) DO UPDATE SET
            payments = d.payments + 1,
            collected = d.collected + excluded.collected,
            timed_payments = d.timed_payments + excluded.timed_payments,
            collection_days = d.collection_days + excluded.collection_days
    ), received AS (
        INSERT INTO kpi.daily_receipts AS r (day, currency, payments, received)
        SELECT CAST(:posted_day AS date), CAST(:currency AS varchar), 1, CAST(:amount AS numeric)
        FROM new_payment WHERE counted
        ON CONFLICT (day, currency) DO UPDATE SET payments = r.payments + 1, received = r.received + excluded.received
    ), backlog AS (
        INSERT INTO kpi.verification_backlog AS b (scope, pending)
        SELECT 'all', 1 FROM new_payment WHERE counted AND CAST(:verification AS varchar) = 'Pending'
        ON CONFLICT (scope) DO UPDATE SET pending = b.pending + 1
    )
    SELECT count(*) FROM new_payment
    """
)


class Projections:
    """The aggregates kept in step with the events, in the utility's time zone; `currency` is the one the
    failed online payments are counted in (a status change carries no amount)."""

    def __init__(self, *, time_zone: ZoneInfo, currency: str, alerts: Alerts, replaying: bool = False) -> None:
        self.time_zone = time_zone
        self.currency = currency
        self.alerts = alerts
        self.replaying = replaying

    def payment_handlers(self) -> dict[str, EventHandler]:
        return {
            "payment.posted": self.on_payment_posted,
            "payment.cancelled": self.on_payment_cancelled,
            "payment.status_changed": self.on_payment_status_changed,
            "payment.verified": self.on_payment_verified,
            "payment.partially_refunded": self.on_payment_partially_refunded,
            "payment.adjusted": self.on_payment_adjusted,
            "payment.dispute_opened": self.on_payment_dispute_opened,
            "payment.dispute_closed": self.on_payment_dispute_closed,
        }

    def billing_handlers(self) -> dict[str, EventHandler]:
        return {event_type: self.on_receivable_issued for event_type in ITEM_EVENT_TYPES}

    def subscriptions(self) -> list[Subscription]:
        """The names are the consumer groups' (and inbox's) last part: the live service and the rebuild share them.
        Each applies a delivery batch at a time (services.kpi.batches); its handlers are the one-by-one fallback."""
        batches = KpiBatches(self)
        return [
            Subscription("payments", Topic.PAYMENTS_EVENTS, self.payment_handlers(), batch_handler=batches.payments),
            Subscription(
                "credit_notes",
                Topic.CREDITNOTES_EVENTS,
                dict.fromkeys(CREDIT_NOTE_EVENTS, self.on_credit_note_event),
                batch_handler=batches.credit_notes,
            ),
            Subscription("billing", Topic.BILLING_RECEIVABLES, self.billing_handlers(), batch_handler=batches.billing),
        ]

    def day(self, moment: Any) -> date:
        return domain.local_day(moment, self.time_zone)

    # --- alerts: never while replaying history ---

    async def _collection_rate_moved(self, session: AsyncSession, period: str) -> None:
        if not self.replaying:
            await self.alerts.check_collection_rate(session, period)

    async def _backlog_moved(self, session: AsyncSession) -> None:
        if not self.replaying:
            await self.alerts.check_pending_verifications(session)

    # --- payments.events.v1 ---

    def payment_row(self, posted: PaymentPosted) -> dict[str, Any]:
        """The payment as kpi keeps it (`payments`), with the local day it was posted and whether it is counted."""
        return {
            "payment_id": posted.payment_id,
            "receipt_number": posted.receipt_number,
            "account_number": posted.consumer.account_number,
            "consumer_name": posted.consumer.name,
            "payment_type": posted.item.payment_type.value,
            "channel": posted.channel,
            "method": posted.method,
            "amount": posted.amount.amount,
            "currency": posted.amount.currency,
            "payment_date": posted.payment_date,
            "posted_at": posted.posted_at,
            "posted_day": self.day(posted.posted_at),
            "collection_days": domain.days_to_collect(posted.item.issued_on, posted.payment_date),
            "status": posted.status,
            "verification": posted.verification,
            "counted": counts_as_collected(posted.status),
        }

    async def on_payment_posted(self, session: AsyncSession, envelope: Envelope) -> None:
        posted = parse_data(envelope, PaymentPosted)
        row = self.payment_row(posted)
        inserted = (await session.execute(_POST_PAYMENT, row)).scalar_one()
        if not inserted:
            # Posted once per payment: a second announcement (a new event id for the same payment) adds nothing.
            log.warning(
                "payment already counted", extra={"payment_id": posted.payment_id, "event_id": str(envelope.id)}
            )
            return
        await self._collection_rate_moved(session, domain.period_of(posted.payment_date))
        await self._backlog_moved(session)

    async def on_payment_cancelled(self, session: AsyncSession, envelope: Envelope) -> None:
        cancelled = parse_data(envelope, PaymentCancelled)
        payment = await _payment_for_update(session, cancelled.payment_id)
        if payment is None:
            raise Rejected("unknown_payment", f"payment {cancelled.payment_id} was never posted", field="payment_id")
        if payment["status"] == PaymentStatus.CANCELLED:
            return
        if payment["counted"]:
            await _collect(session, payment, -1)
        await session.execute(
            update(payments)
            .where(payments.c.payment_id == cancelled.payment_id)
            .values(status=PaymentStatus.CANCELLED.value, counted=False)
        )
        await _count_event(
            session,
            self.day(cancelled.cancelled_at),
            CountedEvent.PAYMENTS_CANCELLED,
            payment["currency"],
            payment["amount"],
        )
        await self._collection_rate_moved(session, domain.period_of(payment["payment_date"]))
        await self._backlog_moved(session)

    async def on_payment_status_changed(self, session: AsyncSession, envelope: Envelope) -> None:
        changed = parse_data(envelope, PaymentStatusChanged)
        if changed.status == PaymentStatus.FAILED:
            await self._count_failure(session, changed)
        payment = await _payment_for_update(session, changed.payment_id)
        if payment is None:
            return  # not posted (yet): a Pending or Failed online payment has collected nothing
        if payment["status"] == PaymentStatus.CANCELLED:
            return  # cancelled by an admin: no later gateway status brings the money back into the figures
        counted_now = counts_as_collected(changed.status)
        if payment["counted"] and not counted_now:
            # Out of the figures in the period it was counted in (its payment date), not the day it went back.
            await _collect(session, payment, -1)
            went_back = {
                PaymentStatus.REFUNDED.value: CountedEvent.PAYMENTS_REFUNDED,
                PaymentStatus.CHARGED_BACK.value: CountedEvent.PAYMENTS_CHARGED_BACK,
            }.get(changed.status)
            if went_back is not None:
                await _count_event(
                    session, self.day(changed.changed_at), went_back, payment["currency"], payment["amount"]
                )
        elif counted_now and not payment["counted"]:
            await _collect(session, payment, +1)
        await session.execute(
            update(payments)
            .where(payments.c.payment_id == changed.payment_id)
            .values(status=changed.status, counted=counted_now)
        )
        if counted_now != payment["counted"]:
            await self._collection_rate_moved(session, domain.period_of(payment["payment_date"]))
            await self._backlog_moved(session)

    async def _count_failure(self, session: AsyncSession, changed: PaymentStatusChanged) -> None:
        """One failed online payment, once, however many times its failure is reported."""
        first_time = (
            await session.execute(
                pg_insert(failed_payments)
                .values(payment_id=changed.payment_id)
                .on_conflict_do_nothing()
                .returning(failed_payments.c.payment_id)
            )
        ).first()
        if first_time is None:
            return
        await _count_event(session, self.day(changed.changed_at), CountedEvent.ONLINE_PAYMENTS_FAILED, self.currency)
        hour = domain.hour_window(changed.changed_at)
        statement = pg_insert(hourly_failures).values(hour=hour, failures=1)
        failures = (
            await session.execute(
                statement.on_conflict_do_update(
                    index_elements=["hour"], set_={"failures": hourly_failures.c.failures + 1}
                ).returning(hourly_failures.c.failures)
            )
        ).scalar_one()
        if not self.replaying:
            await self.alerts.check_failed_online_payments(session, hour, failures)

    async def on_payment_verified(self, session: AsyncSession, envelope: Envelope) -> None:
        verified = parse_data(envelope, PaymentVerified)
        payment = await _payment_for_update(session, verified.payment_id)
        if payment is None:
            raise Rejected("unknown_payment", f"payment {verified.payment_id} was never posted", field="payment_id")
        if payment["verification"] != domain.PENDING_VERIFICATION:
            return
        if payment["counted"]:
            await _backlog(session, -1)
        await session.execute(
            update(payments).where(payments.c.payment_id == verified.payment_id).values(verification="Verified")
        )
        await self._backlog_moved(session)

    # --- money safety: partial refunds, adjustments, disputes ---

    async def _move_collected(self, session: AsyncSession, payment: dict[str, Any], amount: Any) -> None:
        """Add `amount` (negative: take it back) to the rows the payment was counted in, not as a new payment."""
        await _bump(
            session,
            daily_collections,
            {
                "day": payment["payment_date"],
                "currency": payment["currency"],
                "channel": payment["channel"],
                "method": payment["method"],
                "payment_type": payment["payment_type"],
            },
            {"payments": 0, "collected": amount},
        )
        await _bump(
            session,
            daily_receipts,
            {"day": payment["posted_day"], "currency": payment["currency"]},
            {"payments": 0, "received": amount},
        )

    async def on_payment_partially_refunded(self, session: AsyncSession, envelope: Envelope) -> None:
        refund = parse_data(envelope, PaymentPartiallyRefunded)
        payment = await _payment_for_update(session, refund.payment_id)
        if payment is None:
            raise Rejected("unknown_payment", f"payment {refund.payment_id} was never posted", field="payment_id")
        amount = refund.refunded.amount
        if payment["counted"]:
            await self._move_collected(session, payment, -amount)
        await session.execute(
            update(payments).where(payments.c.payment_id == refund.payment_id).values(amount=payments.c.amount - amount)
        )
        await _count_event(
            session,
            self.day(refund.refunded_at),
            CountedEvent.PAYMENTS_PARTIALLY_REFUNDED,
            payment["currency"],
            amount,
        )
        await self._collection_rate_moved(session, domain.period_of(payment["payment_date"]))

    async def on_payment_adjusted(self, session: AsyncSession, envelope: Envelope) -> None:
        """A corrected amount or another item: the payment comes out of the rows it was in and goes back in as now."""
        adjusted = parse_data(envelope, PaymentAdjusted)
        payment = await _payment_for_update(session, adjusted.payment_id)
        if payment is None:
            raise Rejected("unknown_payment", f"payment {adjusted.payment_id} was never posted", field="payment_id")
        now = {**payment, "amount": adjusted.amount.amount, "payment_type": adjusted.item.payment_type.value}
        if payment["counted"]:
            await _collect(session, payment, -1)
            await _collect(session, now, +1)
        await session.execute(
            update(payments)
            .where(payments.c.payment_id == adjusted.payment_id)
            .values(amount=now["amount"], payment_type=now["payment_type"])
        )
        await _count_event(
            session,
            self.day(adjusted.adjusted_at),
            CountedEvent.PAYMENTS_ADJUSTED,
            adjusted.amount.currency,
            adjusted.amount.amount,
        )
        await self._collection_rate_moved(session, domain.period_of(payment["payment_date"]))

    async def on_payment_dispute_opened(self, session: AsyncSession, envelope: Envelope) -> None:
        opened = parse_data(envelope, PaymentDisputeOpened)
        day = self.day(opened.opened_at)
        await _count_event(session, day, CountedEvent.DISPUTES_OPENED, opened.amount.currency, opened.amount.amount)

    async def on_payment_dispute_closed(self, session: AsyncSession, envelope: Envelope) -> None:
        closed = parse_data(envelope, PaymentDisputeClosed)
        event = CountedEvent.DISPUTES_WON if closed.outcome == "won" else CountedEvent.DISPUTES_LOST
        await _count_event(session, self.day(closed.closed_at), event, closed.amount.currency, closed.amount.amount)

    # --- creditnotes.events.v1: each event only adds to `daily_events` (services.kpi.batches) ---

    async def on_credit_note_event(self, session: AsyncSession, envelope: Envelope) -> None:
        for key, count, amount in credit_note_counts(envelope, self.day):
            day, event, currency = key
            await _bump(
                session,
                daily_events,
                {"day": day, "event": event, "currency": currency},
                {"count": count, "amount": amount},
            )

    # --- billing.receivables.v1: what falls due, the collection rate's denominator ---

    async def on_receivable_issued(self, session: AsyncSession, envelope: Envelope) -> None:
        """A bill, a service charge, or an installment plan (one item per installment) falls due."""
        if envelope.source == domain.COLLECTIONS_SOURCE:
            return  # an arrangement's installments re-state bills already counted as due
        for item in receivable_items(envelope):
            await self._falls_due(session, item)

    async def _falls_due(self, session: AsyncSession, item: ReceivableItem) -> None:
        """Record what an item is due and when; a re-issued item moves its amount to its new due date."""
        key = item.as_row("payment_type", "item_reference")
        due_date, amount, currency = item.due_date, item.amount, item.currency
        earlier = (
            (
                await session.execute(
                    select(receivables)
                    .where(receivables.c.payment_type == key["payment_type"])
                    .where(receivables.c.item_reference == key["item_reference"])
                    .with_for_update()
                )
            )
            .mappings()
            .first()
        )
        if earlier is not None:
            if (earlier["due_date"], earlier["amount"], earlier["currency"]) == (due_date, amount, currency):
                return
            await _bump(
                session,
                daily_dues,
                {"day": earlier["due_date"], "currency": earlier["currency"], "payment_type": key["payment_type"]},
                {"items": -1, "due": -earlier["amount"]},
            )
            await self._collection_rate_moved(session, domain.period_of(earlier["due_date"]))
        values = {**key, "due_date": due_date, "amount": amount, "currency": currency}
        await session.execute(
            pg_insert(receivables)
            .values(**values)
            .on_conflict_do_update(index_elements=list(key), set_={"due_date": due_date, "amount": amount})
        )
        await _bump(
            session,
            daily_dues,
            {"day": due_date, "currency": currency, "payment_type": key["payment_type"]},
            {"items": 1, "due": amount},
        )
        await self._collection_rate_moved(session, domain.period_of(due_date))


def subscriptions(settings: KpiSettings, alerts: Alerts, *, replaying: bool = False) -> list[Subscription]:
    """KPI's event consumers: payments, credit notes and billing, each a consumer group of its own."""
    return Projections(
        time_zone=settings.zone, currency=settings.currency, alerts=alerts, replaying=replaying
    ).subscriptions()
