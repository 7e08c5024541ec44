"""Receipts' and credit notes' consumers of payments.events.v1 applying a delivery batch at a time, on the real
database and broker: what each stores, the statements a batch costs, and the DLQ for a bad event."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import event, func, select

from services.credit_notes.app import CreditNotesService
from services.credit_notes.app import create_service as create_credit_notes
from services.credit_notes.settings import CreditNotesSettings
from services.credit_notes.storage import credit_notes, open_items
from services.credit_notes.storage import payments as credit_notes_payments
from services.receipts.app import create_service as create_receipts
from services.receipts.app import document_style
from services.receipts.domain import receipt_document, state_when_posted
from services.receipts.settings import ReceiptsSettings
from services.receipts.storage import documents, payment_states
from shared.contracts import CONTENT_TYPE, Envelope, Topic, new_envelope, parse_data
from shared.contracts.events import PaymentCancelled, PaymentPosted, PaymentStatusChanged
from shared.messaging import Delivery, EventConsumer
from shared.service import Service
from tests.conftest import Infra
from tests.support.helpers import counter_payment, payment_overpaid, running, unique_account
from tests.support.receipts import credit_note_issued

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
async def receipts(infra: Infra) -> AsyncIterator[Service]:
    settings = ReceiptsSettings(
        database_url=infra.database_url, kafka_bootstrap_servers=infra.bootstrap_servers, development=True
    )
    async with running(create_receipts(settings)) as service:
        yield service


@pytest.fixture(scope="module")
async def credit_notes_service(infra: Infra) -> AsyncIterator[CreditNotesService]:
    settings = CreditNotesSettings(
        database_url=infra.database_url, kafka_bootstrap_servers=infra.bootstrap_servers, development=True
    )
    service = create_credit_notes(settings)
    async with running(service):
        yield service


def records(envelopes: list[Envelope]) -> list[Delivery]:
    return [Delivery(e.to_bytes(), {"content-type": CONTENT_TYPE.encode()}, e.subject.encode()) for e in envelopes]


def consumer(service: Service, topic: str) -> EventConsumer:
    return next(c for c in service.event_consumers if c.topic == topic)


@contextmanager
def counted_statements(service: Service) -> Iterator[list[tuple[int, str]]]:
    """Every statement the service's engine runs meanwhile, with the connection it ran on."""
    seen: list[tuple[int, str]] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append((id(conn), statement))

    engine = service.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def the_batch_transaction(seen: list[tuple[int, str]], schema: str) -> list[str]:
    """The batch's statements, from its inbox claim to its last outbox insert (the relay shares the engine)."""
    connection = next(conn for conn, statement in seen if statement.startswith(f"INSERT INTO {schema}.inbox"))
    statements = [statement for conn, statement in seen if conn == connection]
    start = next(i for i, s in enumerate(statements) if s.startswith(f"INSERT INTO {schema}.inbox"))
    end = max(i for i, s in enumerate(statements) if s.startswith(f"INSERT INTO {schema}.outbox"))
    return statements[start : end + 1]


def postings(account: str, count: int, *, over: int = 0) -> list[Envelope]:
    """`count` counter payments of one account, each on its own bill of 100.00; the first `over` pay 4.50 more."""
    tag = account[-6:]
    return [
        counter_payment(
            account,
            receipt_number=f"R-{tag}-{n}",
            amount="104.50" if n < over else "100.00",
            due="100.00",
            item_reference=f"INV-{tag}-{n}",
        )
        for n in range(count)
    ]


def cancellation(posted: Envelope) -> Envelope:
    data = parse_data(posted, PaymentPosted)
    cancelled = PaymentCancelled(
        payment_id=data.payment_id,
        receipt_number=data.receipt_number,
        account_number=data.consumer.account_number,
        amount=data.amount,
        reason="wrong account",
        cancelled_by="Bill Manager",
        cancelled_at=data.posted_at + timedelta(minutes=5),
    )
    return new_envelope("payment.cancelled", source="payments", subject=posted.subject, data=cancelled)


async def stored_documents(service: Service, numbers: list[str]) -> dict[str, Any]:
    async with service.sessions() as session:
        query = select(documents).where(documents.c.kind == "receipt", documents.c.number.in_(numbers))
        return {row.number: row for row in await session.execute(query)}


