"""KPI's consumers a delivery batch at a time: payments posted, billing's items and credit notes' happenings.

A lockbox file or a morning at the counters is a stream of `payment.posted`, and month-end a bill for every
account. One event at a time cost one to three statements each, and building them cost more CPU than Postgres
spent running them. Here a run of consecutive events of those types takes a fixed handful of statements whatever
its length: one insert of the payments (or one read of the items they re-issue and one upsert of them), then one
upsert per aggregate table with the run's changes summed per row, in key order so two batches never wait in a
circle. Other event types are applied by their own handlers, in their place, so the order within a partition
holds.

Alerts: a threshold is checked after every event that moves its metric, and an alert is raised by the event that
crosses it, so the value after each event matters. While a rule watches a metric a run moves, the run is applied
one event at a time by the ordinary handlers (same statements, same alerts, in the same transaction); with no rule
on it, no event stages anything and only the sums remain, which a batch leaves exactly as one by one does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import String

from services.kpi import domain
from services.kpi.domain import CountedEvent, Metric, StoredDue
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
from shared.messaging import Applying, EventHandler, apply_in_runs
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

    async def _watched(self, session: AsyncSession, *metrics: Metric) -> bool:
        """Whether an alert rule watches any of `metrics` (never while replaying history: no alert is raised)."""
        if self.projections.replaying:
            return False
        for metric in metrics:
            if await self.alerts.rules.for_metric(session, metric):
                return True
        return False

    async def _in_runs(
        self,
        session: AsyncSession,
        batch: Sequence[Applying],
        together: Sequence[str],
        apply_run: Callable[[AsyncSession, Sequence[Applying]], Any],
        handlers: Mapping[str, EventHandler],
        watched: Sequence[Metric],
    ) -> None:
        if watched and any(a.envelope.type in together for a in batch) and await self._watched(session, *watched):
            together = ()  # the value after each event decides which event raises an alert: one by one
        await apply_in_runs(session, batch, together, apply_run, handlers)

    # --- payments.events.v1 ---

    async def payments(self, session: AsyncSession, batch: Sequence[Applying]) -> None:
        handlers = self.projections.payment_handlers()
        watched = (Metric.COLLECTION_RATE, Metric.PENDING_VERIFICATIONS)
        await self._in_runs(session, batch, (POSTED,), self.post_payments, handlers, watched)

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
        counted = []
        for row in rows:
            if row["payment_id"] not in inserted:
                _already_counted(row["payment_id"], envelopes[row["payment_id"]])
            elif row["counted"]:
                counted.append(row)
        if not counted:
            return
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
        handlers = self.projections.billing_handlers()
        await self._in_runs(session, batch, ITEM_EVENT_TYPES, self.items_fall_due, handlers, (Metric.COLLECTION_RATE,))

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
