"""The kpi service on a real broker and database: every KPI from events, exactly, and alerts raised once.

These tests run on a broker and a database of their own (`own_broker_and_database`), because they assert
whole-month figures exactly and compare a rebuild from offset 0 with the live aggregates: nothing another
test publishes may reach them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import func, select

from paydesk.sample_data import seed_sample
from services.kpi import queries, views
from services.kpi.app import create_service
from services.kpi.settings import KpiSettings
from services.kpi.storage import AGGREGATES, plumbing
from shared.auth import Role, mint_token
from shared.contracts import Envelope, Topic, new_envelope
from shared.contracts.events import (
    BillIssued,
    ConsumerSnapshot,
    CreditNoteApplied,
    CreditNoteIssued,
    ItemSnapshot,
    Money,
    PaymentCancelled,
    PaymentPosted,
    PaymentStatusChanged,
    PaymentType,
    PaymentVerified,
)
from shared.service import Service
from tests.conftest import Infra
from tests.support.helpers import eventually, own_broker_and_database, publish, read_topic, running, unique_account

pytestmark = pytest.mark.kafka
SECRET = "kpi-test-secret-that-is-long-enough-for-hs256"
ZONE = "America/Chicago"
ROOT = Path(__file__).parents[2]


@dataclass
class World:
    settings: KpiSettings
    service: Service
    bootstrap: str
    client: httpx.AsyncClient

    async def summary(self, period: str) -> dict[str, Any]:
        response = await self.client.get(f"/kpi/summary?period={period}", headers=auth(Role.BILLING_MANAGER))
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def publish(self, topic: str, envelopes: list[Envelope]) -> None:
        await publish(self.bootstrap, topic, envelopes)


def auth(role: Role, user: str = "Bill Manager") -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SECRET, user=user, roles=[role])}"}


@pytest.fixture(scope="module")
async def world(infra: Infra) -> AsyncIterator[World]:
    async with own_broker_and_database(infra.database_url, infra.workdir, "kpi", ("kpi",)) as (url, bootstrap):
        settings = KpiSettings(
            database_url=url,
            kafka_bootstrap_servers=bootstrap,
            time_zone=ZONE,
            jwt_secret=SECRET,
        )
        async with running(create_service(settings)) as service:
            transport = httpx.ASGITransport(app=service.http)
            async with httpx.AsyncClient(transport=transport, base_url="http://kpi") as client:
                yield World(settings, service, bootstrap, client)


def posted(
    account: str,
    payment_id: str,
    amount: str,
    payment_date: date,
    *,
    issued_on: date | None,
    posted_at: datetime,
    channel: str = "Walk-in",
    method: str = "Cash",
    payment_type: PaymentType = PaymentType.BILL,
    verification: str = "Verified",
    receipt_number: str | None = None,
    item_reference: str = "INV-X",
    name: str = "John Doe",
) -> Envelope:
    money = Money(amount=Decimal(amount))
    data = PaymentPosted(
        payment_id=payment_id,
        transaction_id=f"TXN-{payment_id}",
        receipt_number=receipt_number or f"R-{payment_id}",
        consumer=ConsumerSnapshot(account_number=account, name=name, service_address="123 Main Street"),
        item=ItemSnapshot(
            payment_type=payment_type,
            item_reference=item_reference,
            description="item",
            issued_on=issued_on,
            due=money,
        ),
        channel=channel,
        method=method,
        amount=money,
        payment_date=payment_date,
        posted_at=posted_at,
        received_by="System" if channel == "Online" else "Jane Smith",
        status="Posted",
        verification=verification,
        difference=Money(amount=Decimal("0.00")),
        outcome="exact",
    )
    return new_envelope("payment.posted", source="payments", subject=account, data=data)


def status_changed(account: str, payment_id: str, previous: str, status: str, at: datetime) -> Envelope:
    data = PaymentStatusChanged(
        payment_id=payment_id,
        receipt_number=f"R-{payment_id}",
        account_number=account,
        previous_status=previous,
        status=status,
        changed_at=at,
    )
    return new_envelope("payment.status_changed", source="payments", subject=account, data=data)


def bill(account: str, invoice: str, amount: str, *, issued_on: date, due_date: date) -> Envelope:
    data = BillIssued(
        account_number=account,
        invoice_number=invoice,
        billing_period=f"{issued_on:%Y-%m}",
        amount=Money(amount=Decimal(amount)),
        issued_on=issued_on,
        due_date=due_date,
    )
    return new_envelope("bill.issued", source="billing", subject=account, data=data)


async def has(world: World, period: str, path: list[str], expected: object) -> bool:
    value: Any = await world.summary(period)
    for key in path:
        value = value[key]
    return bool(value == expected)


async def test_ac30_header_kpis_for_the_sample_data(world: World) -> None:
    """AC30, computed by hand from the seed's sample data (John Doe, WU-10001, April 2025).

    Due in April 2025: INV-2025-001234 $145.50 (due Apr 15) + installment PP-2025-0034/1 $67.50 (due Apr 15)
    = $213.00; the Late Fee and Reconnection Fee fall due in May. Paid: R-5001, $145.50 cash on Apr 20, for
    the bill issued Mar 31.
    - Total Collected: $145.50 (1 payment); March: $0.00, so no percentage change.
    - Received Today (as of Apr 20, 2025 in the utility's zone): $145.50, 1 transaction.
    - Collection Rate: 145.50 / 213.00 x 100 = 68.3098... -> 68.31 %.
    - Average Collection Time: Apr 20 - Mar 31 = 20 days.
    - Credit notes: CN-46129 for $4.50 issued, none applied.
    """
    chicago = ZoneInfo(ZONE)
    posted_at = datetime(2025, 4, 20, 10, 5, tzinfo=chicago)
    await world.publish(Topic.BILLING_RECEIVABLES, seed_sample())
    await world.publish(
        Topic.PAYMENTS_EVENTS,
        [
            posted(
                "WU-10001",
                "PAY-2025-004521",
                "145.50",
                date(2025, 4, 20),
                issued_on=date(2025, 3, 31),
                posted_at=posted_at,
                receipt_number="R-5001",
                item_reference="INV-2025-001234",
            )
        ],
    )
    credit_note = CreditNoteIssued(
        credit_note_number="CN-46129",
        account_number="WU-10001",
        consumer_name="John Doe",
        receipt_number="R-5001",
        payment_id="PAY-2025-004521",
        amount=Money(amount=Decimal("4.50")),
        reason="Overpayment",
        created_by="Jane Smith",
        created_at=posted_at + timedelta(minutes=2),
        expires_at=posted_at + timedelta(days=365),
    )
    await world.publish(
        Topic.CREDITNOTES_EVENTS,
        [new_envelope("credit_note.issued", source="credit_notes", subject="WU-10001", data=credit_note)],
    )

    await eventually(lambda: has(world, "2025-04", ["kpis", "total_collected", "value"], "145.50"))
    await eventually(lambda: has(world, "2025-04", ["kpis", "credit_notes_issued", "count"], 1))
    await eventually(lambda: has(world, "2025-04", ["kpis", "collection_rate", "total_due"], "213.00"))
    summary = await world.summary("2025-04")
    kpis = summary["kpis"]
    assert summary["total_collected"] == [{"currency": "USD", "amount": "145.50", "payments": 1}]
    assert kpis["total_collected"] == {"value": "145.50", "previous": "0.00", "change_percent": None, "payments": 1}
    assert kpis["collection_rate"] == {
        "value": "68.31",
        "previous": None,
        "change_percent": None,
        "total_collected": "145.50",
        "total_due": "213.00",
    }
    assert kpis["average_collection_time"] == {
        "value": "20.00",
        "previous": None,
        "change_percent": None,
        "payments": 1,
    }
    assert kpis["credit_notes_issued"]["count"] == 1
    assert kpis["credit_notes_issued"]["amount"] == "4.50"
    assert kpis["credit_notes_applied"]["count"] == 0
    assert kpis["pending_verification"] == {"count": 0}
    assert kpis["failed_online_payments"]["count"] == 0

    # "Received Today" is as of the sample's day: the same query the endpoint runs, with the clock set then.
    async with world.service.sessions() as session:
        as_of_sample_day = views.summary(
            await queries.summary(
                session, "2025-04", currency="USD", time_zone=chicago, now=datetime(2025, 4, 20, 23, 0, tzinfo=chicago)
            )
        )
    assert as_of_sample_day["kpis"]["received_today"] == {
        "value": "145.50",
        "previous": "0.00",
        "change_percent": None,
        "day": "2025-04-20",
        "payments": 1,
        "previous_payments": 0,
    }
    # May compares with April.
    may = await world.summary("2025-05")
    assert may["kpis"]["total_collected"]["previous"] == "145.50"
    assert may["kpis"]["total_collected"]["change_percent"] == "-100.00"
    assert may["kpis"]["collection_rate"]["total_due"] == "319.75"  # 152.25 + 75.00 + 25.00 + 67.50


async def test_cancellations_refunds_failures_and_credit_applications_move_the_figures_exactly_once(
    world: World,
) -> None:
    """INVARIANT: a cancelled or refunded payment stops counting as collected; no redelivery counts twice."""
    account = unique_account()
    period, first = "2031-03", date(2031, 3, 2)
    at = datetime(2031, 3, 10, 15, 0, tzinfo=UTC)
    cash = posted(account, f"{account}-1", "100.00", first, issued_on=date(2031, 2, 20), posted_at=at)
    online = posted(
        account,
        f"{account}-2",
        "50.00",
        date(2031, 3, 5),
        issued_on=date(2031, 3, 1),
        posted_at=at,
        channel="Online",
        method="Credit Card",
        verification="Pending",
    )
    card = posted(account, f"{account}-3", "25.25", date(2031, 3, 6), issued_on=None, posted_at=at, method="Debit Card")
    pending = posted(
        account,
        f"{account}-4",
        "10.00",
        date(2031, 3, 7),
        issued_on=date(2031, 3, 7),
        posted_at=at,
        channel="Online",
        method="Credit Card",
        verification="Pending",
    )
    cancel = new_envelope(
        "payment.cancelled",
        source="payments",
        subject=account,
        data=PaymentCancelled(
            payment_id=f"{account}-1",
            receipt_number=f"R-{account}-1",
            account_number=account,
            amount=Money(amount=Decimal("100.00")),
            reason="Duplicate entry",
            cancelled_by="Admin",
            cancelled_at=at + timedelta(hours=1),
        ),
    )
    refund = status_changed(account, f"{account}-2", "Posted", "Refunded", at + timedelta(hours=2))
    failed = [status_changed(account, f"{account}-9", "Pending", "Failed", at + timedelta(minutes=m)) for m in (1, 2)]
    verified = new_envelope(
        "payment.verified",
        source="payments",
        subject=account,
        data=PaymentVerified(
            payment_id=f"{account}-4",
            receipt_number=f"R-{account}-4",
            account_number=account,
            verified_by="Bill Manager",
            verified_at=at + timedelta(hours=3),
        ),
    )
    # The same payment announced again under a new event id (a producer bug) must not count twice either.
    cash_again = cash.model_copy(update={"id": new_envelope("x", source="t", subject="t", data={}).id})
    events = [cash, online, card, pending, cash_again, cancel, refund, *failed, verified]
    due = bill(account, f"INV-{account}", "400.00", issued_on=date(2031, 2, 20), due_date=date(2031, 3, 15))
    applied = CreditNoteApplied(
        credit_note_number=f"CN-{account}",
        account_number=account,
        payment_type=PaymentType.BILL,
        item_reference=f"INV-{account}",
        applied=Money(amount=Decimal("4.50")),
        remaining=Money(amount=Decimal("0.00")),
        status="Applied",
        applied_by="Jane Smith",
        applied_at=at,
    )
    credit = new_envelope("credit_note.applied", source="credit_notes", subject=account, data=applied)

    # Markers, last on their partitions (same account): once they count, everything before them was applied.
    marker_at = datetime(2031, 4, 2, 12, 0, tzinfo=UTC)
    marker = status_changed(account, f"{account}-marker", "Pending", "Failed", marker_at)
    credit_marker = new_envelope(
        "credit_note.applied",
        source="credit_notes",
        subject=account,
        data=applied.model_copy(update={"applied_at": marker_at}),
    )
    await world.publish(Topic.BILLING_RECEIVABLES, [due, due])
    await world.publish(Topic.CREDITNOTES_EVENTS, [credit, credit, credit_marker])
    await world.publish(Topic.PAYMENTS_EVENTS, [*events, *events, marker])  # every event delivered twice

    await eventually(lambda: has(world, "2031-04", ["kpis", "failed_online_payments", "count"], 1))
    await eventually(lambda: has(world, "2031-04", ["kpis", "credit_notes_applied", "count"], 1))
    await eventually(lambda: has(world, period, ["kpis", "collection_rate", "total_due"], "400.00"))
    kpis = (await world.summary(period))["kpis"]
    # Collected: only the 25.25 card payment and the 10.00 online one remain (cash cancelled, 50.00 refunded).
    assert kpis["total_collected"]["value"] == "35.25"
    assert kpis["total_collected"]["payments"] == 2
    assert kpis["collection_rate"]["total_due"] == "400.00"
    assert kpis["collection_rate"]["value"] == "8.81"  # 35.25 / 400 x 100 = 8.8125
    assert kpis["average_collection_time"]["value"] == "0.00"  # only the 10.00 one is timed: same day
    assert (kpis["cancelled_payments"]["count"], kpis["cancelled_payments"]["amount"]) == (1, "100.00")
    assert (kpis["refunded_payments"]["count"], kpis["refunded_payments"]["amount"]) == (1, "50.00")
    assert kpis["failed_online_payments"]["count"] == 1  # reported twice, one payment
    assert (kpis["credit_notes_applied"]["count"], kpis["credit_notes_applied"]["amount"]) == (1, "4.50")

    manager = auth(Role.BILLING_MANAGER)
    by_channel = (await world.client.get(f"/kpi/drilldown?period={period}&by=channel", headers=manager)).json()
    assert by_channel["rows"] == [
        {"channel": "Walk-in", "payments": 1, "amount": "25.25", "share_percent": "71.63"},
        {"channel": "Online", "payments": 1, "amount": "10.00", "share_percent": "28.37"},
    ]
    walk_in = (
        await world.client.get(f"/kpi/drilldown?period={period}&by=method&channel=Walk-in", headers=manager)
    ).json()
    assert walk_in["rows"] == [{"method": "Debit Card", "payments": 1, "amount": "25.25", "share_percent": "100.00"}]
    daily = (
        await world.client.get("/kpi/trends?from=2031-03-01&to=2031-03-31&granularity=day&by=type", headers=manager)
    ).json()
    assert daily["points"] == [
        {"bucket": "2031-03-06", "payments": 1, "amount": "25.25", "type": "bill"},
        {"bucket": "2031-03-07", "payments": 1, "amount": "10.00", "type": "bill"},
    ]
    monthly = (
        await world.client.get("/kpi/trends?from=2031-01-01&to=2031-04-30&granularity=month", headers=manager)
    ).json()
    assert monthly["points"] == [{"bucket": "2031-03", "payments": 2, "amount": "35.25"}]


async def test_only_billing_managers_and_admins_read_the_figures(world: World) -> None:
    assert (await world.client.get("/kpi/summary?period=2025-04")).status_code == 401
    for role, allowed in [
        (Role.CUSTOMER_EXECUTIVE, False),
        (Role.RECOVERY_EXECUTIVE, False),
        (Role.BILLING_MANAGER, True),
        (Role.ADMIN, True),
    ]:
        response = await world.client.get("/kpi/summary?period=2025-04", headers=auth(role))
        assert (response.status_code == 200) is allowed, (role, response.status_code)
    bad = await world.client.get("/kpi/summary?period=2025-13", headers=auth(Role.ADMIN))
    assert bad.status_code == 422
    assert bad.json()["field"] == "period"


async def test_alerts_are_raised_once_per_crossing_on_the_alerts_topic(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    manager = auth(Role.BILLING_MANAGER, "Bill Manager")
    rate = await world.client.post(
        "/kpi/alerts", headers=manager, json={"metric": "collection_rate", "comparison": "below", "threshold": "90"}
    )
    failures = await world.client.post(
        "/kpi/alerts",
        headers=manager,
        json={"metric": "failed_online_payments_per_hour", "comparison": "above", "threshold": "2"},
    )
    assert rate.status_code == failures.status_code == 201, rate.text
    assert rate.json()["created_by"] == "Bill Manager"
    invalid = await world.client.post(
        "/kpi/alerts", headers=manager, json={"metric": "collection_rate", "comparison": "below", "threshold": "120"}
    )
    assert invalid.status_code == 422
    assert invalid.json()["field"] == "threshold"
    clerk = auth(Role.CUSTOMER_EXECUTIVE)
    assert (await world.client.get("/kpi/alerts", headers=clerk)).status_code == 403

    caplog.set_level(logging.WARNING, logger="services.kpi.alerts")
    account = unique_account()
    at = datetime(2032, 6, 10, 9, 15, tzinfo=UTC)
    await world.publish(
        Topic.BILLING_RECEIVABLES,
        [bill(account, f"INV-{account}", "200.00", issued_on=date(2032, 6, 1), due_date=date(2032, 6, 20))],
    )  # rate 0 % in 2032-06: crossing 1 (applied before the payments: the two topics are not ordered together)
    await eventually(lambda: has(world, "2032-06", ["kpis", "collection_rate", "total_due"], "200.00"))
    pay = posted(account, f"{account}-1", "200.00", date(2032, 6, 11), issued_on=date(2032, 6, 1), posted_at=at)
    cancel = new_envelope(
        "payment.cancelled",
        source="payments",
        subject=account,
        data=PaymentCancelled(
            payment_id=f"{account}-1",
            receipt_number=f"R-{account}-1",
            account_number=account,
            amount=Money(amount=Decimal("200.00")),
            reason="Bounced",
            cancelled_by="Admin",
            cancelled_at=at + timedelta(hours=1),
        ),
    )
    # 100 % (back above), then 0 % again: crossing 2. Five failures in one hour: one crossing above 2.
    fails = [
        status_changed(account, f"{account}-F{n}", "Pending", "Failed", at + timedelta(minutes=n)) for n in range(5)
    ]
    await world.publish(Topic.PAYMENTS_EVENTS, [pay, cancel, *fails])

    async def raised() -> list[dict[str, Any]]:
        records = await read_topic(world.bootstrap, Topic.KPI_ALERTS)
        return [json.loads(r.value)["data"] for r in records]

    await eventually(lambda: _count(raised(), 3))
    alerts = await raised()
    by_metric = sorted((a["metric"], a["period"], a["value"]) for a in alerts)
    assert by_metric == [
        ("collection_rate", "2032-06", "0.00"),
        ("collection_rate", "2032-06", "0.00"),
        ("failed_online_payments_per_hour", "2032-06-10T09:00Z/PT1H", "3"),
    ]
    listed = (await world.client.get("/kpi/alerts", headers=manager)).json()
    assert {a["alert_id"] for a in listed["alerts"]} >= {rate.json()["alert_id"], failures.json()["alert_id"]}
    windows = {(r["alert_id"], r["window"]): r["raised_count"] for r in listed["recently_raised"]}
    assert windows[(rate.json()["alert_id"], "2032-06")] == 2
    assert any(r.getMessage() == "alert raised" for r in caplog.records)

    usage = [json.loads(r.value)["data"] for r in await read_topic(world.bootstrap, Topic.ANALYTICS_EVENTS)]
    setups = [u for u in usage if u["event"] == "alert_setup"]
    assert {u["properties"]["alert_type"] for u in setups} == {"collection_rate", "failed_online_payments_per_hour"}
    assert all(u["user_id"] == "bill.manager" for u in setups)


async def _count(values: Any, expected: int) -> bool:
    found = await values
    assert len(found) <= expected, f"more alerts than crossings: {found}"
    return len(found) == expected


async def _snapshot(world: World) -> dict[str, list[tuple[Any, ...]]]:
    async with world.service.sessions() as session:
        return {
            table.name: sorted(
                (tuple(row) for row in (await session.execute(select(table))).all()),
                key=repr,
            )
            for table in AGGREGATES
        }


async def test_kpi_rebuild_from_offset_zero_gives_the_live_figures(world: World) -> None:
    """INVARIANT: the aggregates are a function of the topics; recomputing them from offset 0 changes nothing."""
    account = unique_account()
    marker = posted(
        account, f"{account}-M", "1.00", date(2033, 1, 1), issued_on=None, posted_at=datetime(2033, 1, 1, tzinfo=UTC)
    )
    await world.publish(Topic.PAYMENTS_EVENTS, [marker])
    await eventually(lambda: has(world, "2033-01", ["kpis", "total_collected", "value"], "1.00"))
    live = await _snapshot(world)
    assert sum(len(rows) for rows in live.values()) > 20, "the earlier tests of this module fed the aggregates"
    staged_before = await _outbox_rows(world)

    env = {
        **os.environ,
        "DATABASE_URL": world.settings.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": world.bootstrap,
        "KPI_TIME_ZONE": ZONE,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "paydesk.cli", "kpi-rebuild", env=env, cwd=ROOT, stdout=PIPE, stderr=PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    stdout = out.decode()
    assert "rebuilt kpi aggregates" in stdout
    assert "duplicate" in stdout, "the topics hold redeliveries, which the rebuild skips as live did"
    assert await _snapshot(world) == live
    assert await _outbox_rows(world) == staged_before, "replaying history raises no alert again"


async def _outbox_rows(world: World) -> int:
    async with world.service.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(plumbing.outbox))).scalar_one())