async def announced(service: Service, account: str) -> int:
    """`receipt.available` or `credit_note.issued` events staged for the account."""
    outbox = service.tables.outbox
    async with service.sessions() as session:
        query = select(func.count()).select_from(outbox).where(outbox.c.key == account)
        return int((await session.execute(query)).scalar_one())


class TestReceiptsBatches:
    async def test_a_batch_of_postings_is_stored_in_a_fixed_number_of_statements_as_one_by_one_would(
        self, receipts: Service
    ) -> None:
        """INVARIANT: a receipt stored a batch at a time has the content hash the one-event path gives it."""
        account = unique_account()
        events = postings(account, 40)
        with counted_statements(receipts) as seen:
            outcomes = await consumer(receipts, Topic.PAYMENTS_EVENTS).deliver(records(events))
        assert outcomes == ["applied"] * 40
        statements = the_batch_transaction(seen, "receipts")
        # Inbox claim, receipt locks, receipts, states read, states upsert, credit notes, documents, outbox: the
        # same for 40 events as for 200, where one at a time took seven each.
        assert len(statements) <= 9, statements
        numbers = [parse_data(e, PaymentPosted).receipt_number for e in events]
        stored = await stored_documents(receipts, numbers)
        style = document_style(receipts.settings)  # type: ignore[arg-type]
        for envelope in events:
            posted = parse_data(envelope, PaymentPosted)
            expected = receipt_document(posted, state_when_posted(posted, None), [], style)
            row = stored[posted.receipt_number]
            assert (row.document_hash, row.revision) == (expected.document_hash, 1)
        assert await announced(receipts, account) == 40

    async def test_events_between_postings_apply_in_their_place_and_a_credit_note_seen_first_is_on_its_receipt(
        self, receipts: Service
    ) -> None:
        account = unique_account()
        first, second, third = postings(account, 3)
        third_posted = parse_data(third, PaymentPosted)
        note_event = credit_note_issued(account, third_posted.receipt_number, third_posted.payment_id, f"CN-{account}")
        assert await consumer(receipts, Topic.CREDITNOTES_EVENTS).deliver(records([note_event])) == ["applied"]
        status = PaymentStatusChanged(
            payment_id=parse_data(first, PaymentPosted).payment_id,
            receipt_number=parse_data(first, PaymentPosted).receipt_number,
            account_number=account,
            previous_status="Posted",
            status="Refunded",
            changed_at=datetime.now(UTC) + timedelta(minutes=1),
        )
        changed = new_envelope("payment.status_changed", source="payments", subject=account, data=status)
        batch = [first, changed, cancellation(second), second, third]
        outcomes = await consumer(receipts, Topic.PAYMENTS_EVENTS).deliver(records(batch))
        assert outcomes == ["applied"] * 5
        numbers = [parse_data(e, PaymentPosted).receipt_number for e in (first, second, third)]
        stored = await stored_documents(receipts, numbers)
        # The status change came after its posting: the receipt says Refunded, revised once.
        assert stored[numbers[0]].content["status"] == "Refunded" and stored[numbers[0]].revision == 2
        # The cancellation came before its posting: the posting merges it, and the receipt is VOID from the start.
        assert stored[numbers[1]].content["void"] is True and stored[numbers[1]].revision == 1
        assert f"CN-{account}" in str(stored[numbers[2]].content)
        async with receipts.sessions() as session:
            states = dict(
                (
                    await session.execute(
                        select(payment_states.c.receipt_number, payment_states.c.status).where(
                            payment_states.c.account_number == account
                        )
                    )
                ).all()
            )
        assert states == {numbers[0]: "Refunded", numbers[1]: "Cancelled", numbers[2]: "Posted"}

    async def test_a_bad_event_in_a_batch_goes_to_the_dlq_alone_and_the_others_are_stored_once(
        self, receipts: Service
    ) -> None:
        """INVARIANT: an event that cannot be applied never holds back or doubles the others of its batch."""
        account = unique_account()
        good = postings(account, 2)
        broken = good[0].model_copy(update={"id": new_envelope("x", source="t", subject="t", data={}).id, "data": {}})
        batch = records([good[0], broken, good[1]])
        payments_consumer = consumer(receipts, Topic.PAYMENTS_EVENTS)
        assert await payments_consumer.deliver(batch) == ["applied", "dead_lettered", "applied"]
        numbers = [parse_data(e, PaymentPosted).receipt_number for e in good]
        assert set(await stored_documents(receipts, numbers)) == set(numbers)
        # The whole batch again, as after a crash before its offsets were committed.
        assert await payments_consumer.deliver(batch) == ["duplicate", "dead_lettered", "duplicate"]
        assert await announced(receipts, account) == 2


