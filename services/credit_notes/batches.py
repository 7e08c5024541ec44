"""Credit notes' consumer of `payments.events.v1` a delivery batch at a time.

The `payment.posted` and `payment.overpaid` events of a batch are applied with a fixed handful of statements
whatever their number: one upsert of the payments and one of the items they settled, then for the overpayments one
guard insert, one lock of their payments (in receipt order), one look for automatic notes already issued, one
settings read, one draw of credit-note numbers, one insert each of credit notes and audit entries, one update of
the payments and one insert into the outbox. One event at a time took two statements per posting and about ten
per overpayment.

Other event types in the batch are applied by their own handlers, in their place, so the order within a partition
holds. Anything out of the ordinary (a payment posted or overpaid twice in one batch, an overpayment before its
posting, a credit that would take back part of what a payment settled, a rule refusing a note) raises: the batch
rolls back and the consumer applies each event alone, with retries and the DLQ.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Integer, String, any_, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.credit_notes import domain
from services.credit_notes.commands import _issued_event
from services.credit_notes.queries import load_policy
from services.credit_notes.storage import audit_log, credit_note_number_seq, credit_notes, open_items, payments
from shared import audit, ledger
from shared.contracts import PaymentStatus, Topic, parse_data
from shared.contracts.events import PaymentOverpaid, PaymentPosted
from shared.messaging import Applying, EventHandler, apply_in_runs
from shared.outbox import Outgoing, stage_all

POSTED = "payment.posted"
OVERPAID = "payment.overpaid"
DETAILS = ("payment_date", "method", "channel", "payment_type", "item_reference", "allocated")

# The batch's statements, built once: executed with a list of rows, each is compiled once and cached, where built
# per batch with the rows inline, SQLAlchemy made and compiled a new statement (15 columns a row) for every batch.
_new_payment = pg_insert(payments)
# A row made from an earlier `payment.overpaid` lacks the item; a replayed `payment.posted` changes nothing.
_POST_PAYMENTS = _new_payment.on_conflict_do_update(
    index_elements=["receipt_number"],
    set_={column: _new_payment.excluded[column] for column in DETAILS},
    where=payments.c.payment_type.is_(None),
).returning(payments.c.receipt_number)
_paid = pg_insert(open_items)
# What each item was paid, added (items in key order); never below zero, as `add_to_item`.
_ADD_PAID = _paid.on_conflict_do_update(
    index_elements=["payment_type", "item_reference"],
    set_={"paid": func.greatest(open_items.c.paid + _paid.excluded.paid, 0)},
)
# `payment.posted` comes first on the same partition; this only guards a producer that sends them apart.
_GUARD_PAYMENTS = pg_insert(payments).on_conflict_do_nothing(index_elements=["receipt_number"])
_receipts = bindparam("receipts", type_=ARRAY(String))
# Row locks in receipt order: credit notes on one payment are issued one after another.
_LOCK_PAYMENTS = (
    select(payments)
    .where(payments.c.receipt_number == any_(_receipts))
    .order_by(payments.c.receipt_number)
    .with_for_update()
)
# The inbox drops a redelivered event; this drops the same overpayment announced again under a new id.
_CREDITED_BEFORE = select(credit_notes.c.receipt_number).where(
    credit_notes.c.receipt_number == any_(_receipts), credit_notes.c.automatic
)
_ISSUE_NOTES = credit_notes.insert()
_AUDIT = audit_log.insert()
_CREDIT_PAYMENTS = (
    update(payments)
    .where(payments.c.receipt_number == bindparam("r"))
    .values(
        credited=bindparam("credited", type_=payments.c.credited.type),
        allocated=bindparam("allocated", type_=payments.c.allocated.type),
    )
)
# `count` credit-note sequence values in one round trip.
_DRAW_NUMBERS = select(credit_note_number_seq.next_value()).select_from(
    func.generate_series(1, bindparam("count", type_=Integer))
)


class OneByOne(Exception):
    """The batch needs the one-event-at-a-time path."""


class PaymentBatches:
    """The batch handler of credit notes' payments consumer: runs of postings and overpayments applied together."""

    def __init__(self, handlers: Mapping[str, EventHandler], number_format: domain.NumberFormat) -> None:
        self.handlers = dict(handlers)
        self.number_format = number_format

    async def apply(self, session: AsyncSession, batch: Sequence[Applying]) -> None:
        """Apply a batch in order in the caller's transaction; raises if the batch path cannot take it."""
        await apply_in_runs(session, batch, (POSTED, OVERPAID), self.post, self.handlers)

    async def post(self, session: AsyncSession, run: Sequence[Applying]) -> None:
        """Consecutive postings and overpayments: every posting first, then the overpayments' credit notes, which
        is their order one by one too, since each payment's overpayment follows its posting."""
        if not run:
            return
        posted: list[PaymentPosted] = []
        overpaid: list[tuple[Applying, PaymentOverpaid]] = []
        for applying in run:
            if applying.envelope.type == POSTED:
                posting = parse_data(applying.envelope, PaymentPosted)
                if any(o.receipt_number == posting.receipt_number for _, o in overpaid):
                    raise OneByOne("an overpayment before its posting")
                posted.append(posting)
            else:
                overpaid.append((applying, parse_data(applying.envelope, PaymentOverpaid)))
        for numbers in ([p.receipt_number for p in posted], [o.receipt_number for _, o in overpaid]):
            if len(set(numbers)) != len(numbers):
                raise OneByOne("a payment posted or overpaid twice in one batch")
        await _post_payments(session, posted)
        await self._credit_overpayments(session, overpaid)

    async def _credit_overpayments(
        self, session: AsyncSession, overpaid: Sequence[tuple[Applying, PaymentOverpaid]]
    ) -> None:
        """The automatic credit note of each overpaid payment: exactly one per payment."""
        if not overpaid:
            return
        await session.execute(
            _GUARD_PAYMENTS,
            [
                {
                    "receipt_number": o.receipt_number,
                    "payment_id": o.payment_id,
                    "account_number": o.consumer.account_number,
                    "consumer_name": o.consumer.name,
                    "amount": o.payment_amount.amount,
                    "currency": o.payment_amount.currency,
                    "payment_date": o.posted_at.date(),
                    "status": PaymentStatus.POSTED,
                    "posted_at": o.posted_at,
                }
                for _, o in overpaid
            ],
        )
        numbers = sorted(o.receipt_number for _, o in overpaid)
        locked = {row.receipt_number: row for row in await session.execute(_LOCK_PAYMENTS, {"receipts": numbers})}
        credited_before = set((await session.execute(_CREDITED_BEFORE, {"receipts": numbers})).scalars())
        due = [(a, o, locked[o.receipt_number]) for a, o in overpaid if o.receipt_number not in credited_before]
        if not due:
            return
        policy = await load_policy(session)
        now = datetime.now(UTC)
        expires_at = policy.expiry.expires_at(now)
        seqs = await _draw_numbers(session, len(due))
        notes: list[dict[str, Any]] = []
        payment_changes: list[dict[str, Any]] = []
        for (_, o, payment), seq in zip(due, seqs, strict=True):
            amount = o.overpaid.amount
            domain.PaymentCredit(
                amount=payment.amount,
                credited=payment.credited,
                payment_status=payment.status,
                refunded=payment.refunded,
            ).issue(amount)
            credited = payment.credited + amount
            allocated = ledger.settled_after_credit(
                payment.allocated, payment.amount, refunded=payment.refunded, credited=credited
            )
            if allocated < payment.allocated:
                raise OneByOne("a credit note would take back part of what a payment settled")
            notes.append(
                {
                    "credit_note_number": self.number_format.render(seq),
                    "seq": seq,
                    "account_number": payment.account_number,
                    "consumer_name": payment.consumer_name,
                    "receipt_number": payment.receipt_number,
                    "payment_id": payment.payment_id,
                    "amount": amount,
                    "applied": domain.ZERO,
                    "remaining": amount,
                    "currency": payment.currency,
                    "reason": domain.OVERPAYMENT,
                    "remarks": None,
                    "created_by": domain.SYSTEM,
                    "automatic": True,
                    "status": domain.Status.ACTIVE.value,
                    "created_at": now,
                    "expires_at": expires_at,
                }
            )
            payment_changes.append({"r": payment.receipt_number, "credited": credited, "allocated": allocated})
        await session.execute(_ISSUE_NOTES, notes)
        await session.execute(
            _AUDIT,
            [
                {
                    "id": str(uuid.uuid4()),
                    "at": now,
                    "actor": domain.SYSTEM,
                    "action": "credit_note.issued",
                    "subject": note["credit_note_number"],
                    "before": audit.as_json(None),
                    "after": audit.as_json(note),
                    "reason": None,
                }
                for note in notes
            ],
        )
        await session.execute(_CREDIT_PAYMENTS, sorted(payment_changes, key=lambda change: change["r"]))
        await stage_all(
            session,
            [
                Outgoing(Topic.CREDITNOTES_EVENTS, _issued_event(note), applying.context)
                for (applying, _, _), note in zip(due, notes, strict=True)
            ],
        )


