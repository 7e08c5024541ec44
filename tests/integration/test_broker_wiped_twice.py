"""A broker wiped and recreated twice while payments and Stripe webhooks keep coming in.

The harsh version of `test_broker_loss.py`'s "wiped" case, shaped like what the chaos runs saw: several consumer
services whose groups have committed offsets, counter payments and Stripe webhooks accepted while the broker is
down and while it comes back, and nobody but the services themselves to recreate the topics on the empty broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from paydesk.sample_data import SOURCE
from services.gateway_bridge.app import create_service as create_gateway_bridge
from services.gateway_bridge.settings import GatewayBridgeSettings
from services.kpi.app import create_service as create_kpi
from services.kpi.settings import KpiSettings
from services.kpi.storage import payments as kpi_payments
from services.payments.app import create_service as create_payments
from services.payments.settings import PaymentsSettings
from services.payments.storage import payments as posted_payments
from services.payments.storage import receivables
from services.receipts.app import create_service as create_receipts
from services.receipts.settings import ReceiptsSettings
from services.receipts.storage import receipts
from shared.auth import Role, mint_token
from shared.contracts import Topic, new_envelope
from shared.contracts.events import AccountUpserted, BillIssued, Money
from shared.messaging import provision_topics
from tests.conftest import PARTITIONS, Infra
from tests.support import stripe_fake as sf
from tests.support.brokers import new_broker
from tests.support.helpers import eventually, publish, running, unique_account, unique_day

pytestmark = pytest.mark.kafka
SECRET = "broker-wiped-twice-secret-long-enough-for-hs256"
PER_STEP = 6  # counter payments and as many webhooks in each of the four steps


async def test_payments_and_webhooks_accepted_around_two_broker_wipes_all_reach_every_consumer_once(
    infra: Infra,
) -> None:
    """INVARIANT: whatever the broker loses, every payment accepted (HTTP 201) and every Stripe webhook answered
    200 becomes exactly one payment, posted, receipted once and counted once by the KPIs."""
    broker = new_broker(infra.workdir, "wiped-twice")
    bootstrap = await asyncio.to_thread(broker.start)
    await provision_topics(bootstrap, partitions=PARTITIONS)
    common: dict[str, Any] = {
        "database_url": infra.database_url,
        "kafka_bootstrap_servers": bootstrap,
        "outbox_poll_seconds": 0.05,
        "development": True,
    }
    account, day = unique_account(), unique_day()
    steps = 4
    counter_bills = [[f"INV-{account}-C{s}-{n}" for n in range(PER_STEP)] for s in range(steps)]
    online_bills = [[f"INV-{account}-W{s}-{n}" for n in range(PER_STEP)] for s in range(steps)]
    every_bill = [bill for step in counter_bills + online_bills for bill in step]
    token = mint_token(SECRET, user="Jane Smith", roles=[Role.CUSTOMER_EXECUTIVE])
    api = sf.FakeStripeApi()

    try:
        async with AsyncExitStack() as stack:
            api_base = await stack.enter_async_context(sf.serving(api.app()))
            payments = create_payments(PaymentsSettings(**common, jwt_secret=SECRET))
            kpi = create_kpi(KpiSettings(**common))
            receipts_service = create_receipts(ReceiptsSettings(**common))
            bridge = create_gateway_bridge(
                GatewayBridgeSettings(
                    **common,
                    stripe_webhook_secret=SecretStr(sf.SECRET),
                    stripe_api_key=SecretStr(sf.API_KEY),
                    stripe_api_base=api_base,
                )
            )
            for service in (kpi, receipts_service, payments, bridge):
                await stack.enter_async_context(running(service))
            tellers = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=payments.http), base_url="http://payments")
            )
            stripe = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=bridge.http), base_url="http://gateway-bridge")
            )

            async def pay(bill: str) -> None:
                response = await tellers.post(
                    "/payments",
                    headers={"Authorization": f"Bearer {token}", "Idempotency-Key": f"key-{bill}"},
                    json={
                        "account_number": account,
                        "payment_type": "bill",
                        "item_reference": bill,
                        "method": "Cash",
                        "amount": "10.00",
                        "payment_date": day.isoformat(),
                    },
                )
                assert response.status_code == 201, response.text

            async def webhook(bill: str) -> None:
                event = sf.payment_intent_event(
                    "payment_intent.succeeded", sf.new_id("pi"), sf.metadata(account, bill), amount=1000
                )
                body = sf.body_of(event)
                response = await stripe.post(
                    "/webhooks/stripe",
                    content=body,
                    headers={"content-type": "application/json", "stripe-signature": sf.sign(body)},
                )
                assert response.status_code == 200, response.text

            async def step(index: int) -> None:
                for counter, online in zip(counter_bills[index], online_bills[index], strict=True):
                    await pay(counter)
                    await webhook(online)

            async def count(service_sessions: Any, table: Any) -> int:
                async with service_sessions() as session:
                    statement = select(func.count()).where(table.c.account_number == account)
                    return int((await session.execute(statement)).scalar_one())

            def reached_everyone(expected: int) -> Callable[[], Awaitable[bool]]:
                async def check() -> bool:
                    return (
                        await count(payments.sessions, posted_payments) == expected
                        and await count(kpi.sessions, kpi_payments) == expected
                        and await count(receipts_service.sessions, receipts) == expected
                    )

                return check

            await publish(bootstrap, Topic.BILLING_RECEIVABLES, _bills(account, every_bill))
            await eventually(lambda: _known(payments, every_bill), within=180)

            # Step 0: everything flows, so every consumer group commits offsets on the first cluster.
            await step(0)
            await eventually(reached_everyone(2 * PER_STEP), within=180)

            # Step 1 while the broker is dead; step 2 while it comes back empty, with nobody to recreate topics.
            first_cluster = broker.cluster_id
            broker.kill()
            await step(1)
            broker.wipe()
            await asyncio.gather(asyncio.to_thread(broker.start), step(2))
            assert broker.cluster_id != first_cluster, "an empty broker is a new cluster"
            await eventually(reached_everyone(6 * PER_STEP), within=240)

            # Once more, with step 3 racing the second wipe.
            second_cluster = broker.cluster_id
            broker.kill()
            broker.wipe()
            await asyncio.gather(asyncio.to_thread(broker.start), step(3))
            assert broker.cluster_id != second_cluster
            await eventually(reached_everyone(8 * PER_STEP), within=240)
            assert await _total(payments, account) == Decimal("80.00") * PER_STEP
    finally:
        await asyncio.to_thread(broker.stop)


def _bills(account: str, bills: list[str]) -> list[Any]:
    return [
        new_envelope(
            "account.upserted",
            source=SOURCE,
            subject=account,
            data=AccountUpserted(account_number=account, name="Wiped Twice", service_address="3 Empty Disk Road"),
        ),
        *[
            new_envelope(
                "bill.issued",
                source=SOURCE,
                subject=account,
                data=BillIssued(
                    account_number=account,
                    invoice_number=bill,
                    billing_period="2025-04",
                    amount=Money(amount=Decimal("10.00")),
                    issued_on=date(2025, 4, 1),
                    due_date=date(2025, 4, 15),
                ),
            )
            for bill in bills
        ],
    ]


async def _known(payments: Any, bills: list[str]) -> bool:
    async with payments.sessions() as session:
        statement = select(func.count()).where(receivables.c.item_reference.in_(bills))
        return int((await session.execute(statement)).scalar_one()) == len(bills)


async def _total(payments: Any, account: str) -> Decimal:
    async with payments.sessions() as session:
        statement = select(func.sum(posted_payments.c.amount)).where(posted_payments.c.account_number == account)
        return Decimal((await session.execute(statement)).scalar_one())
