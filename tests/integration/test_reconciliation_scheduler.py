"""The missing-items scheduler on a simulated clock, on the real database and broker: expected deposits and
transfers stay Expected through their T+N window and become one `missing_deposit` exception per deposit the day
after; a pass repeated, two passes at once, or a pass that dies half-way never raise an exception twice."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy import select

from services.reconciliation import commands, scheduler
from services.reconciliation.app import ReconciliationService, create_service
from services.reconciliation.scheduler import MissingPass
from services.reconciliation.settings import ReconciliationSettings
from services.reconciliation.storage import exceptions, expected_items
from shared.contracts import Topic
from tests.conftest import Infra
from tests.support.helpers import counter_payment, eventually, own_broker_and_database, publish, read_topic

pytestmark = pytest.mark.kafka
DAY = date(2025, 4, 1)


def at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


@pytest.fixture(scope="module")
async def recon(infra: Infra) -> AsyncIterator[tuple[ReconciliationService, str]]:
    async with own_broker_and_database(infra.database_url, infra.workdir, "reconmiss", ("reconciliation",)) as (
        url,
        kafka,
    ):
        settings = ReconciliationSettings(
            database_url=url,
            kafka_bootstrap_servers=kafka,
            jwt_secret="reconciliation-scheduler-secret-long-enough",
            outbox_poll_seconds=0.05,
            missing_check_seconds=3600,  # the timer's first pass only: the test drives the clock
        )
        service = create_service(settings)
        service.clock.set(at(DAY))  # before start: the timer's first pass sees the simulated day too
        await service.start()
        try:
            yield service, kafka
        finally:
            await service.stop()


async def _items(service: ReconciliationService) -> dict[str, str]:
    async with service.sessions() as session:
        return {r.item_id: r.status for r in await session.execute(select(expected_items))}


async def _exceptions(service: ReconciliationService) -> list[Any]:
    async with service.sessions() as session:
        return list(await session.execute(select(exceptions).order_by(exceptions.c.subject)))


async def _raised_on_topic(kafka: str) -> list[dict[str, Any]]:
    records = [json.loads(r.value) for r in await read_topic(kafka, Topic.RECONCILIATION_EVENTS)]
    return [r["data"] for r in records if r["type"] == "reconciliation.exception_raised"]


async def test_items_past_their_window_become_one_missing_exception_per_deposit_once(
    recon: tuple[ReconciliationService, str],
) -> None:
    service, kafka = recon
    # A day's cash at the Walk-in counter (one deposit of two payments) and a transfer naming its invoice; the
    # Walk-in window is T+1.
    posted = [
        counter_payment("MS-1", receipt_number="R-MS-1", amount="40.00", due="40.00", item_reference="I-1", day=DAY),
        counter_payment("MS-1", receipt_number="R-MS-2", amount="60.00", due="60.00", item_reference="I-2", day=DAY),
        counter_payment(
            "MS-2", receipt_number="R-MS-3", amount="25.00", due="25.00", item_reference="I-3", day=DAY, method="ACH"
        ),
    ]
    await publish(kafka, Topic.PAYMENTS_EVENTS, posted)

    async def three_expected() -> dict[str, str] | None:
        items = await _items(service)
        return items if len(items) == 3 else None

    assert set((await eventually(three_expected)).values()) == {"expected"}

    # The last day of the window (T+1, late evening): still Expected, nothing raised.
    assert await service.check_missing(at(date(2025, 4, 2), 23)) == MissingPass(0, 0)
    assert set((await _items(service)).values()) == {"expected"} and await _exceptions(service) == []

    # The day after: missing, one exception for the cash deposit (100.00) and one for the transfer.
    assert await service.check_missing(at(date(2025, 4, 3), 0)) == MissingPass(3, 2)
    assert set((await _items(service)).values()) == {"missing"}
    raised = await _exceptions(service)
    assert [(e.kind, e.subject.split(":")[0], str(e.amount), e.status) for e in raised] == [
        ("missing_deposit", "group", "100.00", "open"),
        ("missing_deposit", "item", "25.00", "open"),
    ]
    assert all(e.raised_at == at(date(2025, 4, 3), 0) for e in raised)  # the service's clock, not the wall's

    # Again, and twice at once: nothing more raised, and exactly two announcements on the topic.
    assert await service.check_missing(at(date(2025, 4, 9))) == MissingPass(0, 0)
    assert list(await asyncio.gather(service.check_missing(), service.missing.run_once())) == [MissingPass(0, 0)] * 2
    announced = await eventually(lambda: _two(kafka))
    assert sorted(e["amount"]["amount"] for e in announced) == ["100.00", "25.00"]


async def _two(kafka: str) -> list[dict[str, Any]] | None:
    raised = await _raised_on_topic(kafka)
    return raised if len(raised) >= 2 else None


async def test_a_pass_that_dies_half_way_leaves_nothing_and_the_next_one_does_it_once(
    recon: tuple[ReconciliationService, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    service, kafka = recon
    day = date(2025, 5, 1)
    posted = [
        counter_payment("MS-3", receipt_number="R-MS-4", amount="10.00", due="10.00", item_reference="I-4", day=day)
    ]
    await publish(kafka, Topic.PAYMENTS_EVENTS, posted)

    async def arrived() -> bool:
        return (await _items(service)).get("pay:PAY-R-MS-4") == "expected"

    await eventually(arrived)
    before = len(await _exceptions(service))

    real = commands.raise_missing

    async def dies(*args: Any, **kwargs: Any) -> int:
        await real(*args, **kwargs)  # the exception row and its event are staged, then the process "dies"
        raise RuntimeError("killed half-way")

    monkeypatch.setattr(commands, "raise_missing", dies)
    with pytest.raises(RuntimeError):
        await service.check_missing(at(date(2025, 5, 5)))
    assert (await _items(service))["pay:PAY-R-MS-4"] == "expected" and len(await _exceptions(service)) == before

    monkeypatch.setattr(commands, "raise_missing", real)
    # Two instances of the service side by side: the advisory lock lets one do it, the other then finds nothing.
    now = at(date(2025, 5, 5))

    async def one_pass() -> MissingPass:
        async with service.sessions() as session, session.begin():
            return await scheduler.mark_missing(session, today=now.date(), now=now)

    results = await asyncio.gather(one_pass(), one_pass())
    assert sorted(results, key=lambda r: r.items) == [MissingPass(0, 0), MissingPass(1, 1)]
    assert len(await _exceptions(service)) == before + 1
