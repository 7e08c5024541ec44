"""KPI's event handlers (they keep the aggregates) and its queries and commands.

Each handler runs inside the consumer's transaction together with the inbox claim, so a redelivered event
changes nothing. Handlers take a `Context`: the utility's time zone, and where to stage the events they raise
(alerts). The rebuild replays the same handlers with no `stage`, so replaying history never raises an alert.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Table, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.kpi import domain
from services.kpi.domain import AlertRule, Comparison, Metric
from services.kpi.storage import (
    alert_rules,
    alert_states,
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
from shared.contracts import Envelope, Topic, new_envelope, parse_data
from shared.contracts.events import (
    AlertRaised,
    BillIssued,
    CreditNoteApplied,
    CreditNoteExpired,
    CreditNoteIssued,
    InstallmentPlanCreated,
    PaymentCancelled,
    PaymentPosted,
    PaymentStatusChanged,
    PaymentType,
    PaymentVerified,
    ServiceChargeIssued,
    UsageTracked,
)
from shared.errors import Rejected
from shared.money import quantize
from shared.outbox import Stage

log = logging.getLogger(__name__)

SOURCE = "kpi"
PENDING = "Pending"

Handler = Callable[[AsyncSession, Envelope], Awaitable[None]]
ZERO = Decimal("0.00")


class AlertRuleCache:
    """Thresholds are needed on almost every event but change rarely, so they are kept in memory for `ttl`
    seconds: a rule created on this instance applies at once, one created on another instance within `ttl`."""

    def __init__(self, ttl: float = 2.0) -> None:
        self.ttl = ttl
        self._rules: list[AlertRule] | None = None
        self._loaded_at = 0.0

    async def for_metric(self, session: AsyncSession, metric: Metric) -> list[AlertRule]:
        if self._rules is None or time.monotonic() - self._loaded_at > self.ttl:
            rows = (await session.execute(select(alert_rules))).all()
            self._rules = [AlertRule(r.alert_id, Metric(r.metric), Comparison(r.comparison), r.threshold) for r in rows]
            self._loaded_at = time.monotonic()
        return [rule for rule in self._rules if rule.metric is metric]

    def invalidate(self) -> None:
        self._rules = None


@dataclass(frozen=True)
class Context:
    """What handlers need besides the event: the utility's time zone and currency, the outbox, alert rules."""

    time_zone: ZoneInfo
    currency: str = "USD"
    stage: Stage | None = None  # None while replaying history: aggregates only, no alerts
    rules: AlertRuleCache = field(default_factory=AlertRuleCache)


class Event:
    """Names of the counted happenings in `daily_events`."""

    ONLINE_PAYMENTS_FAILED = "online_payments_failed"
    PAYMENTS_CANCELLED = "payments_cancelled"
    PAYMENTS_REFUNDED = "payments_refunded"
    CREDIT_NOTES_ISSUED = "credit_notes_issued"
    CREDIT_NOTES_APPLIED = "credit_notes_applied"
    CREDIT_NOTES_EXPIRED = "credit_notes_expired"


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
    session: AsyncSession, day: date, event: str, currency: str, amount: Decimal = ZERO, sign: int = 1
) -> None:
    await _bump(
        session,
        daily_events,
        {"day": day, "event": event, "currency": currency},
        {"count": sign, "amount": amount * sign},
    )


BACKLOG = "all"


async def _backlog(session: AsyncSession, sign: int) -> None:
    await _bump(session, verification_backlog, {"scope": BACKLOG}, {"pending": sign})


async def _collect(session: AsyncSession, payment: Mapping[str, Any], sign: int) -> None:
    """Add (+1) or take back (-1) one payment in the collection aggregates (and the verification backlog)."""
    if payment["verification"] == PENDING:
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


# --- payments.events.v1 ---


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


