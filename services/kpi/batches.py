"""KPI's consumers a delivery batch at a time: payments posted, billing's items and credit notes' happenings.

A lockbox file or a morning at the counters is a stream of `payment.posted`, and month-end a bill for every
account. One event at a time cost one to three statements each, and building them cost more CPU than Postgres
spent running them. Here a run of consecutive events of those types takes a fixed handful of statements whatever
its length: one insert of the payments (for billing items, one locked read of what they were due and one upsert
of them), then one upsert per aggregate table with the run's changes summed per row, in key order so two batches
never wait in a circle. Other event types are applied by their own handlers, in their place, so the order within a
partition holds.

Alerts: a threshold is checked after every event that moves its metric, and an alert is raised by the event that
crosses it, so the value after each event matters. While a rule watches a metric a run moves, the run reads the
figures once before it moves them, works out the value after each of its events in the order one event at a
time would, and has `Alerts.check_in_order` check them all: the same alerts raised by the same events, in the same
order, and the same alert states left.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import String

from services.kpi import domain, queries
from services.kpi.domain import CountedEvent, DuesKey, Metric, StoredDue
from services.kpi.storage import (
    BACKLOG_SCOPE,
    daily_collections,
    daily_dues,
    daily_events,
    daily_receipts,
    payments,
    verification_backlog,
)
from services.kpi.storage import receivables as receivables_table
from shared.contracts import Envelope, parse_data
from shared.contracts.events import (
    CreditNoteApplied,
    CreditNoteExpired,
    CreditNoteIssued,
    CreditNoteRefundRequested,
    CreditNoteVoided,
    PaymentPosted,
)
from shared.messaging import Applying, apply_in_runs
from shared.money import quantize
from shared.receivables import ITEM_EVENT_TYPES, receivable_items

if TYPE_CHECKING:
    from services.kpi.projections import Projections

log = logging.getLogger(__name__)

POSTED = "payment.posted"
CREDIT_NOTE_EVENTS = (
    "credit_note.issued",
    "credit_note.applied",
    "credit_note.expired",
    "credit_note.voided",
    "credit_note.refund_requested",
)

# A row of `daily_events` (day, event, currency) and what it gains: (count, amount).
EventKey = tuple[date, str, str]
Counts = list[tuple[EventKey, int, Decimal]]


def credit_note_counts(envelope: Envelope, day_of: Callable[[Any], date]) -> Counts:
    """What one credit-note event adds to `daily_events`, for the handler and the batch alike. A void counts
    the credit given back, and takes the applications it reverses off the days they were counted on."""
    if envelope.type == "credit_note.voided":
        voided = parse_data(envelope, CreditNoteVoided)
        currency, given_back = voided.voided.currency, voided.voided.amount
        counts: Counts = []
        for reversal in voided.reversed:
            given_back += reversal.amount.amount
            applied = (day_of(reversal.applied_at), CountedEvent.CREDIT_NOTES_APPLIED.value, currency)
            counts.append((applied, 0, -reversal.amount.amount))
        counts.append(((day_of(voided.voided_at), CountedEvent.CREDIT_NOTES_VOIDED.value, currency), 1, given_back))
        return counts
    if envelope.type == "credit_note.issued":
        issued = parse_data(envelope, CreditNoteIssued)
        at, event, money = issued.created_at, CountedEvent.CREDIT_NOTES_ISSUED, issued.amount
    elif envelope.type == "credit_note.applied":
        applied_note = parse_data(envelope, CreditNoteApplied)
        at, event, money = applied_note.applied_at, CountedEvent.CREDIT_NOTES_APPLIED, applied_note.applied
    elif envelope.type == "credit_note.expired":
        expired = parse_data(envelope, CreditNoteExpired)
        at, event, money = expired.expired_at, CountedEvent.CREDIT_NOTES_EXPIRED, expired.remaining
    else:
        refund = parse_data(envelope, CreditNoteRefundRequested)
        at, event, money = refund.requested_at, CountedEvent.CREDIT_NOTES_REFUNDED, refund.amount
    return [((day_of(at), event.value, money.currency), 1, money.amount)]


def _summed(changes: Iterable[tuple[tuple[Any, ...], Sequence[Any]]]) -> list[tuple[tuple[Any, ...], list[Any]]]:
    """Changes to the same row added up, rows in key order (the order their locks are taken in)."""
    sums: dict[tuple[Any, ...], list[Any]] = {}
    for key, values in changes:
        if key in sums:
            sums[key] = [a + b for a, b in zip(sums[key], values, strict=True)]
        else:
            sums[key] = list(values)
    return sorted(sums.items())


def _adding(table: Table, keys: Sequence[str], counters: Sequence[str]) -> Any:
    """An upsert adding `counters` to the row at `keys` (created at them), executed with many rows: built once,
    compiled once, where `.values([...])` would compile each time."""
    statement = pg_insert(table)
    return statement.on_conflict_do_update(
        index_elements=list(keys), set_={name: table.c[name] + statement.excluded[name] for name in counters}
    )


_COLLECTION_KEYS = ("day", "currency", "channel", "method", "payment_type")
_COLLECTION_COUNTERS = ("payments", "collected", "timed_payments", "collection_days")
_ADD_COLLECTIONS = _adding(daily_collections, _COLLECTION_KEYS, _COLLECTION_COUNTERS)
_ADD_RECEIPTS = _adding(daily_receipts, ("day", "currency"), ("payments", "received"))
_ADD_BACKLOG = _adding(verification_backlog, ("scope",), ("pending",))
_ADD_DUES = _adding(daily_dues, ("day", "currency", "payment_type"), ("items", "due"))
_ADD_EVENTS = _adding(daily_events, ("day", "event", "currency"), ("count", "amount"))
_INSERT_PAYMENTS = pg_insert(payments).on_conflict_do_nothing().returning(payments.c.payment_id)
_new_dues = pg_insert(receivables_table)
# A re-issued item keeps the currency it was first due in, as one event at a time keeps it.
_SET_DUES = _new_dues.on_conflict_do_update(
    index_elements=["payment_type", "item_reference"],
    set_={"due_date": _new_dues.excluded.due_date, "amount": _new_dues.excluded.amount},
)
# The stored due of many items in one statement, locked as one event at a time locks each.
_STORED_DUES = text(
    "SELECT r.payment_type, r.item_reference, r.due_date, r.amount, r.currency FROM kpi.receivables AS r "
    "JOIN unnest(:types, :references) AS k(payment_type, item_reference) USING (payment_type, item_reference) "
    "ORDER BY r.payment_type, r.item_reference FOR UPDATE OF r"
).bindparams(bindparam("types", type_=ARRAY(String)), bindparam("references", type_=ARRAY(String)))


class KpiBatches:
    """The batch handlers of kpi's payments, billing and credit notes consumers."""

    def __init__(self, projections: Projections) -> None:
        self.projections = projections
        self.alerts = projections.alerts

    async def _rate_figures(self, session: AsyncSession, periods: Iterable[str]) -> dict[str, tuple[Decimal, Decimal]]:
        """Collected and due in each period, in the currency the collection rate is measured in, as they stand."""
        figures = {}
        for period in sorted(set(periods)):
            start, end = domain.month_bounds(period)
            collected = await queries.collections(session, start, end, self.alerts.currency)
            figures[period] = (collected.collected, await queries.due(session, start, end, self.alerts.currency))
        return figures

    def _rate(self, collected: Decimal, due: Decimal) -> Decimal | None:
        currency = self.alerts.currency
        return domain.collection_rate(quantize(collected, currency), quantize(due, currency))

    # --- payments.events.v1 ---

    async def payments(self, session: AsyncSession, batch: Sequence[Applying]) -> None:
        await apply_in_runs(session, batch, (POSTED,), self.post_payments, self.projections.payment_handlers())

    async def post_payments(self, session: AsyncSession, run: Sequence[Applying]) -> None:
        """Record the run's payments and add the new ones to the aggregates, in four statements at most."""
        rows: list[dict[str, Any]] = []
        envelopes: dict[str, Envelope] = {}
        for applying in run:
            row = self.projections.payment_row(parse_data(applying.envelope, PaymentPosted))
            if row["payment_id"] in envelopes:
                _already_counted(row["payment_id"], applying.envelope)
                continue
            envelopes[row["payment_id"]] = applying.envelope
            rows.append(row)
        inserted = {found.payment_id for found in await session.execute(_INSERT_PAYMENTS, rows)}
        fresh = []
        for row in rows:
            if row["payment_id"] in inserted:
                fresh.append(row)
            else:
                _already_counted(row["payment_id"], envelopes[row["payment_id"]])
        checks = await self._payment_checks(session, fresh)
        counted = [row for row in fresh if row["counted"]]
        if counted:
            await self._collect(session, counted)
        if checks:
            await self.alerts.check_in_order(session, checks)

    async def _payment_checks(
        self, session: AsyncSession, fresh: Sequence[dict[str, Any]]
    ) -> list[tuple[Metric, str, Decimal | None]]:
        """The alert checks one event at a time makes after each new payment: the collection rate of its payment
        date's period, then the pending verifications. Read before the aggregates move."""
        if self.projections.replaying or not fresh:
            return []
        rate_rules = await self.alerts.rules.for_metric(session, Metric.COLLECTION_RATE)
        pending_rules = await self.alerts.rules.for_metric(session, Metric.PENDING_VERIFICATIONS)
        if not rate_rules and not pending_rules:
            return []
        periods = (domain.period_of(r["payment_date"]) for r in fresh)
        figures = await self._rate_figures(session, periods) if rate_rules else {}
        pending = await queries.pending_verifications(session) if pending_rules else 0
        checks: list[tuple[Metric, str, Decimal | None]] = []
        for row in fresh:
            if rate_rules:
                period = domain.period_of(row["payment_date"])
                collected, due = figures[period]
                if row["counted"] and row["currency"] == self.alerts.currency:
                    collected += row["amount"]
                    figures[period] = (collected, due)
                checks.append((Metric.COLLECTION_RATE, period, self._rate(collected, due)))
            if pending_rules:
                if row["counted"] and row["verification"] == domain.PENDING_VERIFICATION:
                    pending += 1
                checks.append((Metric.PENDING_VERIFICATIONS, "current", Decimal(pending)))
        return checks

    async def _collect(self, session: AsyncSession, counted: Sequence[dict[str, Any]]) -> None:
        """Add the counted payments to the collections, the receipts and the verification backlog."""
        collections = _summed(
            (
                (row["payment_date"], row["currency"], row["channel"], row["method"], row["payment_type"]),
                (1, row["amount"], int(row["collection_days"] is not None), row["collection_days"] or 0),
            )
            for row in counted
        )
        await session.execute(
            _ADD_COLLECTIONS,
            [dict(zip(_COLLECTION_KEYS + _COLLECTION_COUNTERS, (*k, *v), strict=True)) for k, v in collections],
        )
        received = _summed(((row["posted_day"], row["currency"]), (1, row["amount"])) for row in counted)
        await session.execute(
            _ADD_RECEIPTS, [{"day": d, "currency": c, "payments": n, "received": a} for (d, c), (n, a) in received]
        )
        pending = sum(row["verification"] == domain.PENDING_VERIFICATION for row in counted)
        if pending:
            await session.execute(_ADD_BACKLOG, [{"scope": BACKLOG_SCOPE, "pending": pending}])

    # --- billing.receivables.v1 ---

    async def billing(self, session: AsyncSession, batch: Sequence[Applying]) -> None:
        await apply_in_runs(session, batch, ITEM_EVENT_TYPES, self.items_fall_due, self.projections.billing_handlers())

    async def items_fall_due(self, session: AsyncSession, run: Sequence[Applying]) -> None:
        """The run's items in three statements: read (and lock) what they were due, store them, move the dues."""
        issued = [
            (item.as_row("payment_type", "item_reference"), item)
            for applying in run
            if applying.envelope.source != domain.COLLECTIONS_SOURCE  # installments re-state bills already due
            for item in receivable_items(applying.envelope)
        ]
        if not issued:
            return
        keys = sorted({(key["payment_type"], key["item_reference"]) for key, _ in issued})
        found = await session.execute(_STORED_DUES, {"types": [k[0] for k in keys], "references": [k[1] for k in keys]})
        earlier = {(r.payment_type, r.item_reference): StoredDue(r.due_date, r.amount, r.currency) for r in found}
        folded = domain.fold_dues(
            earlier,
            [
                ((key["payment_type"], key["item_reference"]), StoredDue(item.due_date, item.amount, item.currency))
                for key, item in issued
            ],
        )
        if not folded.moves:
            return
        checks = await self._dues_checks(session, folded.steps)
        await session.execute(
            _SET_DUES,
            [
                {
                    "payment_type": t,
                    "item_reference": r,
                    "due_date": d.due_date,
                    "amount": d.amount,
                    "currency": d.currency,
                }
                for (t, r), d in sorted(folded.stored.items())
            ],
        )
        await session.execute(
            _ADD_DUES,
            [
                {"day": day, "currency": currency, "payment_type": kind, "items": items, "due": due}
                for (day, currency, kind), (items, due) in sorted(folded.moves.items())
            ],
        )
        if checks:
            await self.alerts.check_in_order(session, checks)

    async def _dues_checks(
        self, session: AsyncSession, steps: Sequence[tuple[DuesKey, int, Decimal]]
    ) -> list[tuple[Metric, str, Decimal | None]]:
        """One collection-rate check after each move of a due (its period), as one event at a time makes them."""
        if self.projections.replaying or not await self.alerts.rules.for_metric(session, Metric.COLLECTION_RATE):
            return []
        figures = await self._rate_figures(session, (domain.period_of(day) for (day, _, _), _, _ in steps))
        checks: list[tuple[Metric, str, Decimal | None]] = []
        for (day, currency, _), _, amount in steps:
            period = domain.period_of(day)
            collected, due = figures[period]
            if currency == self.alerts.currency:
                due += amount
                figures[period] = (collected, due)
            checks.append((Metric.COLLECTION_RATE, period, self._rate(collected, due)))
        return checks

    # --- creditnotes.events.v1: every event only adds to `daily_events` ---

    async def credit_notes(self, session: AsyncSession, batch: Sequence[Applying]) -> None:
        """A whole batch in one statement: no credit-note event has an alert on it."""
        counts = _summed(
            (key, (count, amount))
            for applying in batch
            for key, count, amount in credit_note_counts(applying.envelope, self.projections.day)
        )
        if not counts:
            return
        await session.execute(
            _ADD_EVENTS,
            [{"day": d, "event": e, "currency": c, "count": n, "amount": a} for (d, e, c), (n, a) in counts],
        )


def _already_counted(payment_id: str, envelope: Envelope) -> None:
    # Posted once per payment: a second announcement (a new event id for the same payment) adds nothing.
    log.warning("payment already counted", extra={"payment_id": payment_id, "event_id": str(envelope.id)})
