"""Receipts' projections: documents kept in step with the events. Each handler runs in the event consumer's
transaction.

When an event changes what a document says, its content is stored at once with its hash and announced with
`receipt.available`; the PDF is rendered later, off this path, by the render worker (`commands.py`), or on the
first GET. Every handler first takes a transaction-scoped advisory lock on
the receipt (or credit note) it touches: payments and credit notes arrive on different topics, through two
event consumers running side by side, and without the lock a `credit_note.issued` and the `payment.posted` it
refers to could each commit without seeing the other, leaving a receipt that never mentions its credit note. A
batch takes all its events' locks up front in `domain.lock_order` (`batches.lock_batch`), so the two consumers'
batches never deadlock; a handler then asks only for a lock its transaction does not hold yet.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.receipts import domain
from services.receipts.batches import CreditNoteBatches, PaymentBatches, lock_documents, store_documents
from services.receipts.domain import Document, DocumentStyle, PaymentState
from services.receipts.rendering import PdfRenderer
from services.receipts.storage import (
    credit_note_activity,
    credit_notes,
    documents,
    payment_states,
    receipt_versions,
    receipts,
)
from shared.contracts import Envelope, Topic, parse_data
from shared.contracts.events import (
    CreditNoteApplied,
    CreditNoteExpired,
    CreditNoteIssued,
    CreditNoteRefundRequested,
    CreditNoteVoided,
    PaymentAdjusted,
    PaymentCancelled,
    PaymentPosted,
    PaymentStatusChanged,
    PaymentVerified,
)
from shared.errors import Rejected
from shared.messaging import EventHandler, Subscription


async def _lock(session: AsyncSession, kind: str, number: str) -> None:
    """Serialise, until commit, every transaction that touches this document (nothing more if a batch locked it)."""
    await lock_documents(session, [(kind, number)])


class Documents:
    """Keeps each document in step with the events; stages `receipt.available` whenever one changes."""

    def __init__(self, renderer: PdfRenderer, style: DocumentStyle) -> None:
        self.renderer = renderer
        self.style = style

    def payment_handlers(self) -> dict[str, EventHandler]:
        return {
            "payment.posted": self.on_payment_posted,
            "payment.status_changed": self.on_payment_status_changed,
            "payment.verified": self.on_payment_verified,
            "payment.cancelled": self.on_payment_cancelled,
            "payment.adjusted": self.on_payment_adjusted,
        }

    def credit_note_handlers(self) -> dict[str, EventHandler]:
        return {
            "credit_note.issued": self.on_credit_note_issued,
            "credit_note.applied": self.on_credit_note_applied,
            "credit_note.expired": self.on_credit_note_expired,
            "credit_note.voided": self.on_credit_note_voided,
            "credit_note.refund_requested": self.on_credit_note_refund_requested,
        }

    def subscriptions(self) -> list[Subscription]:
        return [
            Subscription(
                "payments",
                Topic.PAYMENTS_EVENTS,
                self.payment_handlers(),
                batch_handler=PaymentBatches(self).apply,
            ),
            Subscription(
                "credit_notes",
                Topic.CREDITNOTES_EVENTS,
                self.credit_note_handlers(),
                batch_handler=CreditNoteBatches(self).apply,
            ),
        ]

    # --- payments.events.v1 ---

    async def on_payment_posted(self, session: AsyncSession, envelope: Envelope) -> None:
        posted = parse_data(envelope, PaymentPosted)
        await _lock(session, domain.RECEIPT, posted.receipt_number)
        insert = (
            pg_insert(receipts)
            .values(
                receipt_number=posted.receipt_number,
                payment_id=posted.payment_id,
                account_number=posted.consumer.account_number,
                consumer_name=posted.consumer.name,
                amount=posted.amount.amount,
                currency=posted.amount.currency,
                amount_text=domain.amount_line(posted),
                posted_at=posted.posted_at,
                payment=posted.model_dump(mode="json"),
            )
            .on_conflict_do_nothing(index_elements=["receipt_number"])
            .returning(receipts.c.version)
        )
        inserted = (await session.execute(insert)).first()
        earlier = await _load_state(session, posted.receipt_number)
        state = domain.state_when_posted(posted, earlier)
        await _save_state(session, posted.receipt_number, posted.payment_id, posted.consumer.account_number, state)
        # Just inserted, the row says what this event says: no need to read it back. Otherwise (a redelivery, or
        # a receipt re-issued since by an adjustment) the stored payment is the one the document shows.
        known = (posted, inserted.version, state) if inserted is not None else None
        await self.refresh_receipt(session, posted.receipt_number, known=known)

    async def on_payment_status_changed(self, session: AsyncSession, envelope: Envelope) -> None:
        changed = parse_data(envelope, PaymentStatusChanged)
        await self._change_state(
            session,
            changed.receipt_number,
            changed.payment_id,
            changed.account_number,
            lambda s: s.with_status(changed.status, changed.changed_at),
            unposted=domain.first_sight(changed.status, changed.changed_at),
        )

    async def on_payment_verified(self, session: AsyncSession, envelope: Envelope) -> None:
        verified = parse_data(envelope, PaymentVerified)
        await self._change_state(
            session,
            verified.receipt_number,
            verified.payment_id,
            verified.account_number,
            lambda s: s.verified(verified.verified_by, verified.verified_at),
        )

    async def on_payment_cancelled(self, session: AsyncSession, envelope: Envelope) -> None:
        cancelled = parse_data(envelope, PaymentCancelled)
        await self._change_state(
            session,
            cancelled.receipt_number,
            cancelled.payment_id,
            cancelled.account_number,
            lambda s: s.cancelled(cancelled.cancelled_by, cancelled.reason, cancelled.cancelled_at),
        )

    async def _change_state(
        self,
        session: AsyncSession,
        receipt_number: str,
        payment_id: str,
        account_number: str,
        change: Callable[[PaymentState], PaymentState],
        *,
        unposted: PaymentState | None = None,
    ) -> None:
        await _lock(session, domain.RECEIPT, receipt_number)
        current = await _load_state(session, receipt_number)
        state = change(current) if current is not None else (unposted or change(domain.first_sight()))
        if state != current:
            await _save_state(session, receipt_number, payment_id, account_number, state)
            await self.refresh_receipt(session, receipt_number)

    # --- creditnotes.events.v1 ---

    async def on_credit_note_issued(self, session: AsyncSession, envelope: Envelope) -> None:
        issued = parse_data(envelope, CreditNoteIssued)
        # Receipt first, then the note: the one lock order every handler keeps, so none can deadlock.
        await _lock(session, domain.RECEIPT, issued.receipt_number)
        await _lock(session, domain.CREDIT_NOTE, issued.credit_note_number)
        await session.execute(
            pg_insert(credit_notes)
            .values(
                credit_note_number=issued.credit_note_number,
                receipt_number=issued.receipt_number,
                account_number=issued.account_number,
                issued=issued.model_dump(mode="json"),
            )
            .on_conflict_do_nothing(index_elements=["credit_note_number"])
        )
        await self.refresh_credit_note(session, issued.credit_note_number)
        await self.refresh_receipt(session, issued.receipt_number)

    async def on_credit_note_applied(self, session: AsyncSession, envelope: Envelope) -> None:
        applied = parse_data(envelope, CreditNoteApplied)
        await self._record_activity(
            session,
            applied.credit_note_number,
            kind="applied",
            item_reference=f"{applied.payment_type}:{applied.item_reference}",
            at=applied.applied_at,
            applied=applied.applied.amount,
            remaining=applied.remaining.amount,
            status=applied.status,
        )

    async def on_credit_note_expired(self, session: AsyncSession, envelope: Envelope) -> None:
        expired = parse_data(envelope, CreditNoteExpired)
        await self._record_activity(
            session,
            expired.credit_note_number,
            kind="expired",
            item_reference="",
            at=expired.expired_at,
            applied=None,
            remaining=expired.remaining.amount,
            status="Expired",
        )

    async def on_credit_note_voided(self, session: AsyncSession, envelope: Envelope) -> None:
        """The credit note says VOID, and so does its line on the receipt of the payment it came from."""
        voided = parse_data(envelope, CreditNoteVoided)
        await _lock(session, domain.RECEIPT, voided.receipt_number)
        given_back = voided.voided.amount + sum((r.amount.amount for r in voided.reversed), Decimal(0))
        await self._record_activity(
            session,
            voided.credit_note_number,
            kind="voided",
            item_reference="",
            at=voided.voided_at,
            applied=given_back,
            remaining=voided.remaining.amount,
            status=voided.status,
        )
        await self.refresh_receipt(session, voided.receipt_number)

    async def on_credit_note_refund_requested(self, session: AsyncSession, envelope: Envelope) -> None:
        refund = parse_data(envelope, CreditNoteRefundRequested)
        await self._record_activity(
            session,
            refund.credit_note_number,
            kind="refunded",
            item_reference="",
            at=refund.requested_at,
            applied=refund.amount.amount,
            remaining=Decimal(0),
            status="Refunded",
        )

    async def _record_activity(self, session: AsyncSession, number: str, **values: Any) -> None:
        await _lock(session, domain.CREDIT_NOTE, number)
        await session.execute(
            pg_insert(credit_note_activity).values(credit_note_number=number, **values).on_conflict_do_nothing()
        )
        await self.refresh_credit_note(session, number)

    # --- adjustments: the receipt is re-issued under the next version; the old one is kept, superseded ---

    async def on_payment_adjusted(self, session: AsyncSession, envelope: Envelope) -> None:
        adjusted = parse_data(envelope, PaymentAdjusted)
        await _lock(session, domain.RECEIPT, adjusted.receipt_number)
        row = (
            await session.execute(select(receipts).where(receipts.c.receipt_number == adjusted.receipt_number))
        ).first()
        if row is None:
            raise Rejected("unknown_receipt", f"receipt {adjusted.receipt_number} was never posted")
        if row.version >= adjusted.receipt_version:
            return  # this version (or a later one) is already issued
        current = (
            await session.execute(
                select(documents).where(
                    documents.c.kind == domain.RECEIPT, documents.c.number == adjusted.receipt_number
                )
            )
        ).first()
        superseded = await self._receipt(session, row.receipt_number, superseded_by=adjusted.receipt_version)
        if current is not None and superseded is not None:
            pdf = await asyncio.to_thread(self.renderer.pdf, superseded)
            await session.execute(
                pg_insert(receipt_versions)
                .values(
                    receipt_number=adjusted.receipt_number,
                    version=row.version,
                    document_hash=superseded.document_hash,
                    sha256=hashlib.sha256(pdf).hexdigest(),
                    content=superseded.to_json(),
                    pdf=pdf,
                    superseded_at=adjusted.adjusted_at,
                    superseded_by=adjusted.receipt_version,
                )
                .on_conflict_do_nothing()
            )
        posted = PaymentPosted.model_validate(row.payment)
        difference = adjusted.amount.amount - adjusted.item.due.amount
        payment = posted.model_copy(
            update={
                "item": adjusted.item,
                "amount": adjusted.amount,
                "difference": adjusted.amount.model_copy(update={"amount": difference}),
                "outcome": "exact" if difference == 0 else ("over" if difference > 0 else "under"),
            }
        )
        await session.execute(
            update(receipts)
            .where(receipts.c.receipt_number == adjusted.receipt_number)
            .values(
                payment=payment.model_dump(mode="json"),
                amount=adjusted.amount.amount,
                amount_text=domain.amount_line(payment),
                version=adjusted.receipt_version,
            )
        )
        await self.refresh_receipt(session, adjusted.receipt_number)

    # --- documents ---

    async def refresh_receipt(
        self,
        session: AsyncSession,
        receipt_number: str,
        *,
        known: tuple[PaymentPosted, int, PaymentState] | None = None,
    ) -> None:
        """Store the receipt anew if what it says changed; nothing until the payment is posted."""
        document = await self._receipt(session, receipt_number, known=known)
        if document is not None:
            await self._store(session, document)

    async def _receipt(
        self,
        session: AsyncSession,
        receipt_number: str,
        *,
        superseded_by: int | None = None,
        known: tuple[PaymentPosted, int, PaymentState] | None = None,
    ) -> Document | None:
        """The receipt as the stored rows say, or as `known` (payment, version, state) says when the caller has them."""
        if known is not None:
            posted, version, state = known
        else:
            row = (
                await session.execute(
                    select(receipts.c.payment, receipts.c.version).where(receipts.c.receipt_number == receipt_number)
                )
            ).first()
            if row is None:
                return None
            posted, version = PaymentPosted.model_validate(row.payment), row.version
            state = await _load_state(session, receipt_number) or domain.state_when_posted(posted, None)
        notes = [
            CreditNoteIssued.model_validate(issued)
            for issued in (
                await session.execute(
                    select(credit_notes.c.issued).where(credit_notes.c.receipt_number == receipt_number)
                )
            ).scalars()
        ]
        void_notes: frozenset[str] = frozenset()
        if notes:  # most payments have none: no second round trip for them
            void_notes = frozenset(
                (
                    await session.execute(
                        select(credit_note_activity.c.credit_note_number).where(
                            credit_note_activity.c.credit_note_number.in_([n.credit_note_number for n in notes]),
                            credit_note_activity.c.status == "Voided",
                        )
                    )
                ).scalars()
            )
        return domain.receipt_document(
            posted,
            state,
            notes,
            self.style,
            void_notes=void_notes,
            version=version,
            superseded_by=superseded_by,
        )

    async def refresh_credit_note(self, session: AsyncSession, number: str) -> None:
        """Store the credit note anew if what it says changed; nothing until it is issued."""
        row = (
            await session.execute(select(credit_notes.c.issued).where(credit_notes.c.credit_note_number == number))
        ).first()
        if row is None:
            return
        activity = [
            domain.CreditNoteActivity(
                at=a.at,
                remaining=Decimal(a.remaining),
                status=a.status,
                applied=a.applied if a.kind == "applied" else None,
                given_back=Decimal(a.applied) if a.kind in ("voided", "refunded") else Decimal(0),
            )
            for a in await session.execute(
                select(credit_note_activity).where(credit_note_activity.c.credit_note_number == number)
            )
        ]
        issued = CreditNoteIssued.model_validate(row.issued)
        await self._store(session, domain.credit_note_document(issued, activity, self.style))

    async def _store(self, session: AsyncSession, document: Document) -> None:
        """Keep what the document now says unless the stored one already says exactly this (same hash)."""
        await store_documents(session, [(document, None)])


async def _load_state(session: AsyncSession, receipt_number: str) -> PaymentState | None:
    row = (
        (await session.execute(select(payment_states).where(payment_states.c.receipt_number == receipt_number)))
        .mappings()
        .first()
    )
    if row is None:
        return None
    return PaymentState(**{k: v for k, v in row.items() if k not in ("receipt_number", "payment_id", "account_number")})


async def _save_state(
    session: AsyncSession, receipt_number: str, payment_id: str, account_number: str, state: PaymentState
) -> None:
    values = {
        "status": state.status,
        "status_at": state.status_at,
        "verification": state.verification,
        "verified_by": state.verified_by,
        "verified_at": state.verified_at,
        "cancelled_at": state.cancelled_at,
        "cancelled_by": state.cancelled_by,
        "cancel_reason": state.cancel_reason,
    }
    await session.execute(
        pg_insert(payment_states)
        .values(receipt_number=receipt_number, payment_id=payment_id, account_number=account_number, **values)
        .on_conflict_do_update(index_elements=["receipt_number"], set_=values)
    )


def subscriptions(renderer: PdfRenderer, style: DocumentStyle) -> list[Subscription]:
    """Receipts' event consumers: payments and credit notes, each a consumer group of its own."""
    return Documents(renderer, style).subscriptions()