async def on_payment_posted(ctx: Context, session: AsyncSession, envelope: Envelope) -> None:
    posted = parse_data(envelope, PaymentPosted)
    row = {
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
        "posted_day": domain.local_day(posted.posted_at, ctx.time_zone),
        "collection_days": domain.days_to_collect(posted.item.issued_on, posted.payment_date),
        "status": posted.status,
        "verification": posted.verification,
        "counted": domain.counts_as_collected(posted.status),
    }
    # The hottest path (every payment): one round trip records the payment and adds it to both aggregates.
    inserted = (await session.execute(_POST_PAYMENT, row)).scalar_one()
    if not inserted:
        # Posted once per payment: a second announcement (a new event id for the same payment) adds nothing.
        log.warning("payment already counted", extra={"payment_id": posted.payment_id, "event_id": str(envelope.id)})
        return
    await _evaluate_collection_rate(ctx, session, domain.period_of(posted.payment_date))
    await _evaluate_pending_verifications(ctx, session)


async def _payment_for_update(session: AsyncSession, payment_id: str) -> dict[str, Any] | None:
    found = (
        (await session.execute(select(payments).where(payments.c.payment_id == payment_id).with_for_update()))
        .mappings()
        .first()
    )
    return dict(found) if found is not None else None


async def on_payment_cancelled(ctx: Context, session: AsyncSession, envelope: Envelope) -> None:
    cancelled = parse_data(envelope, PaymentCancelled)
    payment = await _payment_for_update(session, cancelled.payment_id)
    if payment is None:
        raise Rejected("unknown_payment", f"payment {cancelled.payment_id} was never posted", field="payment_id")
    if payment["status"] == "Cancelled":
        return
    if payment["counted"]:
        await _collect(session, payment, -1)
    await session.execute(
        update(payments).where(payments.c.payment_id == cancelled.payment_id).values(status="Cancelled", counted=False)
    )
    await _count_event(
        session,
        domain.local_day(cancelled.cancelled_at, ctx.time_zone),
        Event.PAYMENTS_CANCELLED,
        payment["currency"],
        payment["amount"],
    )
    await _evaluate_collection_rate(ctx, session, domain.period_of(payment["payment_date"]))
    await _evaluate_pending_verifications(ctx, session)


async def on_payment_status_changed(ctx: Context, session: AsyncSession, envelope: Envelope) -> None:
    changed = parse_data(envelope, PaymentStatusChanged)
    if changed.status == domain.FAILED_STATUS:
        await _count_failure(ctx, session, changed)
    payment = await _payment_for_update(session, changed.payment_id)
    if payment is None:
        return  # not posted (yet): a Pending or Failed online payment has collected nothing
    if payment["status"] == "Cancelled":
        return  # cancelled by an admin: no later gateway status brings the money back into the figures
    counted_now = domain.counts_as_collected(changed.status)
    if payment["counted"] and not counted_now:
        await _collect(session, payment, -1)
        if changed.status == domain.REFUNDED_STATUS:
            await _count_event(
                session,
                domain.local_day(changed.changed_at, ctx.time_zone),
                Event.PAYMENTS_REFUNDED,
                payment["currency"],
                payment["amount"],
            )
    elif counted_now and not payment["counted"]:
        await _collect(session, payment, +1)
    await session.execute(
        update(payments)
        .where(payments.c.payment_id == changed.payment_id)
        .values(status=changed.status, counted=counted_now)
    )
    if counted_now != payment["counted"]:
        await _evaluate_collection_rate(ctx, session, domain.period_of(payment["payment_date"]))
        await _evaluate_pending_verifications(ctx, session)


async def _count_failure(ctx: Context, session: AsyncSession, changed: PaymentStatusChanged) -> None:
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
    await _count_event(
        session, domain.local_day(changed.changed_at, ctx.time_zone), Event.ONLINE_PAYMENTS_FAILED, ctx.currency
    )
    hour = domain.hour_window(changed.changed_at)
    statement = pg_insert(hourly_failures).values(hour=hour, failures=1)
    failures = (
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=["hour"], set_={"failures": hourly_failures.c.failures + 1}
            ).returning(hourly_failures.c.failures)
        )
    ).scalar_one()
    await _evaluate(
        ctx, session, Metric.FAILED_ONLINE_PAYMENTS_PER_HOUR, domain.hour_window_label(hour), Decimal(failures)
    )


