"""Receipts' two consumers (payments, credit notes) applying batches side by side over the same receipts, on the real
database and broker: each batch takes its documents' locks up front in one order, so neither waits on the other in a
circle, and a batch that still meets a deadlock or serialization failure is tried together again before going one
by one. The interleaving is set by a lock the test holds, not by timing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.receipts.app import create_service as create_receipts
from services.receipts.settings import ReceiptsSettings
from services.receipts.storage import documents
from shared.contracts import CONTENT_TYPE, Envelope, Topic, parse_data
from shared.contracts.events import PaymentPosted
from shared.messaging import Applying, Delivery, EventConsumer
from shared.service import Service
from tests.conftest import Infra
from tests.support.helpers import counter_payment, eventually, running, unique_account
from tests.support.receipts import credit_note_issued

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
async def receipts(infra: Infra) -> AsyncIterator[Service]:
    settings = ReceiptsSettings(
        database_url=infra.database_url, kafka_bootstrap_servers=infra.bootstrap_servers, development=True
    )
    async with running(create_receipts(settings)) as service:
        yield service


def records(envelopes: list[Envelope]) -> list[Delivery]:
    return [Delivery(e.to_bytes(), {"content-type": CONTENT_TYPE.encode()}, e.subject.encode()) for e in envelopes]


def consumer(service: Service, topic: str) -> EventConsumer:
    return next(c for c in service.event_consumers if c.topic == topic)


def batches(metric: str, consumer_name: str) -> float:
    return REGISTRY.get_sample_value(metric, {"service": "receipts", "consumer": consumer_name}) or 0.0


def fallbacks_and_retries() -> dict[str, float]:
    return {
        f"{kind} {name}": batches(f"paydesk_batches_{kind}_total", name)
        for kind in ("one_by_one", "retried")
        for name in ("payments", "credit_notes")
    }


def postings(account: str, count: int) -> list[Envelope]:
    tag = account[-6:]
    return [
        counter_payment(
            account, receipt_number=f"R-{tag}-{n}", amount="104.50", due="100.00", item_reference=f"INV-{tag}-{n}"
        )
        for n in range(count)
    ]


def notes_on(account: str, posted: Sequence[Envelope]) -> list[Envelope]:
    """A `credit_note.issued` on each posting, numbered after its receipt."""
    issued = []
    for envelope in posted:
        payment = parse_data(envelope, PaymentPosted)
        number = f"CN-{payment.receipt_number}"
        issued.append(credit_note_issued(account, payment.receipt_number, payment.payment_id, number))
    return issued


async def lock_waiters(service: Service, keys: Sequence[str]) -> int:
    """How many transactions wait for one of these receipts' advisory locks (a bigint key is classid, objid)."""
    async with service.sessions() as session:
        waiting = await session.execute(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND ((classid::bigint << 32) | objid::bigint) IN "
                "(SELECT hashtextextended(key, 0) FROM unnest(CAST(:keys AS text[])) AS key)"
            ),
            {"keys": list(keys)},
        )
        return int(waiting.scalar_one())


async def receipt_contents(service: Service, numbers: Sequence[str]) -> dict[str, str]:
    async with service.sessions() as session:
        query = select(documents.c.number, documents.c.content).where(
            documents.c.kind == "receipt", documents.c.number.in_(numbers)
        )
        return {row.number: json.dumps(row.content) for row in await session.execute(query)}


