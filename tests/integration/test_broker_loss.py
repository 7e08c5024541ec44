"""Losing the broker must not lose a payment event.

Two ways to lose it: a crash with the data kept (SIGKILL, then Apache Kafka starts again on its data: what it
acknowledged is still there, the cluster id is the same, nothing is replayed) and a broker whose data is gone (a
wiped Kafka, or any restart of Tansu, which keeps memory only: a new cluster id, and every relay replays what
its outbox retained; the consumers' inboxes make the replay harmless).
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from datetime import date
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import func, select

from paydesk.sample_data import SOURCE
from services.kpi.app import create_service as create_kpi
from services.kpi.settings import KpiSettings
from services.kpi.storage import daily_collections
from services.payments.app import create_service as create_payments
from services.payments.settings import PaymentsSettings
from services.receipts.app import create_service as create_receipts
from services.receipts.settings import ReceiptsSettings
from services.receipts.storage import receipts
from shared.auth import Role, mint_token
from shared.contracts import Topic, new_envelope
from shared.contracts.events import AccountUpserted, BillIssued, Money
from shared.messaging import provision_topics
from shared.outbox import REPLAYED
from shared.service import Service
from tests.conftest import PARTITIONS, Infra
from tests.support.brokers import new_broker
from tests.support.helpers import (
    equals,
    eventually,
    publish,
    read_topic,
    running,
    settled,
    unique_account,
    unique_day,
)

pytestmark = pytest.mark.kafka
SECRET = "broker-loss-test-secret-long-enough-for-hs256"


def _replayed() -> float:
    return float(sum(REPLAYED.labels(name)._value.get() for name in ("payments", "kpi", "receipts")))


@pytest.mark.parametrize("loss", ["crash", "wiped"])
async def test_payments_recorded_while_the_broker_is_down_reach_every_consumer_once(infra: Infra, loss: str) -> None:
    """INVARIANT: a killed broker loses no event. Crash, data kept: nothing replayed, nothing lost. Data wiped
    (or Tansu): the outbox replays and the inboxes dedupe."""
    broker = new_broker(infra.workdir, f"loss-{loss}")
    if loss == "crash" and not broker.durable:
        pytest.skip("Tansu keeps memory only: every restart is a wiped broker")
    bootstrap = await asyncio.to_thread(broker.start)
    first_cluster = broker.cluster_id
    await provision_topics(bootstrap, partitions=PARTITIONS)
    common = {
        "database_url": infra.database_url,
        "kafka_bootstrap_servers": bootstrap,
        "outbox_poll_seconds": 0.05,
        "development": True,
    }
    account, day = unique_account(), unique_day()
    bills = [f"INV-{account}-{n}" for n in range(4)]
    token = mint_token(SECRET, user="Jane Smith", roles=[Role.CUSTOMER_EXECUTIVE])
    payments = create_payments(PaymentsSettings(**common, jwt_secret=SECRET))  # type: ignore[arg-type]
    kpi = create_kpi(KpiSettings(**common))  # type: ignore[arg-type]
    receipts_service = create_receipts(ReceiptsSettings(**common))  # type: ignore[arg-type]

    async def collected() -> tuple[int, Decimal]:
        async with kpi.sessions() as session:
            row = (
                await session.execute(
                    select(
                        func.coalesce(func.sum(daily_collections.c.payments), 0),
                        func.coalesce(func.sum(daily_collections.c.collected), 0),
                    ).where(daily_collections.c.day == day)
                )
            ).one()
        return int(row[0]), Decimal(row[1])

    async def receipt_count() -> int:
        async with receipts_service.sessions() as session:
            return int(
                (await session.execute(select(func.count()).where(receipts.c.account_number == account))).scalar_one()
            )

    async def pay(client: httpx.AsyncClient, bill: str) -> None:
        response = await client.post(
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

    try:
        async with AsyncExitStack() as stack:
            for service in (kpi, receipts_service, payments):
                await stack.enter_async_context(running(service))
            await publish(
                bootstrap,
                Topic.BILLING_RECEIVABLES,
                [
                    new_envelope(
                        "account.upserted",
                        source=SOURCE,
                        subject=account,
                        data=AccountUpserted(
                            account_number=account, name="Broker Loss", service_address="1 Memory Lane"
                        ),
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
                ],
            )
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=payments.http), base_url="http://payments")
            async with client:
                await eventually(lambda: _bills_known(payments, bills), within=180)
                await pay(client, bills[0])
                await eventually(lambda: equals(collected(), (1, Decimal("10.00"))))

                broker.kill()  # abrupt, as a crash: no shutdown at all
                for bill in bills[1:]:
                    await pay(client, bill)  # posted in Postgres; the events wait in the outbox
                assert await collected() == (1, Decimal("10.00"))

                replayed_before = _replayed()
                if loss == "wiped":
                    broker.wipe()  # Tansu forgets by itself; Kafka's data directory goes
                # On the same address. Blocking this loop on purpose until the topics exist: Tansu creates a
                # missing topic (one partition) for whoever publishes first, and the relays would be first.
                broker.start()
                if loss == "crash":
                    assert broker.cluster_id == first_cluster, "the same data, the same cluster"
                else:
                    assert broker.cluster_id != first_cluster, "an empty broker is a new cluster"
                    await provision_topics(bootstrap, partitions=PARTITIONS)
                await eventually(lambda: equals(collected(), (4, Decimal("40.00"))), within=180)
                await eventually(lambda: equals(receipt_count(), 4), within=180)
                await settled(payments, kpi, receipts_service)  # every replayed event consumed: none counted twice
                assert await collected() == (4, Decimal("40.00"))
                assert await receipt_count() == 4
                if loss == "crash":
                    assert _replayed() == replayed_before, "a broker that kept its data needs no replay"
                else:
                    assert _replayed() > replayed_before, "the relays replayed what the empty broker lost"
    finally:
        await asyncio.to_thread(broker.stop)


async def test_a_message_the_broker_acknowledged_survives_a_kill_and_restart(infra: Infra) -> None:
    """INVARIANT (Apache Kafka): acks=all means on disk; SIGKILL and a start on the same data keep it."""
    broker = new_broker(infra.workdir, "durable")
    if not broker.durable:
        pytest.skip("Tansu keeps memory only")
    bootstrap = await asyncio.to_thread(broker.start)
    try:
        await provision_topics(bootstrap, partitions=PARTITIONS)
        account = unique_account()
        envelope = new_envelope(
            "account.upserted",
            source="another-system",
            subject=account,
            data=AccountUpserted(account_number=account, name="Durable Dora", service_address="2 Disk Road"),
        )
        await publish(bootstrap, Topic.BILLING_RECEIVABLES, [envelope])  # returns once acknowledged (acks=all)

        broker.kill()
        await asyncio.to_thread(broker.start)

        values = [record.value for record in await read_topic(bootstrap, Topic.BILLING_RECEIVABLES)]
        assert envelope.to_bytes() in values
    finally:
        await asyncio.to_thread(broker.stop)


async def _bills_known(payments: Service, bills: list[str]) -> bool:
    from services.payments.storage import receivables

    async with payments.sessions() as session:
        count = (
            await session.execute(select(func.count()).where(receivables.c.item_reference.in_(bills)))
        ).scalar_one()
    return int(count) == len(bills)
