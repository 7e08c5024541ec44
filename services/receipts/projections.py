"""Receipts' projections: documents kept in step with the events. Each handler runs in the event consumer's
transaction.

Documents are rendered eagerly, when an event changes what a document says, and stored with their
hashes; the HTTP routes only read bytes. Every handler first takes a transaction-scoped advisory lock on
the receipt (or credit note) it touches: payments and credit notes arrive on different topics, through two
event consumers running side by side, and without the lock a `credit_note.issued` and the `payment.posted` it
refers to could each commit without seeing the other, leaving a receipt that never mentions its credit note.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.receipts import domain
from services.receipts.domain import Document, DocumentStyle, PaymentState
from services.receipts.rendering import PdfRenderer
from services.receipts.storage import credit_note_activity, credit_notes, documents, payment_states, receipts
from shared.contracts import Envelope, Topic, new_envelope, parse_data
from shared.contracts.events import (
    CreditNoteApplied,
    CreditNoteExpired,
    CreditNoteIssued,
    PaymentCancelled,
    PaymentPosted,
    PaymentStatusChanged,
    PaymentVerified,
    ReceiptRendered,
)
from shared.messaging import Subscription
from shared.outbox import stage

SOURCE = "receipts"


async def _lock(session: AsyncSession, kind: str, number: str) -> None:
    """Serialise, until commit, every transaction that touches this document."""
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(f"receipts:{kind}:{number}", 0))))


class Documents:
    """Keeps each document in step with the events; stages `receipt.rendered` whenever one changes."""

    def __init__(self, renderer: PdfRenderer, style: DocumentStyle) -> None:
        self.renderer = renderer
        self.style = style

    def subscriptions(self) -> list[Subscription]:
        return [
            Subscription(
                "payments",
                Topic.PAYMENTS_EVENTS,
                {
                    "payment.posted": self.on_payment_posted,
                    "payment.status_changed": self.on_payment_status_changed,
                    "payment.verified": self.on_payment_verified,
                    "payment.cancelled": self.on_payment_cancelled,
                },
            ),
            Subscription(
                "credit_notes",
                Topic.CREDITNOTES_EVENTS,
                {
                    "credit_note.issued": self.on_credit_note_issued,
                    "credit_note.applied": self.on_credit_note_applied,
                    "credit_note.expired": self.on_credit_note_expired,
                },
            ),
        ]

    # --- payments.events.v1 ---

    async def on_payment_posted(self, session: AsyncSession, envelope: Envelope) -> None:
        posted = parse_data(envelope, PaymentPosted)
        await _lock(session, domain.RECEIPT, posted.receipt_number)
        await session.execute(
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
        )
        earlier = await _load_state(session, posted.receipt_number)
        state = domain.state_when_posted(posted, earlier)
        await _save_state(session, posted.receipt_number, posted.payment_id, posted.consumer.account_number, state)
        await self.refresh_receipt(session, posted.receipt_number)

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

    async def _record_activity(self, session: AsyncSession, number: str, **values: Any) -> None:
        await _lock(session, domain.CREDIT_NOTE, number)
        await session.execute(
            pg_insert(credit_note_activity).values(credit_note_number=number, **values).on_conflict_do_nothing()
        )
        await self.refresh_credit_note(session, number)

    # --- documents ---

    async def refresh_receipt(self, session: AsyncSession, receipt_number: str) -> None:
        """Re-render the receipt if what it says changed; nothing until the payment is posted."""
        row = (
            await session.execute(select(receipts.c.payment).where(receipts.c.receipt_number == receipt_number))
        ).first()
        if row is None:
            return
        posted = PaymentPosted.model_validate(row.payment)
        state = await _load_state(session, receipt_number) or domain.state_when_posted(posted, None)
        notes = [
            CreditNoteIssued.model_validate(issued)
            for issued in (
                await session.execute(
                    select(credit_notes.c.issued).where(credit_notes.c.receipt_number == receipt_number)
                )
            ).scalars()
        ]
        await self._store(session, domain.receipt_document(posted, state, notes, self.style))

    async def refresh_credit_note(self, session: AsyncSession, number: str) -> None:
        """Re-render the credit note if what it says changed; nothing until it is issued."""
        row = (
            await session.execute(select(credit_notes.c.issued).where(credit_notes.c.credit_note_number == number))
        ).first()
        if row is None:
            return
        activity = [
            domain.CreditNoteActivity(at=a.at, remaining=Decimal(a.remaining), status=a.status, applied=a.applied)
            for a in await session.execute(
                select(credit_note_activity).where(credit_note_activity.c.credit_note_number == number)
            )
        ]
        issued = CreditNoteIssued.model_validate(row.issued)
        await self._store(session, domain.credit_note_document(issued, activity, self.style))

    async def _store(self, session: AsyncSession, document: Document) -> None:
        """Render and keep the document unless the stored one already says exactly this (same hash)."""
        stored = (
            await session.execute(
                select(documents.c.document_hash, documents.c.revision).where(
                    documents.c.kind == document.kind, documents.c.number == document.number
                )
            )
        ).first()
        if stored is not None and stored.document_hash == document.document_hash:
            return
        # Typst compiles in a worker thread: a few milliseconds of CPU the event loop should not wait on.
        pdf = await asyncio.to_thread(self.renderer.pdf, document)
        sha256 = hashlib.sha256(pdf).hexdigest()
        rendered_at = datetime.now(UTC)
        revision = (stored.revision if stored is not None else 0) + 1
        values = {
            "account_number": document.account_number,
            "revision": revision,
            "document_hash": document.document_hash,
            "sha256": sha256,
            "content": document.to_json(),
            "pdf": pdf,
            "rendered_at": rendered_at,
        }
        await session.execute(
            pg_insert(documents)
            .values(kind=document.kind, number=document.number, **values)
            .on_conflict_do_update(index_elements=["kind", "number"], set_=values)
        )
        rendered = ReceiptRendered(
            document=document.kind,
            number=document.number,
            account_number=document.account_number,
            sha256=sha256,
            rendered_at=rendered_at,
            revision=revision,
            document_hash=document.document_hash,
            status=document.status,
        )
        await stage(
            session,
            Topic.RECEIPTS_EVENTS,
            new_envelope("receipt.rendered", source=SOURCE, subject=document.account_number, data=rendered),
        )


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
