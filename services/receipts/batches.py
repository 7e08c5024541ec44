"""Receipts' consumer of `payments.events.v1` a delivery batch at a time.

The `payment.posted` events of a batch (what a lockbox file or a morning at the counters is made of) are stored
with a fixed handful of statements whatever their number: one advisory lock statement for the receipts of the
whole batch (taken up front in `domain.lock_order`, as the credit notes consumer's batches take theirs), one insert
of the receipts, one read and one upsert of their payment states, one read of credit notes that arrived first, one
upsert of the documents and one insert into the outbox. One event at a time took seven statements each,
and building those statements cost more CPU than Postgres spent running them.

Other event types in the batch (status changes, verifications, cancellations, adjustments) are applied by their
own handlers, in their place, so the order within a partition holds. Anything out of the ordinary for the batch
path (a receipt posted before, or twice in one batch) raises `OneByOne`: the batch rolls back and the consumer
applies each event alone, with retries and the DLQ.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from opentelemetry.context import Context
from sqlalchemy import Text, bindparam, literal_column, null, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.receipts import domain
from services.receipts.domain import Document, PaymentState
from services.receipts.storage import credit_note_activity, credit_notes, documents, payment_states, receipts
from shared.contracts import Topic, new_envelope, parse_data
from shared.contracts.events import CreditNoteIssued, PaymentPosted, ReceiptAvailable
from shared.messaging import Applying, apply_in_runs
from shared.outbox import Outgoing, stage_all

if TYPE_CHECKING:
    from services.receipts.projections import Documents

SOURCE = "receipts"
POSTED = "payment.posted"

# The advisory locks of the documents a transaction touches, taken in one statement in the order given (unnest
# yields the array in order): callers pass `domain.lock_order`, so no two transactions wait on each other in a circle.
_LOCK_DOCUMENTS = text("SELECT pg_advisory_xact_lock(hashtextextended(key, 0)) FROM unnest(:keys) AS key").bindparams(
    bindparam("keys", type_=ARRAY(Text))
)

# session.info key: the transaction whose locks are recorded, and the (kind, number) documents it holds.
_LOCKED = "receipts.locked"

# The documents each handler locks, named by the fields of its event's data: a batch takes them all up front.
PAYMENT_LOCKS = {
    event_type: ((domain.RECEIPT, "receipt_number"),)
    for event_type in (
        "payment.posted",
        "payment.status_changed",
        "payment.verified",
        "payment.cancelled",
        "payment.adjusted",
    )
}
CREDIT_NOTE_LOCKS = {
    "credit_note.issued": ((domain.RECEIPT, "receipt_number"), (domain.CREDIT_NOTE, "credit_note_number")),
    "credit_note.voided": ((domain.RECEIPT, "receipt_number"), (domain.CREDIT_NOTE, "credit_note_number")),
    "credit_note.applied": ((domain.CREDIT_NOTE, "credit_note_number"),),
    "credit_note.expired": ((domain.CREDIT_NOTE, "credit_note_number"),),
    "credit_note.refund_requested": ((domain.CREDIT_NOTE, "credit_note_number"),),
}


async def lock_documents(session: AsyncSession, touched: Iterable[tuple[str, str]]) -> None:
    """Serialise, until commit, every transaction that touches these (kind, number) documents.

    Locks already held by this transaction are not asked for again. Advisory locks are re-entrant, but a handler that
    locks its document after the batch locked them all would cost one more round trip per event."""
    transaction = session.sync_session.get_transaction()
    held_by, held = session.info.get(_LOCKED, (None, set()))
    if held_by is not transaction:
        held = set()
    wanted = [document for document in domain.lock_order(touched) if document not in held]
    if wanted:
        keys = [f"receipts:{kind}:{number}" for kind, number in wanted]
        await session.execute(_LOCK_DOCUMENTS, {"keys": keys})
        held.update(wanted)
    session.info[_LOCKED] = (transaction, held)


async def lock_batch(
    session: AsyncSession, batch: Sequence[Applying], locks: Mapping[str, Sequence[tuple[str, str]]]
) -> None:
    """Take every lock the batch's handlers will take, up front, in lock order and one statement.

    Taken event by event, two batches (the payments and credit notes consumers run side by side) could each hold a
    receipt the other waits for: Postgres then aborts one as a deadlock and the whole batch went one by one. An
    event whose data lacks a number locks nothing here: its handler refuses it after the batch falls back."""
    touched = []
    for applying in batch:
        for kind, field in locks.get(applying.envelope.type, ()):
            number = applying.envelope.data.get(field)
            if isinstance(number, str):
                touched.append((kind, number))
    await lock_documents(session, touched)


_STATE_FIELDS = (
    "status",
    "status_at",
    "verification",
    "verified_by",
    "verified_at",
    "cancelled_at",
    "cancelled_by",
    "cancel_reason",
)


class OneByOne(Exception):
    """The batch needs the one-event-at-a-time path."""


class PaymentBatches:
    """The batch handler of receipts' payments consumer: runs of `payment.posted` stored together."""

    def __init__(self, documents: Documents) -> None:
        self.documents = documents
        self.handlers = documents.payment_handlers()

    async def apply(self, session: AsyncSession, batch: Sequence[Applying]) -> None:
        """Apply a batch in order in the caller's transaction; raises if the batch path cannot take it."""
        await lock_batch(session, batch, PAYMENT_LOCKS)
        await apply_in_runs(session, batch, (POSTED,), self.post, self.handlers)

    async def post(self, session: AsyncSession, run: Sequence[Applying]) -> None:
        """Store the receipts of consecutive `payment.posted` events, each announced under its event's trace."""
        if not run:
            return
        posted = [parse_data(applying.envelope, PaymentPosted) for applying in run]
        numbers = [p.receipt_number for p in posted]
        if len(set(numbers)) != len(numbers):
            raise OneByOne("a receipt posted twice in one batch")
        await lock_documents(session, [(domain.RECEIPT, number) for number in numbers])  # held already in a batch
        # Rows as executemany parameters throughout: each statement is compiled once and sent as one multi-row
        # INSERT ("insertmanyvalues"). Built with `.values(rows)`, compiling them bind by bind was a quarter of the
        # consumer's CPU.
        inserted = {
            row.receipt_number: row.version
            for row in await session.execute(
                pg_insert(receipts)
                .on_conflict_do_nothing(index_elements=["receipt_number"])
                .returning(receipts.c.receipt_number, receipts.c.version),
                [
                    {
                        "receipt_number": p.receipt_number,
                        "payment_id": p.payment_id,
                        "account_number": p.consumer.account_number,
                        "consumer_name": p.consumer.name,
                        "amount": p.amount.amount,
                        "currency": p.amount.currency,
                        "amount_text": domain.amount_line(p),
                        "posted_at": p.posted_at,
                        "payment": p.model_dump(mode="json"),
                    }
                    for p in posted
                ],
            )
        }
        if len(inserted) != len(numbers):
            # A redelivery under a new id, or a receipt re-issued since: the stored payment is what it shows.
            raise OneByOne("a receipt was posted before")
        earlier = {
            row.receipt_number: PaymentState(**{field: row._mapping[field] for field in _STATE_FIELDS})
            for row in await session.execute(select(payment_states).where(payment_states.c.receipt_number.in_(numbers)))
        }
        states = [domain.state_when_posted(p, earlier.get(p.receipt_number)) for p in posted]
        state_rows = [
            {
                "receipt_number": p.receipt_number,
                "payment_id": p.payment_id,
                "account_number": p.consumer.account_number,
                **{field: getattr(state, field) for field in _STATE_FIELDS},
            }
            for p, state in zip(posted, states, strict=True)
        ]
        upsert = pg_insert(payment_states)
        await session.execute(
            upsert.on_conflict_do_update(
                index_elements=["receipt_number"],
                set_={field: upsert.excluded[field] for field in _STATE_FIELDS},
            ).returning(payment_states.c.receipt_number),  # RETURNING: one multi-row statement, not one per row
            state_rows,
        )
        notes, void_notes = await _credit_notes_of(session, numbers)
        style = self.documents.style
        await store_documents(
            session,
            [
                (
                    domain.receipt_document(
                        p,
                        state,
                        notes.get(p.receipt_number, []),
                        style,
                        void_notes=void_notes,
                        version=inserted[p.receipt_number],
                    ),
                    applying.context,
                )
                for applying, p, state in zip(run, posted, states, strict=True)
            ],
        )