async def _post_payments(session: AsyncSession, posted: Sequence[PaymentPosted]) -> None:
    """The payments read model for a run of postings, and what each settled added to its item."""
    if not posted:
        return
    rows = [
        {
            "receipt_number": p.receipt_number,
            "payment_id": p.payment_id,
            "account_number": p.consumer.account_number,
            "consumer_name": p.consumer.name,
            "amount": p.amount.amount,
            "currency": p.amount.currency,
            "status": PaymentStatus.POSTED,
            "posted_at": p.posted_at,
            **posting_details(p),
        }
        for p in posted
    ]
    first_sight = set((await session.execute(_POST_PAYMENTS, rows)).scalars())
    settled: dict[tuple[str, str], tuple[str, Decimal]] = {}
    for p in posted:
        if p.receipt_number in first_sight:
            key = (p.item.payment_type.value, p.item.item_reference)
            account, total = settled.get(key, (p.consumer.account_number, Decimal(0)))
            settled[key] = (account, total + allocated_of(p))
    if not settled:
        return
    await session.execute(
        _ADD_PAID,
        [
            {"payment_type": t, "item_reference": r, "account_number": account, "paid": max(total, Decimal(0))}
            for (t, r), (account, total) in sorted(settled.items())
        ],
    )


def allocated_of(posted: PaymentPosted) -> Decimal:
    """What a posting settled on its item: never more than was due."""
    return min(posted.amount.amount, posted.item.due.amount)


def posting_details(posted: PaymentPosted) -> dict[str, Any]:
    """What a posting adds to a payment first seen in its `payment.overpaid`."""
    return {
        "payment_date": posted.payment_date,
        "method": posted.method,
        "channel": posted.channel,
        "payment_type": posted.item.payment_type.value,
        "item_reference": posted.item.item_reference,
        "allocated": allocated_of(posted),
    }


async def _draw_numbers(session: AsyncSession, count: int) -> list[int]:
    """`count` credit-note sequence values in one round trip, ascending (numbers never reused, gaps allowed)."""
    return sorted(int(value) for value in (await session.execute(_DRAW_NUMBERS, {"count": count})).scalars())