async def notes_of(service: CreditNotesService, account: str) -> list[Any]:
    async with service.sessions() as session:
        query = select(credit_notes).where(credit_notes.c.account_number == account).order_by(credit_notes.c.seq)
        return list((await session.execute(query)).all())


class TestCreditNotesBatches:
    async def test_postings_and_overpayments_in_a_fixed_number_of_statements_one_note_each_numbers_ascending(
        self, credit_notes_service: CreditNotesService
    ) -> None:
        """INVARIANT: exactly one automatic credit note per overpayment, each with a number never used before."""
        account = unique_account()
        posted = postings(account, 30, over=10)
        batch: list[Envelope] = []
        for n, envelope in enumerate(posted):
            batch += [envelope, payment_overpaid(envelope)] if n < 10 else [envelope]
        with counted_statements(credit_notes_service) as seen:
            outcomes = await consumer(credit_notes_service, Topic.PAYMENTS_EVENTS).deliver(records(batch))
        assert outcomes == ["applied"] * 40
        statements = the_batch_transaction(seen, "credit_notes")
        # Inbox claim, payments, items; overpayments: guard, locks, earlier notes, settings, numbers, notes, audit,
        # payments, outbox. One at a time: 2 per posting, about 10 per overpayment.
        assert len(statements) <= 13, statements
        notes = await notes_of(credit_notes_service, account)
        overpaid = [parse_data(e, PaymentPosted).receipt_number for e in posted[:10]]
        assert [note.receipt_number for note in notes] == overpaid, "one note per overpayment, in batch order"
        assert all(note.amount == Decimal("4.50") and note.automatic for note in notes)
        assert [note.seq for note in notes] == sorted({note.seq for note in notes})
        async with credit_notes_service.sessions() as session:
            paid = dict(
                (
                    await session.execute(
                        select(open_items.c.item_reference, open_items.c.paid).where(
                            open_items.c.account_number == account
                        )
                    )
                ).all()
            )
            credited = (
                await session.execute(
                    select(func.sum(credit_notes_payments.c.credited)).where(
                        credit_notes_payments.c.account_number == account
                    )
                )
            ).scalar_one()
        assert set(paid.values()) == {Decimal("100.00")} and len(paid) == 30
        assert credited == Decimal("45.00")
        assert await announced(credit_notes_service, account) == 10
        # The same overpayments announced again under new ids: no second note.
        again = [payment_overpaid(envelope) for envelope in posted[:10]]
        outcomes = await consumer(credit_notes_service, Topic.PAYMENTS_EVENTS).deliver(records(again))
        assert outcomes == ["applied"] * 10
        assert len(await notes_of(credit_notes_service, account)) == 10

    async def test_an_overpayment_refused_by_a_rule_goes_to_the_dlq_alone(
        self, credit_notes_service: CreditNotesService
    ) -> None:
        """INVARIANT: a refused credit note never holds back or doubles the others of its batch."""
        account = unique_account()
        cancelled, fine, later = postings(account, 3, over=3)
        payments_consumer = consumer(credit_notes_service, Topic.PAYMENTS_EVENTS)
        assert await payments_consumer.deliver(records([cancelled, cancellation(cancelled)])) == ["applied"] * 2
        batch = records([fine, payment_overpaid(fine), payment_overpaid(cancelled), later, payment_overpaid(later)])
        assert await payments_consumer.deliver(batch) == ["applied", "applied", "dead_lettered", "applied", "applied"]
        notes = await notes_of(credit_notes_service, account)
        receipts_of = [parse_data(e, PaymentPosted).receipt_number for e in (fine, later)]
        assert [note.receipt_number for note in notes] == receipts_of
        assert await payments_consumer.deliver(batch) == ["duplicate", "duplicate", "dead_lettered"] + ["duplicate"] * 2
        assert len(await notes_of(credit_notes_service, account)) == 2
