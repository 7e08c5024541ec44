"""Driving the collections service in tests: billing's events for a delinquent account, payments against
installments, the worklist and events read back."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import httpx

from services.collections.app import CollectionsService, create_service
from services.collections.settings import CollectionsSettings
from shared.auth import Role, mint_token
from shared.contracts import Envelope, Topic, new_envelope
from shared.contracts.events import AccountUpserted, BillIssued, Money, PaymentType
from tests.conftest import Infra
from tests.support.helpers import counter_payment, eventually, publish, read_topic, running

SECRET = "collections-test-secret-long-enough-for-hs256"
EXECUTIVE = "Rita Recovery"
MANAGER = "Bill Manager"


def at(day: date) -> datetime:
    """Nine in the morning, UTC, on `day`: what the simulated clock is set to."""
    return datetime.combine(day, time(9), tzinfo=UTC)


@dataclass
class Desk:
    service: CollectionsService
    client: httpx.AsyncClient
    bootstrap: str

    def auth(self, role: Role = Role.RECOVERY_EXECUTIVE, user: str = EXECUTIVE) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint_token(SECRET, user=user, roles=[role])}"}

    def writer(self, role: Role = Role.RECOVERY_EXECUTIVE, user: str = EXECUTIVE) -> dict[str, str]:
        return self.auth(role, user) | {"Idempotency-Key": f"key-{uuid.uuid4().hex}"}

    def set_today(self, day: date) -> None:
        self.service.desk.clock.set(at(day))

    async def get(self, path: str, role: Role = Role.RECOVERY_EXECUTIVE, **params: Any) -> httpx.Response:
        return await self.client.get(path, headers=self.auth(role), params=params)

    async def post(self, path: str, body: dict[str, Any] | None = None, **kwargs: Any) -> httpx.Response:
        return await self.client.post(path, json=body, headers=kwargs.pop("headers", None) or self.writer(), **kwargs)

    async def row(self, account: str) -> dict[str, Any] | None:
        response = await self.get("/collections/accounts", q=account)
        assert response.status_code == 200, response.text
        found = [r for r in response.json()["items"] if r["account_number"] == account]
        return found[0] if found else None

    async def arrangement(self, arrangement_id: str) -> dict[str, Any]:
        response = await self.get(f"/arrangements/{arrangement_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def disconnection(self, account: str) -> dict[str, Any]:
        response = await self.get(f"/collections/accounts/{account}/disconnection")
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def delinquent(self, account: str, name: str, bills: list[tuple[str, str, date]]) -> None:
        """Billing's events for an account with `bills` (reference, amount, due date); waits until seen."""
        events = [
            new_envelope(
                "account.upserted",
                source="billing",
                subject=account,
                data=AccountUpserted(account_number=account, name=name, service_address="1 Test Street"),
            )
        ]
        for reference, amount, due in bills:
            bill = BillIssued(
                account_number=account,
                invoice_number=reference,
                billing_period=due.strftime("%Y-%m"),
                amount=Money(amount=Decimal(amount)),
                issued_on=due.replace(day=1),
                due_date=due,
            )
            events.append(new_envelope("bill.issued", source="billing", subject=account, data=bill))
        await publish(self.bootstrap, Topic.BILLING_RECEIVABLES, events)
        total = sum((Decimal(amount) for _, amount, _ in bills), Decimal(0))

        async def seen() -> bool:
            found = await self.row(account)
            return found is not None and found["name"] == name and Decimal(found["amount_owed"]["amount"]) == total

        await eventually(seen)

    async def pay(
        self, account: str, reference: str, amount: str, day: date, *, receipt: str | None = None
    ) -> Envelope:
        """A `payment.posted` for an installment, as payments publishes it."""
        posted = counter_payment(
            account,
            receipt_number=receipt or f"R-{uuid.uuid4().hex[:10].upper()}",
            amount=amount,
            due=amount,
            item_reference=reference,
            payment_type=PaymentType.INSTALLMENT,
            day=day,
        )
        await publish(self.bootstrap, Topic.PAYMENTS_EVENTS, [posted])
        return posted

    async def events(self, account: str, *types: str) -> list[Envelope]:
        records = await read_topic(self.bootstrap, Topic.COLLECTIONS_EVENTS)
        found = [Envelope.model_validate_json(r.value) for r in records]
        return [e for e in found if e.subject == account and (not types or e.type in types)]

    async def tracked(self, event: str) -> list[Envelope]:
        records = await read_topic(self.bootstrap, Topic.ANALYTICS_EVENTS)
        found = [Envelope.model_validate_json(r.value) for r in records]
        return [e for e in found if e.source == "collections" and e.data.get("event") == event]


async def collections_desk(infra: Infra, **overrides: Any) -> AsyncIterator[Desk]:
    settings = CollectionsSettings(
        database_url=infra.database_url,
        kafka_bootstrap_servers=infra.bootstrap_servers,
        jwt_secret=SECRET,
        outbox_poll_seconds=0.05,
        compliance_check_seconds=3600,
        approval_total=Decimal("1000.00"),
        approval_installments=12,
        break_after_missed=2,
        disconnection_threshold_days=60,
        disconnection_threshold_amount=Decimal("50.00"),
        **overrides,
    )
    service = create_service(settings)
    async with running(service):
        transport = httpx.ASGITransport(app=service.http)
        async with httpx.AsyncClient(transport=transport, base_url="http://collections", timeout=60) as client:
            yield Desk(service, client, infra.bootstrap_servers)
