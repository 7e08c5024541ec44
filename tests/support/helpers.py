"""Helpers for tests against the real broker and database."""

from __future__ import annotations

import asyncio
import functools
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from shared.contracts import CONTENT_TYPE, Envelope, new_envelope
from shared.contracts.events import (
    BillIssued,
    ConsumerSnapshot,
    ItemSnapshot,
    Money,
    PaymentOverpaid,
    PaymentPosted,
    PaymentType,
)
from shared.service import Service

T = TypeVar("T")


async def eventually(check: Callable[[], Awaitable[T | None]], *, within: float = 180.0, interval: float = 0.1) -> T:
    """Poll `check` until it returns a truthy value or raise with the last value seen.

    The bound is generous on purpose: a shared, busy CI machine makes things slow, never wrong, and a passing
    check returns as soon as it holds."""
    deadline = asyncio.get_running_loop().time() + within
    last: T | None = None
    while asyncio.get_running_loop().time() < deadline:
        value = await check()
        if value:
            return value
        last = value
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {within}s; last value: {last!r}")


async def run_all_while_progressing(jobs: list[Awaitable[Any]], *, concurrency: int, stall: float = 120.0) -> None:
    """Run `jobs` at most `concurrency` at a time; fail only when none finishes for `stall` seconds.

    A busy machine makes every job slower, never wrong: the bound is on progress, not on the total time, and
    a job queued behind the concurrency limit is never timed while it waits.
    """
    gate = asyncio.Semaphore(concurrency)
    finished = 0

    async def one(job: Awaitable[Any]) -> None:
        nonlocal finished
        async with gate:
            await job
        finished += 1

    tasks = [asyncio.ensure_future(one(job)) for job in jobs]
    loop = asyncio.get_running_loop()
    seen, last_progress = -1, loop.time()
    try:
        while not all(task.done() for task in tasks):
            await asyncio.wait(tasks, timeout=1.0, return_when=asyncio.FIRST_EXCEPTION)
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            if finished != seen:
                seen, last_progress = finished, loop.time()
            elif loop.time() - last_progress > stall:
                raise AssertionError(f"no job finished for {stall:.0f}s; {finished} of {len(tasks)} done")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def publish(bootstrap: str, topic: str, envelopes: list[Envelope]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for envelope in envelopes:
            await producer.send_and_wait(
                topic,
                envelope.to_bytes(),
                key=envelope.subject.encode(),
                headers=[("content-type", CONTENT_TYPE.encode())],
            )
    finally:
        await producer.stop()


async def publish_raw(bootstrap: str, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


async def read_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every record currently in `topic`, from offset 0 (no consumer group)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or set())]
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or set())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[Any] = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=500)
            for chunk in batch.values():
                records.extend(chunk)
        return records
    finally:
        await consumer.stop()


def unique_account() -> str:
    return f"T-{uuid.uuid4().hex[:10].upper()}"


def unique_day() -> date:
    """A payment date no other test uses, so per-day aggregates can be asserted exactly."""
    return date(2200, 1, 1) + timedelta(days=random.randrange(0, 300_000))


def payment_posted(account: str, amount: str, day: date, *, number: int) -> Envelope:
    """A `payment.posted` event as payments would publish it."""
    money = Money(amount=Decimal(amount), currency="USD")
    data = PaymentPosted(
        payment_id=f"PAY-T-{account}-{number}",
        transaction_id=f"TXN-T-{account}-{number}",
        receipt_number=f"R-T-{account}-{number}",
        consumer=ConsumerSnapshot(account_number=account, name="Test Consumer", service_address="1 Test Street"),
        item=ItemSnapshot(payment_type=PaymentType.BILL, item_reference=f"INV-{number}", description="Bill", due=money),
        channel="Walk-in",
        method="Cash",
        amount=money,
        payment_date=day,
        posted_at=datetime.now(UTC),
        received_by="Jane Smith",
        status="Posted",
        verification="Verified",
        difference=Money(amount=Decimal("0.00")),
        outcome="exact",
    )
    return new_envelope("payment.posted", source="payments", subject=account, data=data)


async def equals(value: Awaitable[object], expected: object) -> bool:
    """For `eventually`: the awaited value equals `expected`."""
    return await value == expected


async def at_least(read: Callable[[], float], minimum: float) -> bool:
    """For `eventually`: a counter read by `read` has reached `minimum`."""
    return read() >= minimum


async def caught_up(service: Service, *, stall: float = 120.0) -> None:
    """Wait until each of the service's consumer groups has consumed its topic to the end.

    The run's topics carry what earlier tests published (thousands of events by then), and a service started
    now reads them all first. Waiting here keeps that out of the next test's time; it fails only when the lag
    stops shrinking for `stall` seconds, never because the machine is slow.
    """
    from shared.consumer_lag import consumer_lag

    subscriptions = {consumer.group_id: [consumer.topic] for consumer in service.event_consumers}
    loop = asyncio.get_running_loop()
    best, progressed_at = -1, loop.time()
    while True:
        try:
            rows = await consumer_lag(
                service.settings.kafka_bootstrap_servers, groups=list(subscriptions), subscriptions=subscriptions
            )
        except KafkaError as error:
            # A broker just restarted or wiped is still electing its groups' coordinator (GroupCoordinatorNotAvailable,
            # CoordinatorLoadInProgress): no answer yet, so ask again, within the same bound on progress.
            if not error.retriable or loop.time() - progressed_at > stall:
                raise
            await asyncio.sleep(0.5)
            continue
        lag = sum(row.lag for row in rows)
        if lag == 0:
            return
        if best < 0 or lag < best:
            best, progressed_at = lag, loop.time()
        elif loop.time() - progressed_at > stall:
            raise AssertionError(f"{service.settings.service_name}'s consumers stopped catching up: lag {lag}")
        await asyncio.sleep(0.5)


