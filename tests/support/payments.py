"""Driving the payments service over HTTP in tests: a seeded consumer and payment requests."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import httpx

from services.payments.app import create_service
from services.payments.settings import PaymentsSettings
from shared.auth import Role, mint_token
from shared.contracts import Envelope, Topic, new_envelope
from shared.contracts.events import (
    AccountUpserted,
    BillIssued,
    Installment,
    InstallmentPlanCreated,
    Money,
    ServiceChargeIssued,
)
from shared.service import Service
from tests.conftest import Infra
from tests.support.helpers import caught_up, eventually, publish, running, unique_account

SECRET = "payments-api-test-secret-long-enough-for-hs256"


def _usd(amount: str) -> Money:
    return Money(amount=Decimal(amount), currency="USD")


@dataclass
class Api:
    service: Service
    client: httpx.AsyncClient
    bootstrap: str

    def auth(self, role: Role = Role.CUSTOMER_EXECUTIVE, user: str = "Jane Smith") -> dict[str, str]:
        return {"Authorization": f"Bearer {mint_token(SECRET, user=user, roles=[role])}"}

    async def pay(
        self, body: dict[str, Any], *, key: str | None = None, role: Role = Role.CUSTOMER_EXECUTIVE
    ) -> httpx.Response:
        headers = self.auth(role) | {"Idempotency-Key": key or f"test-{uuid.uuid4()}"}
        return await self.client.post("/payments", json=body, headers=headers)

    async def pay_retrying(self, body: dict[str, Any], *, key: str | None = None) -> httpx.Response:
        """As a well-behaved client: on 503 (no database connection free in time on a busy machine) wait what
        Retry-After says and send the same request with the same Idempotency-Key again; any other answer is final."""
        key = key or f"test-{uuid.uuid4()}"
        for _ in range(200):
            response = await self.pay(body, key=key)
            if response.status_code != 503:
                return response
            await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
        return response

    async def get(self, path: str, role: Role = Role.CUSTOMER_EXECUTIVE, **params: Any) -> httpx.Response:
        return await self.client.get(path, headers=self.auth(role), params=params)

    async def consumer(self, account: str) -> dict[str, Any]:
        response = await self.get(f"/consumers/{account}")
        assert response.status_code == 200, response.text
        return dict(response.json())


async def payments_api(infra: Infra, **overrides: Any) -> AsyncIterator[Api]:
    settings = PaymentsSettings(
        database_url=infra.database_url,
        kafka_bootstrap_servers=infra.bootstrap_servers,
        jwt_secret=SECRET,
        outbox_poll_seconds=0.05,
        database_pool_size=20,
        **overrides,
    )
    service = create_service(settings)
    async with running(service):
        await caught_up(service)  # the backlog earlier tests left on the run's topics is not this module's time
        transport = httpx.ASGITransport(app=service.http)
        async with httpx.AsyncClient(transport=transport, base_url="http://payments", timeout=60) as client:
            yield Api(service, client, infra.bootstrap_servers)


def year_of(account: str) -> int:
    """The year a test consumer's bills and payments fall in: far from the seed's 2025 and from other tests, so
    event consumers of the shared topics (kpi's monthly totals) never see one test's data in another's month."""
    return 2200 + int(hashlib.sha256(account.encode()).hexdigest(), 16) % 800


def billing_events(account: str, name: str, *, balance: str | None = None) -> list[Envelope]:
    """A consumer like the seed's John Doe: two bills, two service charges, a plan of three installments."""
    year = year_of(account)
    payloads: list[tuple[str, Any]] = [
        (
            "account.upserted",
            AccountUpserted(
                account_number=account,
                name=name,
                service_address="123 Main Street, Cityville",
                phone="(555) 123-4567",
                email="john.doe@email.com",
                current_balance=_usd(balance) if balance else None,
            ),
        ),
        (
            "bill.issued",
            BillIssued(
                account_number=account,
                invoice_number=f"INV-{account}-1",
                billing_period=f"{year}-03",
                amount=_usd("145.50"),
                issued_on=date(year, 3, 31),
                due_date=date(year, 4, 15),
            ),
        ),
        (
            "bill.issued",
            BillIssued(
                account_number=account,
                invoice_number=f"INV-{account}-2",
                billing_period=f"{year}-04",
                amount=_usd("152.25"),
                issued_on=date(year, 4, 30),
                due_date=date(year, 5, 15),
            ),
        ),
        (
            "service_charge.issued",
            ServiceChargeIssued(
                account_number=account,
                service_charge_id=f"SC-{account}-1",
                description="Reconnection Fee",
                amount=_usd("75.00"),
                service_date=date(year, 4, 18),
                due_date=date(year, 4, 18),
            ),
        ),
        (
            "service_charge.issued",
            ServiceChargeIssued(
                account_number=account,
                service_charge_id=f"SC-{account}-2",
                description="Late Fee",
                amount=_usd("25.00"),
                service_date=date(year, 4, 10),
                due_date=date(year, 4, 10),
            ),
        ),
        (
            "installment_plan.created",
            InstallmentPlanCreated(
                account_number=account,
                plan_id=f"PP-{account}",
                created_on=date(year, 3, 20),
                installments=[
                    Installment(number=n, amount=_usd("67.50"), due_date=date(year, 3 + n, 15)) for n in (1, 2, 3)
                ],
            ),
        ),
    ]
    return [new_envelope(t, source="billing", subject=account, data=d) for t, d in payloads]


async def seeded(api: Api, *, name: str | None = None, balance: str | None = None) -> tuple[str, str]:
    """A fresh consumer with all seven open items, visible to payments."""
    account = unique_account()
    name = name or f"Zora Quillfeather {account[-6:]}"
    await publish(api.bootstrap, Topic.BILLING_RECEIVABLES, billing_events(account, name, balance=balance))

    async def ready() -> bool:
        response = await api.get(f"/consumers/{account}")
        if response.status_code != 200:
            return False
        body = response.json()
        return len(body["unpaid_bills"]) + len(body["unpaid_services"]) + len(body["unpaid_installments"]) == 7

    await eventually(ready)
    return account, name


def bill_payment(account: str, amount: str = "145.50", **extra: Any) -> dict[str, Any]:
    return {
        "account_number": account,
        "payment_type": "bill",
        "item_reference": f"INV-{account}-1",
        "method": "Credit Card",
        "amount": amount,
        "payment_date": f"{year_of(account)}-04-20",
    } | extra
