"""Exactly-once effects at the plumbing level, on the real broker and database.

The kpi service's daily aggregate is the effect under test: it adds every `payment.posted` it applies,
so any duplicate or lost event shows up as a wrong count or total.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import uuid
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select

from services.kpi.app import create_service as create_kpi
from services.kpi.settings import KpiSettings
from services.kpi.storage import daily_collections
from shared.contracts import CONTENT_TYPE, Envelope, Topic, dlq
from shared.messaging import DEAD_LETTERED, DUPLICATES, IGNORED, PROCESSED, Delivery
from shared.service import Service
from tests.conftest import Infra
from tests.support.helpers import (
    at_least,
    equals,
    eventually,
    payment_posted,
    publish,
    publish_raw,
    read_topic,
    running,
    unique_day,
)

pytestmark = pytest.mark.kafka


async def day_totals(service: Service, day: date) -> tuple[int, Decimal]:
    async with service.sessions() as session:
        row = (
            await session.execute(
                select(
                    func.coalesce(func.sum(daily_collections.c.payments), 0),
                    func.coalesce(func.sum(daily_collections.c.collected), 0),
                ).where(daily_collections.c.day == day)
            )
        ).one()
    return int(row[0]), Decimal(row[1])


def kpi(infra: Infra) -> Service:
    settings = KpiSettings(
        database_url=infra.database_url, kafka_bootstrap_servers=infra.bootstrap_servers, development=True
    )
    return create_kpi(settings)


async def test_duplicated_and_reordered_events_are_applied_exactly_once(infra: Infra) -> None:
    """INVARIANT: whatever Kafka redelivers or reorders, each payment is counted once."""
    day = unique_day()
    events = [payment_posted(f"ACC-{n % 3}", f"{10 + n}.25", day, number=n) for n in range(20)]
    deliveries = events + random.sample(events, 12)  # 12 duplicates
    random.shuffle(deliveries)
    duplicates_before = DUPLICATES.labels("kpi", "payments")._value.get()

    async with running(kpi(infra)) as service:
        await publish(infra.bootstrap_servers, Topic.PAYMENTS_EVENTS, deliveries)
        expected = (20, sum(Decimal(f"{10 + n}.25") for n in range(20)))
        await eventually(lambda: equals(day_totals(service, day), expected))
        await eventually(lambda: at_least(DUPLICATES.labels("kpi", "payments")._value.get, duplicates_before + 12))
        assert await day_totals(service, day) == expected


async def test_consumer_killed_after_commit_before_offset_commit_applies_the_event_once(infra: Infra) -> None:
    """INVARIANT: a crash between the database commit and the offset commit never double-counts."""
    day = unique_day()
    event = payment_posted("ACC-CRASH", "99.99", day, number=1)
    env = {**os.environ, **infra.env(), "PAYDESK_DEVELOPMENT": "true"}
    script = Path(__file__).with_name("crashing_consumer.py")
    crashing = subprocess.Popen([sys.executable, str(script)], env=env, cwd=Path(__file__).parents[2])  # noqa: ASYNC220
    try:
        await publish(infra.bootstrap_servers, Topic.PAYMENTS_EVENTS, [event])
        code = await asyncio.get_running_loop().run_in_executor(None, crashing.wait, 90)
    finally:
        if crashing.poll() is None:
            crashing.kill()
    assert code == 17, "the consumer should have died right after committing its transaction"

    service = kpi(infra)
    assert await day_totals(service, day) == (1, Decimal("99.99")), "the effect was committed before the crash"
    duplicates_before = DUPLICATES.labels("kpi", "payments")._value.get()
    async with running(service):
        # The offset was never committed, so the restarted consumer gets the event again and ignores it.
        await eventually(
            lambda: at_least(DUPLICATES.labels("kpi", "payments")._value.get, duplicates_before + 1), within=180
        )
        assert await day_totals(service, day) == (1, Decimal("99.99"))


async def test_malformed_messages_go_to_the_dlq_with_a_reason_and_do_not_block_the_partition(infra: Infra) -> None:
    """INVARIANT: a poison message is never dropped silently and never stops the messages behind it."""
    day = unique_day()
    account = "ACC-POISON"
    bad_data = payment_posted(account, "5.00", day, number=1).model_copy(update={"data": {"payment_id": "x"}})
    good = payment_posted(account, "7.50", day, number=2)
    dead_before = DEAD_LETTERED.labels("kpi", "payments")._value.get()
    async with running(kpi(infra)) as service:
        await publish_raw(
            infra.bootstrap_servers,
            Topic.PAYMENTS_EVENTS,
            b"{not json",
            account.encode(),
            [("content-type", b"application/cloudevents+json"), ("x-test-marker", day.isoformat().encode())],
        )
        await publish(infra.bootstrap_servers, Topic.PAYMENTS_EVENTS, [bad_data, good])
        await eventually(lambda: equals(day_totals(service, day), (1, Decimal("7.50"))))
        await eventually(lambda: at_least(DEAD_LETTERED.labels("kpi", "payments")._value.get, dead_before + 2))

    records = await read_topic(infra.bootstrap_servers, dlq(Topic.PAYMENTS_EVENTS))
    reasons = {
        dict(r.headers).get("x-test-marker", b"").decode() or r.value.decode(errors="replace"): dict(r.headers)[
            "x-dlq-reason"
        ].decode()
        for r in records
    }
    assert "invalid envelope: value is not JSON" in reasons[day.isoformat()]
    bad_reason = next(v for k, v in reasons.items() if str(bad_data.id) in k)
    assert bad_reason.startswith("invalid payment.posted data:")
    assert "transaction_id" in bad_reason, "the reason names the missing field"


async def test_events_are_counted_by_the_processed_metric(infra: Infra) -> None:
    day = unique_day()
    before = PROCESSED.labels("kpi", "payments", "payment.posted")._value.get()
    async with running(kpi(infra)) as service:
        await publish(infra.bootstrap_servers, Topic.PAYMENTS_EVENTS, [payment_posted("ACC-M", "1.00", day, number=1)])
        await eventually(lambda: equals(day_totals(service, day), (1, Decimal("1.00"))))
    assert PROCESSED.labels("kpi", "payments", "payment.posted")._value.get() == before + 1


def as_records(envelopes: list[Envelope]) -> list[Delivery]:
    return [Delivery(e.to_bytes(), {"content-type": CONTENT_TYPE.encode()}, e.subject.encode()) for e in envelopes]


async def test_a_batch_is_applied_in_one_go_and_a_repeat_inside_it_counts_once(infra: Infra) -> None:
    day = unique_day()
    first, second = (payment_posted("ACC-BATCH", f"{n}.10", day, number=n) for n in (1, 2))
    async with running(kpi(infra)) as service:
        consumer = next(c for c in service.event_consumers if c.name == "payments")
        assert await consumer.deliver(as_records([first, second, first])) == ["applied", "applied", "duplicate"]
        assert await day_totals(service, day) == (2, Decimal("3.20"))


async def test_a_refused_event_in_a_batch_goes_to_the_dlq_and_every_other_event_is_applied_once(infra: Infra) -> None:
    """INVARIANT: one bad event rolls back its batch, which is then applied event by event; nothing lost or doubled."""
    day = unique_day()
    good = [payment_posted("ACC-BATCH-BAD", f"{n}.00", day, number=n) for n in (1, 2, 3)]
    bad = payment_posted("ACC-BATCH-BAD", "5.00", day, number=4).model_copy(update={"data": {"payment_id": "x"}})
    batch = as_records([good[0], good[1], bad, good[2], good[0]])
    dead_before = DEAD_LETTERED.labels("kpi", "payments")._value.get()
    async with running(kpi(infra)) as service:
        consumer = next(c for c in service.event_consumers if c.name == "payments")
        assert await consumer.deliver(batch) == ["applied", "applied", "dead_lettered", "applied", "duplicate"]
        assert await day_totals(service, day) == (3, Decimal("6.00"))
        assert DEAD_LETTERED.labels("kpi", "payments")._value.get() == dead_before + 1
        # The whole batch again, as after a crash before its offsets were committed: no payment counts twice.
        again = await consumer.deliver(batch)
        assert again == ["duplicate", "duplicate", "dead_lettered", "duplicate", "duplicate"]
        assert await day_totals(service, day) == (3, Decimal("6.00"))


async def test_an_event_the_consumer_does_not_handle_is_skipped_and_a_broken_one_it_handles_is_dead_lettered(
    infra: Infra,
) -> None:
    """INVARIANT: skipping other consumers' events by their type, undecoded, never lets a broken event through."""
    day = unique_day()
    good = payment_posted("ACC-SKIP", "2.00", day, number=1)
    not_ours = good.model_copy(update={"id": uuid.uuid4(), "type": "payment.overpaid"})
    broken = good.model_copy(update={"id": uuid.uuid4()}).to_bytes().replace(b'"time":"', b'"time":"yesterday ')
    records = as_records([not_ours, good])
    records.insert(1, Delivery(broken, {"content-type": CONTENT_TYPE.encode()}, b"ACC-SKIP"))
    ignored_before = IGNORED.labels("kpi", "payments")._value.get()
    async with running(kpi(infra)) as service:
        consumer = next(c for c in service.event_consumers if c.name == "payments")
        assert await consumer.deliver(records) == ["ignored", "dead_lettered", "applied"]
        assert await day_totals(service, day) == (1, Decimal("2.00"))
    assert IGNORED.labels("kpi", "payments")._value.get() == ignored_before + 1