async def settled(*services: Service, stall: float = 120.0) -> None:
    """Wait until nothing more can happen from what was published so far: each service's consumer groups have
    consumed their topics to the end (so every effect, duplicate or not, is committed) and its outbox is empty
    (so every event those effects staged is on Kafka). What a test asserts "did not happen" after this cannot
    happen later; no sleep guesses how long it takes."""
    for service in services:
        await caught_up(service, stall=stall)
        await eventually(functools.partial(_outbox_empty, service), within=stall)


async def _outbox_empty(service: Service) -> bool:
    from sqlalchemy import func, select

    outbox = service.tables.outbox
    async with service.sessions() as session:
        pending = (await session.execute(select(func.count()).where(outbox.c.published_at.is_(None)))).scalar_one()
    return int(pending) == 0


@asynccontextmanager
async def running(service: Service, *, catch_up: bool = False) -> AsyncIterator[Service]:
    """A service started in this process on the real broker and database, stopped afterwards; with `catch_up`,
    yielded only once its consumers have read what earlier tests left on the run's topics."""
    await service.start()
    try:
        if catch_up:
            await caught_up(service)
        yield service
    finally:
        await service.stop()


def pdf_text(pdf: bytes) -> str:
    """The text of every page of a PDF, as pypdf reads it back."""
    import io

    from pypdf import PdfReader

    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


def counter_payment(
    account: str,
    *,
    receipt_number: str,
    amount: str,
    due: str,
    item_reference: str,
    payment_type: PaymentType = PaymentType.BILL,
    consumer_name: str = "Test Consumer",
    method: str = "Cash",
    day: date | None = None,
) -> Envelope:
    """A `payment.posted` event for a counter payment of `amount` against an item owing `due`."""
    paid, owed = Decimal(amount), Decimal(due)
    data = PaymentPosted(
        payment_id=f"PAY-{receipt_number}",
        transaction_id=f"TXN-{receipt_number}",
        receipt_number=receipt_number,
        consumer=ConsumerSnapshot(account_number=account, name=consumer_name, service_address="1 Test Street"),
        item=ItemSnapshot(
            payment_type=payment_type, item_reference=item_reference, description="Item", due=Money(amount=owed)
        ),
        channel="Walk-in",
        method=method,
        amount=Money(amount=paid),
        # A day no other test uses, so KPI totals of real months stay untouched.
        payment_date=day or unique_day(),
        posted_at=datetime.now(UTC),
        received_by="Jane Smith",
        status="Posted",
        verification="Verified",
        difference=Money(amount=paid - owed),
        outcome="exact" if paid == owed else ("over" if paid > owed else "under"),
    )
    return new_envelope("payment.posted", source="payments", subject=account, data=data)


def payment_overpaid(posted: Envelope) -> Envelope:
    """The `payment.overpaid` payments publishes right after an overpaid `payment.posted`."""
    data = PaymentPosted.model_validate(posted.data)
    overpaid = PaymentOverpaid(
        payment_id=data.payment_id,
        receipt_number=data.receipt_number,
        consumer=data.consumer,
        payment_amount=data.amount,
        overpaid=data.difference,
        posted_at=data.posted_at,
    )
    return new_envelope("payment.overpaid", source="payments", subject=posted.subject, data=overpaid)


def bill_issued(account: str, invoice_number: str, amount: str) -> Envelope:
    """A `bill.issued` event as billing would publish it."""
    data = BillIssued(
        account_number=account,
        invoice_number=invoice_number,
        billing_period="2025-04",
        amount=Money(amount=Decimal(amount)),
        issued_on=date(2025, 4, 1),
        due_date=date(2025, 5, 15),
    )
    return new_envelope("bill.issued", source="billing", subject=account, data=data)


@asynccontextmanager
async def own_broker_and_database(
    database_url: str, workdir: Path, name: str, services: tuple[str, ...]
) -> AsyncIterator[tuple[str, str]]:
    """A fresh broker (of the run's kind) and a fresh database (on the run's Postgres server) with `services` migrated.

    For tests that assert whole-period figures exactly: nothing other tests publish or write can reach them.
    Yields `(database_url, bootstrap_servers)`.
    """
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from paydesk.migrations import upgrade
    from shared.db import create_engine
    from shared.messaging import provision_topics
    from tests.support.brokers import new_broker

    database = f"{name}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(make_url(database_url).set(database="postgres").render_as_string(hide_password=False))
    async with admin.connect() as conn:
        await (await conn.execution_options(isolation_level="AUTOCOMMIT")).execute(
            text(f'CREATE DATABASE "{database}"')
        )
    await admin.dispose()
    url = make_url(database_url).set(database=database).render_as_string(hide_password=False)
    for service in services:
        await asyncio.to_thread(upgrade, service, url)  # alembic runs its own event loop
    broker = new_broker(workdir, name)
    bootstrap = await asyncio.to_thread(broker.start)
    try:
        await provision_topics(bootstrap, partitions=3)
        yield url, bootstrap
    finally:
        await asyncio.to_thread(broker.stop)