async def on_payment_verified(ctx: Context, session: AsyncSession, envelope: Envelope) -> None:
    verified = parse_data(envelope, PaymentVerified)
    payment = await _payment_for_update(session, verified.payment_id)
    if payment is None:
        raise Rejected("unknown_payment", f"payment {verified.payment_id} was never posted", field="payment_id")
    if payment["verification"] != PENDING:
        return
    if payment["counted"]:
        await _backlog(session, -1)
    await session.execute(
        update(payments).where(payments.c.payment_id == verified.payment_id).values(verification="Verified")
    )
    await _evaluate_pending_verifications(ctx, session)


# --- creditnotes.events.v1 ---


async def on_credit_note_issued(ctx: Context, session: AsyncSession, envelope: Envelope) -> None:
    issued = parse_data(envelope, CreditNoteIssued)
    day = domain.local_day(issued.created_at, ctx.time_zone)
    await _count_event(session, day, Event.CREDIT_NOTES_ISSUED, issued.amount.currency, issued.amount.amount)


async def on_credit_note_applied(ctx: Context, session: AsyncSession, envelope: Envelope) -> None:
    applied = parse_data(envelope, CreditNoteApplied)
    day = domain.local_day(applied.applied_at, ctx.time_zone)
    await _count_event(session, day, Event.CREDIT_NOTES_APPLIED, applied.applied.currency, applied.applied.amount)


async def on_credit_note_expired(ctx: Context, session: AsyncSession, envelope: Envelope) -> None:
    expired = parse_data(envelope, CreditNoteExpired)
    day = domain.local_day(expired.expired_at, ctx.time_zone)
    await _count_event(session, day, Event.CREDIT_NOTES_EXPIRED, expired.remaining.currency, expired.remaining.amount)


# --- billing.receivables.v1: what falls due, the collection rate's denominator ---


