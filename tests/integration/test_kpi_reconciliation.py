"""The daily reconciliation summary in kpi, fed by reconciliation's own events on a real broker and database:
a camt.054 imported and reconciled by the reconciliation service shows in `GET /kpi/reconciliation` (matched %,
open exceptions by age, amount unreconciled), and working the exception queue moves it to 100%."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from services.kpi.app import create_service as create_kpi
from services.kpi.settings import KpiSettings
from services.reconciliation.app import create_service as create_reconciliation
from services.reconciliation.settings import ReconciliationSettings
from services.reconciliation.storage import expected_items
from shared.auth import Role, mint_token
from shared.contracts import Topic
from shared.service import Service
from tests.conftest import Infra
from tests.support.helpers import counter_payment, eventually, own_broker_and_database, publish, running
from tests.support.reconciliation import fixture

pytestmark = pytest.mark.kafka
SECRET = "kpi-reconciliation-secret-long-enough-for-hs256"
MANAGER = {"Authorization": f"Bearer {mint_token(SECRET, user='Maria Manager', roles=[Role.BILLING_MANAGER])}"}


@pytest.fixture(scope="module")
async def system(infra: Infra) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient, Service, str]]:
    async with own_broker_and_database(infra.database_url, infra.workdir, "kpirecon", ("reconciliation", "kpi")) as (
        url,
        kafka,
    ):
        common: dict[str, Any] = {"database_url": url, "kafka_bootstrap_servers": kafka, "jwt_secret": SECRET}
        reconciliation = create_reconciliation(ReconciliationSettings(**common, outbox_poll_seconds=0.05))
        kpi = create_kpi(KpiSettings(**common))
        async with running(reconciliation), running(kpi):
            rec = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=reconciliation.http), base_url="http://r", timeout=60
            )
            figures = httpx.AsyncClient(transport=httpx.ASGITransport(app=kpi.http), base_url="http://k", timeout=60)
            async with rec, figures:
                yield rec, figures, reconciliation, kafka


async def test_the_daily_summary_follows_imports_matches_and_the_exception_queue(
    system: tuple[httpx.AsyncClient, httpx.AsyncClient, Service, str],
) -> None:
    rec, kpi, reconciliation, kafka = system
    transfers = [
        counter_payment(
            "A-K54",
            receipt_number=f"R-K54-{n}",
            amount=amount,
            due=amount,
            item_reference=f"INV-2025-00540{n}",
            method="Bank Transfer",
            day=date(2025, 4, 9),
        )
        for n, amount in ((1, "80.00"), (2, "50.00"), (3, "40.10"), (4, "61.25"))
    ]
    await publish(kafka, Topic.PAYMENTS_EVENTS, transfers)

    async def four_expected() -> bool:
        async with reconciliation.sessions() as session:
            found = await session.execute(select(func.count()).where(expected_items.c.payment_id.like("PAY-R-K54-%")))
            return int(found.scalar_one()) == 4

    await eventually(four_expected)
    empty = (await kpi.get("/kpi/reconciliation", headers=MANAGER)).json()
    assert (empty["matched_percent"], empty["lines"], empty["amount_unreconciled"]) == ("100.0", 0, "0.00")

    imported = await rec.post(
        "/statements", files={"file": ("n.xml", fixture("camt054_notifications.xml"))}, headers=MANAGER
    )
    assert imported.status_code == 201, imported.text

    async def summary_is(lines: int, reconciled: int) -> dict[str, Any] | None:
        found = (await kpi.get("/kpi/reconciliation", headers=MANAGER)).json()
        return found if (found["lines"], found["lines_reconciled"]) == (lines, reconciled) else None

    # Six booked lines; the four transfers and the bank's charge matched; the reversal (0.80) is an exception.
    today = await eventually(lambda: summary_is(6, 5))
    assert (today["matched_percent"], today["amount_unreconciled"], today["open_exceptions"]) == ("83.3", "0.80", 1)
    assert today["exceptions_by_age"] == {"0-1d": 1, "2-7d": 0, "8-30d": 0, ">30d": 0}
    assert today["that_day"] == {
        "lines_imported": 6,
        "lines_reconciled": 5,
        "exceptions_raised": 1,
        "exceptions_resolved": 0,
    }

    queue = (await rec.get("/exceptions", headers=MANAGER)).json()["items"]
    [reversal] = [e for e in queue if e["kind"] == "unmatched_bank_line"]
    ignored = await rec.post(
        f"/exceptions/{reversal['exception_id']}/resolve",
        json={"action": "ignore", "reason": "reversal of a credit returned to its sender"},
        headers=MANAGER | {"Idempotency-Key": uuid.uuid4().hex},
    )
    assert ignored.status_code == 200, ignored.text
    done = await eventually(lambda: summary_is(6, 6))
    assert (done["matched_percent"], done["amount_unreconciled"], done["open_exceptions"]) == ("100.0", "0.00", 0)
    assert done["that_day"]["exceptions_resolved"] == 1

    # Yesterday, read today: nothing had been imported yet.
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    before = (await kpi.get("/kpi/reconciliation", params={"day": yesterday}, headers=MANAGER)).json()
    assert (before["lines"], before["open_exceptions"], before["day"]) == (0, 0, yesterday)
