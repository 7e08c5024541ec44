"""The recovery executive's eight flow steps of the seed, over HTTP, on the running system: payments and
collections as real processes on the real broker and database, the compliance pass run by the `paydesk` command.

1. Navigate to collections management  2. Search delinquent accounts with filters  3. Create a payment arrangement
4. Record the initial payment against the plan  5. Monitor compliance  6. Receive and respond to violation alerts
7. Modify the arrangement  8. Generate collection reports.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from time import sleep
from typing import Any

import httpx
import pytest

from paydesk.embedded import free_port
from shared.auth import Role, mint_token
from shared.contracts import Topic, new_envelope
from shared.contracts.events import AccountUpserted, BillIssued, Money
from tests.conftest import Infra
from tests.support.helpers import eventually, publish

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]

SECRET = "e2e-collections-secret-long-enough-for-hs256"
SERVICES = {"payments": "PAYMENTS_", "collections": "COLLECTIONS_"}
EXECUTIVE = "Rita Recovery"


@dataclass(frozen=True)
class System:
    collections: str
    payments: str
    env: dict[str, str]


@pytest.fixture(scope="module")
def system(infra: Infra) -> Iterator[System]:
    ports = {name: free_port() for name in SERVICES}
    logs = infra.workdir / "e2e-collections-logs"
    logs.mkdir(exist_ok=True)
    env = {**os.environ, **infra.env(), "PAYDESK_JWT_SECRET": SECRET, "PAYDESK_OTEL_EXPORTER": "none"}
    env.update({f"{prefix}HTTP_PORT": str(ports[name]) for name, prefix in SERVICES.items()})
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-m", "paydesk.cli", "service", name],
            env=env,
            stdout=open(logs / f"{name}.log", "wb"),  # noqa: SIM115 - held open for the process lifetime
            stderr=subprocess.STDOUT,
        )
        for name in SERVICES
    }
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    try:
        for name, url in urls.items():
            for _ in range(600):
                try:
                    if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert processes[name].poll() is None, (logs / f"{name}.log").read_text()[-3000:]
                sleep(0.2)
        yield System(urls["collections"], urls["payments"], env)
    finally:
        for process in processes.values():
            process.send_signal(signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def bearer(role: Role, user: str = EXECUTIVE) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SECRET, user=user, roles=[role])}"}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as http:
        yield http


async def test_the_recovery_executives_eight_steps(system: System, infra: Infra, client: httpx.AsyncClient) -> None:
    collections, payments = system.collections, system.payments
    executive = bearer(Role.RECOVERY_EXECUTIVE)
    today = datetime.now(UTC).date()
    account = f"E2E-{uuid.uuid4().hex[:8].upper()}"
    name = f"Nadia Overdue {account[-4:]}"
    bills = [
        (f"INV-{account}-1", "240.00", today - timedelta(days=70)),
        (f"INV-{account}-2", "160.00", today - timedelta(days=40)),
    ]
    events = [
        new_envelope(
            "account.upserted",
            source="billing",
            subject=account,
            data=AccountUpserted(account_number=account, name=name, service_address="9 Arrears Road"),
        ),
        *(
            new_envelope(
                "bill.issued",
                source="billing",
                subject=account,
                data=BillIssued(
                    account_number=account,
                    invoice_number=ref,
                    billing_period=due.strftime("%Y-%m"),
                    amount=Money(amount=Decimal(amount)),
                    issued_on=due - timedelta(days=15),
                    due_date=due,
                ),
            )
            for ref, amount, due in bills
        ),
    ]
    await publish(infra.bootstrap_servers, Topic.BILLING_RECEIVABLES, events)

    # 1. Navigate to collections management.
    landing = await client.get(f"{collections}/collections/accounts", headers=executive)
    assert landing.status_code == 200
    assert (await client.get(f"{collections}/collections/accounts")).status_code == 401

    # 2. Search delinquent accounts with filters: by part of the name, any case, past 60 days, in the 61-90 bucket.
    async def found() -> list[dict[str, Any]]:
        response = await client.get(
            f"{collections}/collections/accounts",
            headers=executive,
            params={"q": name.upper()[-10:], "days_overdue_min": 60, "bucket": "61-90", "has_plan": "false"},
        )
        # Both bills are separate events: the account is listed (at 240.00) as soon as the first is projected.
        return [
            r
            for r in response.json()["items"]
            if r["account_number"] == account and r["amount_overdue"]["amount"] == "400.00"
        ]

    row = (await eventually(found))[0]
    assert (row["amount_overdue"]["amount"], row["days_overdue"], row["disconnection"]) == ("400.00", 70, "eligible")

    # 3. Create a payment arrangement: 100 down today, then 3 monthly installments, 3 days' grace.
    created = await client.post(
        f"{collections}/arrangements",
        headers=executive | {"Idempotency-Key": f"e2e-{account}"},
        json={
            "account_number": account,
            "down_payment": "100.00",
            "installments": 3,
            "frequency": "monthly",
            "first_due_date": today.isoformat(),
            "grace_days": 3,
            "notes": "agreed on the phone",
            "negotiation_seconds": 540,
        },
    )
    assert created.status_code == 201, created.text
    plan = created.json()
    arrangement_id = plan["arrangement_id"]
    assert plan["status"] == "Active"
    assert [i["amount"]["amount"] for i in plan["installments"]] == ["100.00", "100.00", "100.00", "100.00"]
    hold = (await client.get(f"{collections}/collections/accounts/{account}/disconnection", headers=executive)).json()
    assert (hold["state"], hold["may_disconnect"]) == ("hold", False)

    # 4. Record the initial payment against the plan, at the counter (payments learned the installments from Kafka).
    clerk = bearer(Role.CUSTOMER_EXECUTIVE, "Jane Smith")

    async def payable() -> list[str]:
        response = await client.get(f"{payments}/consumers/{account}", headers=clerk)
        if response.status_code != 200:
            return []
        return [i["item_reference"] for i in response.json()["unpaid_installments"]]

    assert f"{arrangement_id}/1" in await eventually(payable)
    paid = await client.post(
        f"{payments}/payments",
        headers=clerk | {"Idempotency-Key": f"e2e-pay-{account}"},
        json={
            "account_number": account,
            "payment_type": "installment",
            "item_reference": f"{arrangement_id}/1",
            "method": "Credit Card",
            "amount": "100.00",
            "payment_date": today.isoformat(),
        },
    )
    assert paid.status_code == 201, paid.text

    # 5. Monitor compliance: the down payment shows on time; the pass runs (as the `paydesk` command) past grace.
    async def down_paid() -> dict[str, Any] | None:
        body = (await client.get(f"{collections}/arrangements/{arrangement_id}", headers=executive)).json()
        return body if body["installments"][0]["status"] == "on_time" else None

    assert (await eventually(down_paid))["paid"]["amount"] == "100.00"
    second_due = date.fromisoformat(plan["installments"][1]["due_date"])
    after_grace = datetime.combine(second_due + timedelta(days=4), time(9), tzinfo=UTC)
    command = [sys.executable, "-m", "paydesk.cli", "check-collections", "--at", after_grace.isoformat()]
    ran = await asyncio.to_thread(subprocess.run, command, env=system.env, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.startswith("missed 1 installments"), ran.stdout

    # 6. Receive and respond to the violation alert.
    async def alert() -> list[dict[str, Any]]:
        items = (await client.get(f"{collections}/alerts", headers=executive)).json()["items"]
        return [a for a in items if a["arrangement_id"] == arrangement_id and a["kind"] == "installment_missed"]

    raised = (await eventually(alert))[0]
    acknowledged = await client.post(
        f"{collections}/alerts/{raised['alert_id']}/acknowledge", headers=executive, json={"action_taken": "called"}
    )
    assert acknowledged.status_code == 200
    logged = await client.post(
        f"{collections}/activities",
        headers=executive | {"Idempotency-Key": f"e2e-act-{account}"},
        json={
            "account_number": account,
            "activity_type": "call",
            "outcome": "reduced hours",
            "follow_up_on": (today + timedelta(days=7)).isoformat(),
        },
    )
    assert logged.status_code == 201, logged.text

    # 7. Modify the arrangement for the customer's circumstances: 6 fortnightly installments from next week.
    modified = await client.post(
        f"{collections}/arrangements/{arrangement_id}/modify",
        headers=executive,
        json={
            "reason": "reduced hours",
            "installments": 6,
            "frequency": "fortnightly",
            "first_due_date": (today + timedelta(days=7)).isoformat(),
        },
    )
    assert modified.status_code == 200, modified.text
    assert modified.json()["plan_id"] == f"{arrangement_id}.2"
    assert f"{arrangement_id}.2/6" in await eventually(lambda: _containing(payable, f"{arrangement_id}.2/6"))

    # 8. Generate collection reports and export them.
    manager = bearer(Role.BILLING_MANAGER, "Bill Manager")
    report = (
        await client.get(
            f"{collections}/collections/reports", headers=manager, params={"period": today.strftime("%Y-%m")}
        )
    ).json()
    assert Decimal(report["recovered_total"]["amount"]) >= Decimal("100.00")
    assert report["plans_by_status"]["Active"] >= 1
    export = await client.get(
        f"{collections}/collections/reports/recovered/export",
        headers=manager,
        params={"period": today.strftime("%Y-%m")},
    )
    assert any(line[1] == arrangement_id for line in csv.reader(io.StringIO(export.text)))


async def _containing(read: Any, wanted: str) -> list[str] | None:
    found: list[str] = await read()
    return found if wanted in found else None