class CreditNoteBatches:
    """The batch handler of receipts' credit notes consumer: every lock up front, then each event by its handler."""

    def __init__(self, documents: Documents) -> None:
        self.handlers = documents.credit_note_handlers()

    async def apply(self, session: AsyncSession, batch: Sequence[Applying]) -> None:
        """Apply a batch in order in the caller's transaction, each event under its own trace."""
        await lock_batch(session, batch, CREDIT_NOTE_LOCKS)
        await apply_in_runs(session, batch, (), _nothing_together, self.handlers)


async def _nothing_together(session: AsyncSession, run: Sequence[Applying]) -> None:
    """No credit note event is stored with others: each is rare enough, and its handler already cheap."""


async def _credit_notes_of(
    session: AsyncSession, receipt_numbers: Sequence[str]
) -> tuple[dict[str, list[CreditNoteIssued]], frozenset[str]]:
    """Credit notes already issued on these receipts (one can arrive before its payment), and which are void."""
    notes: dict[str, list[CreditNoteIssued]] = {}
    for row in await session.execute(
        select(credit_notes.c.receipt_number, credit_notes.c.issued).where(
            credit_notes.c.receipt_number.in_(receipt_numbers)
        )
    ):
        notes.setdefault(row.receipt_number, []).append(CreditNoteIssued.model_validate(row.issued))
    if not notes:  # most payments have none: no second round trip for them
        return notes, frozenset()
    void = (
        await session.execute(
            select(credit_note_activity.c.credit_note_number).where(
                credit_note_activity.c.credit_note_number.in_(
                    [n.credit_note_number for listed in notes.values() for n in listed]
                ),
                credit_note_activity.c.status == "Voided",
            )
        )
    ).scalars()
    return notes, frozenset(void)