class TestBatchesOverTheSameReceipts:
    async def test_payments_and_credit_notes_batches_in_opposite_orders_both_commit_together(
        self, receipts: Service
    ) -> None:
        """INVARIANT: two batches touching the same receipts never deadlock, so neither falls back to one by one
        (which took 10+ s at 76 payments/s), and every receipt shows its credit note exactly once."""
        account = unique_account()
        posted = postings(account, 2)
        first, second = (parse_data(e, PaymentPosted).receipt_number for e in posted)
        issued = notes_on(account, posted)
        # The credit notes batch meets its receipts in the opposite order to the payments batch's sorted one.
        credit_notes_batch, payments_batch = records(list(reversed(issued))), records(posted)
        keys = [f"receipts:receipt:{first}", f"receipts:receipt:{second}", f"receipts:credit_note:CN-{second}"]
        before = fallbacks_and_retries()

        # The test holds the credit note lock of the batch's first event. Taken event by event, the credit notes
        # batch held the second receipt while it waited here; the payments batch then took the first receipt and
        # waited for the second: a circle once this lock is let go.
        async with receipts.engine.connect() as holder:
            async with holder.begin():
                await holder.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": keys[2]})
                credit_notes = asyncio.create_task(
                    consumer(receipts, Topic.CREDITNOTES_EVENTS).deliver(credit_notes_batch)
                )
                await eventually(lambda: _at_least(receipts, keys, 1))
                payments = asyncio.create_task(consumer(receipts, Topic.PAYMENTS_EVENTS).deliver(payments_batch))
                await eventually(lambda: _at_least(receipts, keys, 2))
            outcomes = await asyncio.gather(credit_notes, payments)

        assert list(outcomes) == [["applied", "applied"], ["applied", "applied"]]
        assert fallbacks_and_retries() == before
        contents = await receipt_contents(receipts, [first, second])
        assert sorted(contents) == sorted([first, second])
        for number in (first, second):
            assert f"CN-{number}" in contents[number], contents[number]


async def _at_least(service: Service, keys: Sequence[str], waiting: int) -> bool:
    return await lock_waiters(service, keys) >= waiting


class TestABatchThatMeetsALockConflict:
    @staticmethod
    def failing(consumer: EventConsumer, times: int, sqlstate: str) -> Any:
        """The consumer's batch handler, raising a real Postgres error with this SQLSTATE on its first `times` calls."""
        original = consumer.batch_handler
        assert original is not None
        calls = {"count": 0}

        async def handler(session: AsyncSession, batch: Sequence[Applying]) -> None:
            calls["count"] += 1
            if calls["count"] <= times:
                await session.execute(
                    text(f"DO $$ BEGIN RAISE EXCEPTION 'conflict in test' USING ERRCODE = '{sqlstate}'; END $$")
                )
            await original(session, batch)

        return handler, calls

    @pytest.mark.parametrize("sqlstate", ["40P01", "40001"])
    async def test_is_tried_together_again_and_applied_once(self, receipts: Service, sqlstate: str) -> None:
        account = unique_account()
        posted = postings(account, 3)
        payments = consumer(receipts, Topic.PAYMENTS_EVENTS)
        original = payments.batch_handler
        payments.batch_handler, calls = self.failing(payments, 1, sqlstate)
        before = fallbacks_and_retries()
        try:
            assert await payments.deliver(records(posted)) == ["applied"] * 3
        finally:
            payments.batch_handler = original
        after = fallbacks_and_retries()
        assert calls["count"] == 2
        assert after["retried payments"] == before["retried payments"] + 1
        assert after["one_by_one payments"] == before["one_by_one payments"]
        numbers = [parse_data(e, PaymentPosted).receipt_number for e in posted]
        assert sorted(await receipt_contents(receipts, numbers)) == sorted(numbers)
        assert await payments.deliver(records(posted)) == ["duplicate"] * 3

    async def test_that_keeps_failing_goes_one_by_one_after_a_bounded_number_of_tries(self, receipts: Service) -> None:
        account = unique_account()
        posted = postings(account, 2)
        issued = notes_on(account, posted)
        credit_notes = consumer(receipts, Topic.CREDITNOTES_EVENTS)
        original = credit_notes.batch_handler
        credit_notes.batch_handler, calls = self.failing(credit_notes, 1000, "40P01")
        before = fallbacks_and_retries()
        try:
            assert await credit_notes.deliver(records(issued)) == ["applied"] * 2
        finally:
            credit_notes.batch_handler = original
        after = fallbacks_and_retries()
        assert calls["count"] == 3
        assert after["retried credit_notes"] == before["retried credit_notes"] + 2
        assert after["one_by_one credit_notes"] == before["one_by_one credit_notes"] + 1
        assert await credit_notes.deliver(records(issued)) == ["duplicate"] * 2