async def _falls_due(
    ctx: Context,
    session: AsyncSession,
    payment_type: PaymentType,
    item_reference: str,
    due_date: date,
    amount: Decimal,
    currency: str,
) -> None:
    """Record what an item is due and when; a re-issued item moves its amount to its new due date."""
    key = {"payment_type": payment_type.value, "item_reference": item_reference}
    earlier = (
        (
            await session.execute(
                select(receivables)
                .where(receivables.c.payment_type == key["payment_type"])
                .where(receivables.c.item_reference == item_reference)
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
        await _evaluate_collection_rate(ctx, session, domain.period_of(earlier["due_date"]))
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
    await _evaluate_collection_rate(ctx, session, domain.period_of(due_date))


async def on_bill_issued(ctx: Context, session: AsyncSession, envelope: Envelope) -> None:
    bill = parse_data(envelope, BillIssued)
    await _falls_due(
        ctx,
        session,
        PaymentType.BILL,
        bill.invoice_number,
        bill.due_date,
        bill.amount.amount,
        bill.amount.currency,
    )


async def on_service_charge_issued(ctx: Context, session: AsyncSession, envelope: Envelope) -> None:
    charge = parse_data(envelope, ServiceChargeIssued)
    await _falls_due(
        ctx,
        session,
        PaymentType.SERVICE,
        charge.service_charge_id,
        charge.due_date,
        charge.amount.amount,
        charge.amount.currency,
    )


async def on_installment_plan_created(ctx: Context, session: AsyncSession, envelope: Envelope) -> None:
    plan = parse_data(envelope, InstallmentPlanCreated)
    for installment in plan.installments:
        await _falls_due(
            ctx,
            session,
            PaymentType.INSTALLMENT,
            f"{plan.plan_id}/{installment.number}",
            installment.due_date,
            installment.amount.amount,
            installment.amount.currency,
        )


def _bind(
    ctx: Context, handlers: Mapping[str, Callable[[Context, AsyncSession, Envelope], Awaitable[None]]]
) -> dict[str, Handler]:
    return {event_type: partial(handler, ctx) for event_type, handler in handlers.items()}


def payment_handlers(ctx: Context) -> dict[str, Handler]:
    return _bind(
        ctx,
        {
            "payment.posted": on_payment_posted,
            "payment.cancelled": on_payment_cancelled,
            "payment.status_changed": on_payment_status_changed,
            "payment.verified": on_payment_verified,
        },
    )


def credit_note_handlers(ctx: Context) -> dict[str, Handler]:
    return _bind(
        ctx,
        {
            "credit_note.issued": on_credit_note_issued,
            "credit_note.applied": on_credit_note_applied,
            "credit_note.expired": on_credit_note_expired,
        },
    )


def billing_handlers(ctx: Context) -> dict[str, Handler]:
    return _bind(
        ctx,
        {
            "bill.issued": on_bill_issued,
            "service_charge.issued": on_service_charge_issued,
            "installment_plan.created": on_installment_plan_created,
        },
    )


# Consumer name (also its inbox name) -> topic and handlers; the live service and the rebuild share it.
CONSUMERS: dict[str, tuple[Topic, Callable[[Context], dict[str, Handler]]]] = {
    "payments": (Topic.PAYMENTS_EVENTS, payment_handlers),
    "credit_notes": (Topic.CREDITNOTES_EVENTS, credit_note_handlers),
    "billing": (Topic.BILLING_RECEIVABLES, billing_handlers),
}


# --- alerts ---


async def _evaluate_collection_rate(ctx: Context, session: AsyncSession, period: str) -> None:
    if ctx.stage is None or not await ctx.rules.for_metric(session, Metric.COLLECTION_RATE):
        return
    start, end = domain.month_bounds(period)
    figures = await _collections(session, start, end, ctx.currency)
    due = await _due(session, start, end, ctx.currency)
    await _evaluate(ctx, session, Metric.COLLECTION_RATE, period, domain.collection_rate(figures["collected"], due))


async def _evaluate_pending_verifications(ctx: Context, session: AsyncSession) -> None:
    if ctx.stage is None or not await ctx.rules.for_metric(session, Metric.PENDING_VERIFICATIONS):
        return
    await _evaluate(ctx, session, Metric.PENDING_VERIFICATIONS, "current", Decimal(await _pending(session)))


async def _evaluate(ctx: Context, session: AsyncSession, metric: Metric, window: str, value: Decimal | None) -> None:
    """Compare `value` with every rule on `metric` in `window`; raise an alert on each crossing into breach."""
    if ctx.stage is None:
        return
    for rule in await ctx.rules.for_metric(session, metric):
        await session.execute(
            pg_insert(alert_states)
            .values(alert_id=rule.alert_id, window=window, breached=False)
            .on_conflict_do_nothing()
        )
        # The row lock makes two consumers evaluating one window at once raise at most one alert.
        state = (
            await session.execute(
                select(alert_states)
                .where(alert_states.c.alert_id == rule.alert_id, alert_states.c.window == window)
                .with_for_update()
            )
        ).one()
        breached = rule.breached_by(value)
        changes: dict[str, Any] = {"breached": breached, "value": value}
        if domain.should_raise(state.breached, breached):
            assert value is not None  # a breach always has a value
            now = datetime.now(UTC)
            raised = AlertRaised(
                alert_id=rule.alert_id,
                metric=metric.value,
                comparison=rule.comparison.value,
                threshold=rule.threshold,
                value=value,
                period=window,
                raised_at=now,
            )
            await ctx.stage(
                session,
                Topic.KPI_ALERTS,
                new_envelope("alert.raised", source=SOURCE, subject=metric.value, data=raised),
            )
            log.warning(
                "alert raised",
                extra={
                    "alert_id": rule.alert_id,
                    "metric": metric.value,
                    "comparison": rule.comparison.value,
                    "threshold": str(rule.threshold),
                    "value": str(value),
                    "window": window,
                },
            )
            changes.update(raised_count=alert_states.c.raised_count + 1, last_raised_at=now)
        await session.execute(
            update(alert_states)
            .where(alert_states.c.alert_id == rule.alert_id, alert_states.c.window == window)
            .values(**changes)
        )


async def create_alert(
    session: AsyncSession,
    stage: Stage,
    *,
    metric: Metric,
    comparison: Comparison,
    threshold: Decimal,
    created_by: str,
    user_id: str,
) -> dict[str, Any]:
    """A billing manager's new threshold; evaluated on the next event that moves its metric."""
    domain.validate_rule(metric, comparison, threshold)
    alert_id = f"AL-{uuid.uuid4().hex[:12].upper()}"
    await session.execute(
        alert_rules.insert().values(
            alert_id=alert_id,
            metric=metric.value,
            comparison=comparison.value,
            threshold=threshold,
            created_by=created_by,
        )
    )
    await track(
        session,
        stage,
        "alert_setup",
        user_id,
        {
            "alert_type": metric.value,
            "threshold_value": str(threshold),
            "notification_method": f"event:{Topic.KPI_ALERTS}",
        },
    )
    return await _alert(session, alert_id)


async def _alert(session: AsyncSession, alert_id: str) -> dict[str, Any]:
    row = (await session.execute(select(alert_rules).where(alert_rules.c.alert_id == alert_id))).one()
    return {
        "alert_id": row.alert_id,
        "metric": row.metric,
        "comparison": row.comparison,
        "threshold": str(row.threshold),
        "created_by": row.created_by,
        "created_at": row.created_at.isoformat(),
    }


async def list_alerts(session: AsyncSession, *, recent: int = 20) -> dict[str, Any]:
    """Configured thresholds, and the most recent times one was raised."""
    rules = (await session.execute(select(alert_rules.c.alert_id).order_by(alert_rules.c.created_at))).scalars()
    raised = (
        await session.execute(
            select(alert_states)
            .where(alert_states.c.last_raised_at.is_not(None))
            .order_by(alert_states.c.last_raised_at.desc())
            .limit(recent)
        )
    ).all()
    return {
        "alerts": [await _alert(session, alert_id) for alert_id in list(rules)],
        "recently_raised": [
            {
                "alert_id": r.alert_id,
                "window": r.window,
                "breached": r.breached,
                "value": str(r.value) if r.value is not None else None,
                "raised_count": r.raised_count,
                "last_raised_at": r.last_raised_at.isoformat(),
            }
            for r in raised
        ],
    }


# --- usage tracking (through the outbox) ---


async def track(session: AsyncSession, stage: Stage, event: str, user_id: str, properties: Mapping[str, str]) -> None:
    """Stage one usage-tracking event on `analytics.events.v1`."""
    usage = UsageTracked(event=event, user_id=user_id, properties=dict(properties), occurred_at=datetime.now(UTC))
    await stage(
        session, Topic.ANALYTICS_EVENTS, new_envelope("usage.tracked", source=SOURCE, subject=user_id, data=usage)
    )


# --- queries ---


async def _collections(session: AsyncSession, start: date, end: date, currency: str) -> dict[str, Any]:
    c = daily_collections.c
    row = (
        await session.execute(
            select(
                func.coalesce(func.sum(c.payments), 0),
                func.coalesce(func.sum(c.collected), 0),
                func.coalesce(func.sum(c.timed_payments), 0),
                func.coalesce(func.sum(c.collection_days), 0),
            ).where(c.day >= start, c.day < end, c.currency == currency)
        )
    ).one()
    return {
        "payments": int(row[0]),
        "collected": quantize(Decimal(row[1]), currency),
        "timed": int(row[2]),
        "days": int(row[3]),
    }


async def _due(session: AsyncSession, start: date, end: date, currency: str) -> Decimal:
    c = daily_dues.c
    total = (
        await session.execute(
            select(func.coalesce(func.sum(c.due), 0)).where(c.day >= start, c.day < end, c.currency == currency)
        )
    ).scalar_one()
    return quantize(Decimal(total), currency)


async def _events(session: AsyncSession, start: date, end: date, currency: str) -> dict[str, tuple[int, Decimal]]:
    c = daily_events.c
    rows = (
        await session.execute(
            select(c.event, func.sum(c.count), func.sum(c.amount))
            .where(c.day >= start, c.day < end, c.currency == currency)
            .group_by(c.event)
        )
    ).all()
    return {event: (int(count), quantize(Decimal(amount), currency)) for event, count, amount in rows}


async def _pending(session: AsyncSession) -> int:
    c = verification_backlog.c
    found = (await session.execute(select(c.pending).where(c.scope == BACKLOG))).scalar_one_or_none()
    return int(found or 0)


@dataclass(frozen=True)
class PeriodFigures:
    collected: Decimal
    payments: int
    due: Decimal
    timed: int
    days: int
    events: dict[str, tuple[int, Decimal]] = field(default_factory=dict)

    @property
    def rate(self) -> Decimal | None:
        return domain.collection_rate(self.collected, self.due)

    @property
    def average_days(self) -> Decimal | None:
        return domain.average_days(self.days, self.timed)

    def event(self, name: str) -> tuple[int, Decimal]:
        return self.events.get(name, (0, ZERO))


async def period_figures(session: AsyncSession, period: str, currency: str) -> PeriodFigures:
    start, end = domain.month_bounds(period)
    collections = await _collections(session, start, end, currency)
    return PeriodFigures(
        collected=collections["collected"],
        payments=collections["payments"],
        due=await _due(session, start, end, currency),
        timed=collections["timed"],
        days=collections["days"],
        events=await _events(session, start, end, currency),
    )


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _compared(current: Decimal | None, previous: Decimal | None) -> dict[str, str | None]:
    return {
        "value": _text(current),
        "previous": _text(previous),
        "change_percent": _text(domain.percent_change(current, previous)),
    }


def _counted(current: tuple[int, Decimal], previous: tuple[int, Decimal]) -> dict[str, Any]:
    return {
        "count": current[0],
        "amount": str(current[1]),
        "previous_count": previous[0],
        "previous_amount": str(previous[1]),
        "change_percent": _text(domain.percent_change(Decimal(current[0]), Decimal(previous[0]))),
    }


async def summary(
    session: AsyncSession, period: str, *, currency: str, time_zone: ZoneInfo, now: datetime
) -> dict[str, Any]:
    """The header KPIs of a month, each with the previous month's value and the percentage change."""
    start, end = domain.month_bounds(period)
    previous_period = domain.previous_period(period)
    current = await period_figures(session, period, currency)
    previous = await period_figures(session, previous_period, currency)
    today = domain.local_day(now, time_zone)
    yesterday = today - timedelta(days=1)
    received = {
        day: (int(n), Decimal(amount))
        for day, n, amount in (
            await session.execute(
                select(daily_receipts.c.day, daily_receipts.c.payments, daily_receipts.c.received).where(
                    daily_receipts.c.day.in_([today, yesterday]), daily_receipts.c.currency == currency
                )
            )
        ).all()
    }
    today_n, today_amount = received.get(today, (0, ZERO))
    yesterday_n, yesterday_amount = received.get(yesterday, (0, ZERO))
    by_currency = (
        await session.execute(
            select(
                daily_collections.c.currency,
                func.sum(daily_collections.c.payments),
                func.sum(daily_collections.c.collected),
            )
            .where(daily_collections.c.day >= start, daily_collections.c.day < end)
            .group_by(daily_collections.c.currency)
            .having(func.sum(daily_collections.c.payments) != 0)
            .order_by(daily_collections.c.currency)
        )
    ).all()
    return {
        "period": period,
        "previous_period": previous_period,
        "currency": currency,
        "time_zone": str(time_zone),
        "as_of": now.isoformat(),
        "total_collected": [{"currency": c, "amount": str(Decimal(t)), "payments": int(n)} for c, n, t in by_currency],
        "kpis": {
            "total_collected": {**_compared(current.collected, previous.collected), "payments": current.payments},
            "received_today": {
                **_compared(today_amount, yesterday_amount),
                "day": today.isoformat(),
                "payments": today_n,
                "previous_payments": yesterday_n,
            },
            "collection_rate": {
                **_compared(current.rate, previous.rate),
                "total_collected": str(current.collected),
                "total_due": str(current.due),
            },
            "average_collection_time": {
                **_compared(current.average_days, previous.average_days),
                "payments": current.timed,
            },
            "credit_notes_issued": _counted(
                current.event(Event.CREDIT_NOTES_ISSUED), previous.event(Event.CREDIT_NOTES_ISSUED)
            ),
            "credit_notes_applied": _counted(
                current.event(Event.CREDIT_NOTES_APPLIED), previous.event(Event.CREDIT_NOTES_APPLIED)
            ),
            "failed_online_payments": _counted(
                current.event(Event.ONLINE_PAYMENTS_FAILED), previous.event(Event.ONLINE_PAYMENTS_FAILED)
            ),
            "cancelled_payments": _counted(
                current.event(Event.PAYMENTS_CANCELLED), previous.event(Event.PAYMENTS_CANCELLED)
            ),
            "refunded_payments": _counted(
                current.event(Event.PAYMENTS_REFUNDED), previous.event(Event.PAYMENTS_REFUNDED)
            ),
            "pending_verification": {"count": await _pending(session)},
        },
    }


DIMENSIONS = {
    "channel": daily_collections.c.channel,
    "method": daily_collections.c.method,
    "type": daily_collections.c.payment_type,
}


async def trends(
    session: AsyncSession, *, start: date, end: date, granularity: str, by: str | None, currency: str
) -> dict[str, Any]:
    """Collected money per day or month in [start, end), optionally split by channel, method or type."""
    c = daily_collections.c
    bucket = c.day if granularity == "day" else func.date_trunc("month", c.day).cast(c.day.type)
    columns = [bucket.label("bucket")]
    if by is not None:
        columns.append(DIMENSIONS[by].label("key"))
    statement = (
        select(*columns, func.sum(c.payments), func.sum(c.collected))
        .where(c.day >= start, c.day < end, c.currency == currency)
        .group_by(*columns)
        .order_by(*columns)
    )
    points = []
    for row in (await session.execute(statement)).all():
        bucket_day: date = row[0]
        label = bucket_day.isoformat() if granularity == "day" else domain.period_of(bucket_day)
        point: dict[str, Any] = {"bucket": label, "payments": int(row[-2]), "amount": str(Decimal(row[-1]))}
        if by is not None:
            point[by] = row[1]
        if point["payments"] or Decimal(point["amount"]):
            points.append(point)
    return {
        "from": start.isoformat(),
        "to": (end - timedelta(days=1)).isoformat(),
        "granularity": granularity,
        "by": by,
        "currency": currency,
        "points": points,
    }


async def drilldown(
    session: AsyncSession, *, period: str, by: str, filters: Mapping[str, str], currency: str
) -> dict[str, Any]:
    """What a month's total collected is made of, by channel, method or type, within the filters given."""
    start, end = domain.month_bounds(period)
    c = daily_collections.c
    key = DIMENSIONS[by]
    statement = (
        select(key, func.sum(c.payments), func.sum(c.collected))
        .where(c.day >= start, c.day < end, c.currency == currency)
        .group_by(key)
        .order_by(func.sum(c.collected).desc(), key)
    )
    for name, value in filters.items():
        statement = statement.where(DIMENSIONS[name] == value)
    rows = [(k, int(n), Decimal(t)) for k, n, t in (await session.execute(statement)).all() if n]
    total = sum((t for _, _, t in rows), ZERO)
    return {
        "period": period,
        "metric": "total_collected",
        "filters": dict(filters),
        "by": by,
        "currency": currency,
        "total": str(total),
        "rows": [
            {by: k, "payments": n, "amount": str(t), "share_percent": _text(domain.collection_rate(t, total))}
            for k, n, t in rows
        ],
    }


async def recent_payments(session: AsyncSession, *, limit: int, time_zone: ZoneInfo) -> list[dict[str, Any]]:
    """The latest payments posted (newest first), as the dashboard lists them."""
    rows = (await session.execute(select(payments).order_by(payments.c.posted_at.desc()).limit(limit))).mappings()
    return [
        {
            "payment_id": r["payment_id"],
            "receipt_number": r["receipt_number"],
            "account_number": r["account_number"],
            "consumer_name": r["consumer_name"],
            "amount": str(r["amount"]),
            "currency": r["currency"],
            "channel": r["channel"],
            "method": r["method"],
            "payment_type": r["payment_type"],
            "payment_date": r["payment_date"].isoformat(),
            "posted_at": r["posted_at"].astimezone(time_zone).isoformat(),
            "status": r["status"],
            "verification": r["verification"],
        }
        for r in rows
    ]