async def store_documents(session: AsyncSession, changed: Sequence[tuple[Document, Context | None]]) -> None:
    """Keep what each document now says unless the stored one already says exactly this (same hash), and announce
    each one kept with `receipt.available` (continuing the trace given with it; None: the current one).

    The PDF is not rendered here: the render worker (`commands.RenderWorker`) renders it off this hot path, and a GET
    renders it on demand meanwhile. `receipt.available` tells other systems it can be fetched."""
    if not changed:
        return
    stored_at = datetime.now(UTC)
    rows = [
        {
            "kind": document.kind,
            "number": document.number,
            "account_number": document.account_number,
            "revision": 1,
            "document_hash": document.document_hash,
            "content": document.to_json(),
        }
        for document, _ in changed
    ]
    insert = pg_insert(documents)
    # One statement: new documents, or new content under the next revision, and nothing at all for one the stored
    # row already says exactly (same hash; then no row comes back). Whatever PDF was rendered before says something
    # else now: cleared, so the document is back in the render worker's queue.
    revisions = {
        (row.kind, row.number): row.revision
        for row in await session.execute(
            insert.on_conflict_do_update(
                index_elements=["kind", "number"],
                # No bound parameter in SET (literal 1 and NULLs): SQLAlchemy sends an upsert with one row at a time
                # when its SET has any, since a multi-row statement has only one SET.
                set_={
                    "account_number": insert.excluded.account_number,
                    "revision": documents.c.revision + literal_column("1"),
                    "document_hash": insert.excluded.document_hash,
                    "content": insert.excluded.content,
                    "sha256": null(),
                    "pdf": null(),
                    "rendered_at": null(),
                },
                where=documents.c.document_hash != insert.excluded.document_hash,
            ).returning(documents.c.kind, documents.c.number, documents.c.revision),
            rows,  # executemany parameters: compiled once, one multi-row statement
        )
    }
    announced = []
    for document, context in changed:
        revision = revisions.get((document.kind, document.number))
        if revision is None:
            continue
        available = ReceiptAvailable(
            document=document.kind,
            number=document.number,
            account_number=document.account_number,
            revision=revision,
            document_hash=document.document_hash,
            status=document.status,
            available_at=stored_at,
        )
        envelope = new_envelope("receipt.available", source=SOURCE, subject=document.account_number, data=available)
        announced.append(Outgoing(Topic.RECEIPTS_EVENTS, envelope, context))
    await stage_all(session, announced)
