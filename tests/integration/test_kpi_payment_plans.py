"""kpi's payment-plan figures from collections' events on a real broker and database of their own (whole-month
figures are asserted exactly): payment plan compliance, recovered this month, the missed-installments alert,
no double counting of an arrangement's installments as due, and a rebuild from offset 0 that gives the same rows."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from services.kpi.app import create_service
from services.kpi.settings import KpiSettings
from services.kpi.storage import daily_events, daily_plan_outcomes, plan_installments
from shared.auth import Role, mint_token
from shared.contracts import Envelope, Topic, new_envelope
from shared.contracts.events import (
    ArrangementCreated,
    ArrangementInstallment,
    ArrangementPaymentApplied,
    BillIssued,
    Installment,
    InstallmentAllocation,
    InstallmentMissed,
    InstallmentPlanCreated,
    Money,
)
from shared.service import Service
from tests.conftest import Infra
from tests.support.helpers import eventually, own_broker_and_database, publish, read_topic, running, unique_account

pytestmark = pytest.mark.kafka
SECRET = "kpi-plans-test-secret-long-enough-for-hs256"
ROOT = Path(__file__).parents[2]
MANAGER = {"Authorization": f"Bearer {mint_token(SECRET, user='Bill Manager', roles=[Role.BILLING_MANAGER])}"}
PLAN = "PA-2034-000001"


def usd(amount: str) -> Money:
    return Money(amount=Decimal(amount), currency="USD")


@pytest.fixture(scope="module")
async def kpi(infra: Infra) -> AsyncIterator[tuple[KpiSettings, Service, httpx.AsyncClient]]:
    async with own_broker_and_database(infra.database_url, infra.workdir, "kpiplans", ("kpi",)) as (url, bootstrap):
        settings = KpiSettings(database_url=url, kafka_bootstrap_servers=bootstrap, jwt_secret=SECRET)
        async with running(create_service(settings)) as service:
            transport = httpx.ASGITransport(app=service.http)
            async with httpx.AsyncClient(transport=transport, base_url="http://kpi") as client:
                yield settings, service, client


async def summary(client: httpx.AsyncClient, period: str) -> dict[str, Any]:
    response = await client.get(f"/kpi/summary?period={period}", headers=MANAGER)
    assert response.status_code == 200, response.text
    return dict(response.json()["kpis"])


async def kpis_are(client: httpx.AsyncClient, period: str, expected: dict[str, Any]) -> bool:
    found = await summary(client, period)
    return all(found[name] == value for name, value in expected.items())


def created(account: str) -> Envelope:
    installments = [
        ArrangementInstallment(number=n, item_reference=f"{PLAN}/{n}", amount=usd("100.00"), due_date=date(2034, 3, d))
        for n, d in ((1, 5), (2, 12), (3, 19))
    ]
    data = ArrangementCreated(
        arrangement_id=PLAN,
        plan_id=PLAN,
        account_number=account,
        total=usd("300.00"),
        down_payment=usd("0.00"),
        frequency="weekly",
        first_due_date=date(2034, 3, 5),
        grace_days=2,
        installments=installments,
        covered_items=[],
        executive="Rita Recovery",
        created_by="Rita Recovery",
        created_at=datetime(2034, 3, 1, 9, tzinfo=UTC),
    )
    return new_envelope("arrangement.created", source="collections", subject=account, data=data)


def applied(account: str, number: int, paid_on: date, *, reversed_: bool = False) -> Envelope:
    data = ArrangementPaymentApplied(
        arrangement_id=PLAN,
        account_number=account,
        receipt_number=f"R-{number}",
        payment_id=f"PAY-{number}",
        paid_reference=f"{PLAN}/{number}",
        allocations=[InstallmentAllocation(item_reference=f"{PLAN}/{number}", amount=usd("100.00"))],
        amount=usd("100.00"),
        paid_on=paid_on,
        executive="Rita Recovery",
        reversed=reversed_,
        compliance="reversed" if reversed_ else "on_time",
    )
    return new_envelope("arrangement.payment_applied", source="collections", subject=account, data=data)


def missed(account: str) -> Envelope:
    data = InstallmentMissed(
        arrangement_id=PLAN,
        account_number=account,
        item_reference=f"{PLAN}/3",
        number=3,
        amount=usd("100.00"),
        unpaid=usd("100.00"),
        due_date=date(2034, 3, 19),
        grace_days=2,
        missed_count=1,
        executive="Rita Recovery",
        missed_on=date(2034, 3, 22),
    )
    return new_envelope("installment.missed", source="collections", subject=account, data=data)


def plan_as_receivable(account: str, source: str, plan_id: str) -> Envelope:
    data = InstallmentPlanCreated(
        account_number=account,
        plan_id=plan_id,
        created_on=date(2034, 4, 1),
        installments=[Installment(number=1, amount=usd("70.00"), due_date=date(2034, 4, 10))],
    )
    return new_envelope("installment_plan.created", source=source, subject=account, data=data)


async def test_plan_compliance_recovered_missed_alert_and_no_double_counting(
    kpi: tuple[KpiSettings, Service, httpx.AsyncClient],
) -> None:
    settings, service, client = kpi
    bootstrap = settings.kafka_bootstrap_servers
    rule = await client.post(
        "/kpi/alerts",
        headers=MANAGER,
        json={"metric": "missed_installments_per_day", "comparison": "above", "threshold": "0"},
    )
    assert rule.status_code == 201, rule.text
    fraction = await client.post(
        "/kpi/alerts",
        headers=MANAGER,
        json={"metric": "missed_installments_per_day", "comparison": "above", "threshold": "0.5"},
    )
    assert (fraction.status_code, fraction.json()["field"]) == (422, "threshold")

    account = unique_account()
    # /1 paid on its due date (kept), /2 two days after its grace (late), /3 missed.
    await publish(
        bootstrap,
        Topic.COLLECTIONS_EVENTS,
        [
            created(account),
            applied(account, 1, date(2034, 3, 5)),
            applied(account, 2, date(2034, 3, 16)),
            missed(account),
        ],
    )
    expected = {
        "payment_plan_compliance": {
            "value": "33.33",
            "previous": None,
            "change_percent": None,
            "kept": 1,
            "late": 1,
            "missed": 1,
        },
        "recovered_this_month": {"value": "200.00", "previous": "0.00", "change_percent": None, "payments": 2},
    }
    await eventually(lambda: kpis_are(client, "2034-03", expected))
    figures = await summary(client, "2034-03")
    assert (figures["missed_installments"]["count"], figures["missed_installments"]["amount"]) == (1, "100.00")

    async def raised() -> list[dict[str, Any]]:
        records = await read_topic(bootstrap, Topic.KPI_ALERTS)
        return [json.loads(r.value)["data"] for r in records]

    alerts = await eventually(raised)
    assert [(a["metric"], a["period"], a["value"]) for a in alerts] == [
        ("missed_installments_per_day", "2034-03-22", "1")
    ]

    # The late payment taken back: recovered falls, and /2 is no longer decided.
    await publish(bootstrap, Topic.COLLECTIONS_EVENTS, [applied(account, 2, date(2034, 3, 16), reversed_=True)])
    expected["payment_plan_compliance"] |= {"value": "50.00", "late": 0}
    expected["recovered_this_month"] |= {"value": "100.00", "payments": 1}
    await eventually(lambda: kpis_are(client, "2034-03", expected))

    # An arrangement's installments re-state covered bills: not due again. Billing's own plan is.
    bill = BillIssued(
        account_number=account,
        invoice_number=f"INV-{account}",
        billing_period="2034-04",
        amount=usd("50.00"),
        issued_on=date(2034, 4, 1),
        due_date=date(2034, 4, 9),
    )
    await publish(
        bootstrap,
        Topic.BILLING_RECEIVABLES,
        [
            plan_as_receivable(account, "collections", f"{PLAN}.2"),
            new_envelope("bill.issued", source="billing", subject=account, data=bill),
            plan_as_receivable(account, "billing", f"PP-{account}"),
        ],
    )
    await eventually(lambda: _due_is(client, "2034-04", "120.00"))
    assert len(await raised()) == 1, "one crossing, one alert"

    # The rebuild replays collections' events through the same handlers: the same rows, no alert again.
    tables = (plan_installments, daily_plan_outcomes, daily_events)
    live = await _rows(service, tables)
    env = {**os.environ, "DATABASE_URL": settings.database_url, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "paydesk.cli", "kpi-rebuild", env=env, cwd=ROOT, stdout=PIPE, stderr=PIPE
    )
    _, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert await _rows(service, tables) == live
    assert len(await raised()) == 1


async def _due_is(client: httpx.AsyncClient, period: str, amount: str) -> bool:
    return bool((await summary(client, period))["collection_rate"]["total_due"] == amount)


async def _rows(service: Service, tables: tuple[Any, ...]) -> dict[str, list[tuple[Any, ...]]]:
    async with service.sessions() as session:
        return {t.name: sorted((tuple(r) for r in (await session.execute(select(t))).all()), key=repr) for t in tables}
