"""Done, over HTTP on the real system (payments and reconciliation on a real broker and database): a day's
camt.053 and a Stripe payout settling 50 online payments matched three ways, their settlements Settled; a till
closed with a variance; the exception queue worked to zero."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from services.payments.app import create_service as create_payments
from services.payments.settings import PaymentsSettings
from services.reconciliation.app import create_service as create_reconciliation
from services.reconciliation.settings import ReconciliationSettings
from services.reconciliation.storage import expected_items
from services.reconciliation.storage import payments as seen_payments
from shared.auth import Role, mint_token
from shared.contracts import Topic, new_envelope
from shared.contracts.events import GatewayPaymentStatusChanged, Money, PaymentType
from shared.service import Service
from tests.conftest import Infra
from tests.support.helpers import eventually, own_broker_and_database, publish, read_topic, running
from tests.support.payments import billing_events
from tests.support.reconciliation import Charge, Entry, camt053_day, payout_listed

pytestmark = pytest.mark.kafka
D = Decimal
SECRET = "reconciliation-walk-secret-long-enough-for-hs256"
DAY = date(2025, 4, 1)
PAYOUT = "po_walk_0001"


def headers(user: str, role: Role, *, key: bool = False) -> dict[str, str]:
    auth = {"Authorization": f"Bearer {mint_token(SECRET, user=user, roles=[role])}"}
    return auth | ({"Idempotency-Key": f"walk-{uuid.uuid4().hex}"} if key else {})


TELLER = headers("Tina Teller", Role.CUSTOMER_EXECUTIVE)
MANAGER = headers("Maria Manager", Role.BILLING_MANAGER)


@pytest.fixture(scope="module")
async def system(infra: Infra) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient, Service, str]]:
    async with own_broker_and_database(
        infra.database_url, infra.workdir, "reconwalk", ("payments", "reconciliation")
    ) as (url, kafka):
        common: dict[str, Any] = {"database_url": url, "kafka_bootstrap_servers": kafka, "jwt_secret": SECRET}
        payments = create_payments(PaymentsSettings(**common, outbox_poll_seconds=0.05))
        reconciliation = create_reconciliation(ReconciliationSettings(**common, outbox_poll_seconds=0.05))
        async with running(reconciliation), running(payments):
            pay = httpx.AsyncClient(transport=httpx.ASGITransport(app=payments.http), base_url="http://p", timeout=60)
            rec = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=reconciliation.http), base_url="http://r", timeout=60
            )
            async with pay, rec:
                yield pay, rec, reconciliation, kafka


async def test_a_day_is_reconciled_three_ways_a_till_closed_and_the_queue_worked_to_zero(
    system: tuple[httpx.AsyncClient, httpx.AsyncClient, Service, str],
) -> None:
    pay, rec, reconciliation, kafka = system
    account = f"W-{uuid.uuid4().hex[:8].upper()}"
    await publish(kafka, Topic.BILLING_RECEIVABLES, billing_events(account, "Walter Walk"))

    async def consumer_ready() -> bool:
        """The account and all seven of its items: billing's events may reach payments in more than one batch."""
        response = await pay.get(f"/consumers/{account}", headers=TELLER)
        if response.status_code != 200:
            return False
        body = response.json()
        return len(body["unpaid_bills"]) + len(body["unpaid_services"]) + len(body["unpaid_installments"]) == 7

    await eventually(consumer_ready)

    # The counter: three cash payments taken by Tina Teller, with change given on one.
    cash = [("bill", f"INV-{account}-1", "145.50", "200.00"), ("service", f"SC-{account}-1", "75.00", "75.00")]
    cash.append(("service", f"SC-{account}-2", "25.00", "25.00"))
    counter_ids: list[str] = []
    for payment_type, item, amount, received in cash:
        body = {
            "account_number": account,
            "payment_type": payment_type,
            "item_reference": item,
            "method": "Cash",
            "amount": amount,
            "cash_received": received,
            "payment_date": DAY.isoformat(),
        }
        response = await pay.post("/payments", json=body, headers=TELLER | {"Idempotency-Key": uuid.uuid4().hex})
        assert response.status_code == 201, response.text
        counter_ids.append(response.json()["payment_id"])

    # Online: 50 Stripe payments, posted by payments from the gateway's events.
    online = [(f"pi_walk_{n:02d}", D("1.00") + D(n).scaleb(-2)) for n in range(50)]
    gateway = [
        new_envelope(
            "gateway.payment_status_changed",
            source="gateway_bridge",
            subject=account,
            data=GatewayPaymentStatusChanged(
                gateway_event_id=f"evt_walk_{n}",
                payment_intent_id=intent,
                account_number=account,
                payment_type=PaymentType.BILL,
                item_reference=f"INV-{account}-2",
                amount=Money(amount=amount),
                gateway_status="succeeded",
                webhook_status="In Settlement",
                settlement_status="In Progress",
                occurred_at=datetime(2025, 4, 1, 10, n, tzinfo=UTC),
            ),
        )
        for n, (intent, amount) in enumerate(online)
    ]
    await publish(kafka, Topic.GATEWAY_EVENTS, gateway)

    async def linked() -> bool:
        async with reconciliation.sessions() as session:
            count = await session.execute(select(func.count()).where(seen_payments.c.payment_intent_id.is_not(None)))
            return int(count.scalar_one()) == 50

    await eventually(linked, within=120)
    charges = [Charge(intent, account, amount, D("0.03")) for intent, amount in online]
    await publish(kafka, Topic.GATEWAY_EVENTS, [payout_listed(PAYOUT, date(2025, 4, 2), charges)])
    payout_net = sum((c.amount - c.fee for c in charges), D(0))

    async def payout_known() -> bool:
        async with reconciliation.sessions() as session:
            count = await session.execute(select(func.count()).where(expected_items.c.group_key == PAYOUT))
            return int(count.scalar_one()) == 50

    await eventually(payout_known, within=60)

    # The bank's statement of the next day: the payout, the counter's deposit, a bank charge, a stranger.
    statement = camt053_day(
        "WALK-0402",
        "US00WALK0001",
        date(2025, 4, 2),
        D("5000.00"),
        [
            Entry(payout_net, f"STRIPE PAYOUT {PAYOUT}", "BK-W-1"),
            Entry(D("245.50"), "DEPOSIT 0401", "BK-W-2", "cash deposit", ("PMNT", "CNTR", "CDPT")),
            Entry(D("-15.00"), "", "BK-W-3", "ACCOUNT MAINTENANCE FEE", ("ACMT", "MDOP", "CHRG")),
            Entry(D("33.33"), "UNKNOWN-SENDER", "BK-W-4", "who is this"),
        ],
    )
    imported = await rec.post("/statements", files={"file": ("day.xml", statement)}, headers=MANAGER)
    assert imported.status_code == 201, imported.text
    [statement_id] = imported.json()["statement_ids"]
    again = await rec.post("/statements", files={"file": ("day.xml", statement)}, headers=MANAGER)
    assert again.status_code == 200 and again.json()["already_imported"] is True

    lines = {
        x["bank_reference"]: x for x in (await rec.get(f"/statements/{statement_id}", headers=MANAGER)).json()["lines"]
    }
    assert lines["BK-W-1"]["rule"] == "group_by_reference" and len(lines["BK-W-1"]["item_ids"]) == 50
    assert lines["BK-W-1"]["differences"]["gateway_fees"] == "1.50"
    assert lines["BK-W-2"]["rule"] == "group_by_amount_date" and len(lines["BK-W-2"]["item_ids"]) == 3
    assert lines["BK-W-3"]["rule"] == "bank_fee"
    assert lines["BK-W-4"]["status"] == "excepted"

    # Three ways: each of the 50 payments is Settled, announced once on reconciliation's topic.
    async def settled_events() -> list[dict[str, object]]:
        records = await read_topic(kafka, Topic.RECONCILIATION_EVENTS)
        found = [json.loads(r.value) for r in records]
        found = [e["data"] for e in found if e["type"] == "payment.settlement_reconciled"]
        online_settled = [e for e in found if e.get("payout_id") == PAYOUT]
        return online_settled if len(online_settled) == 50 else []

    events = await eventually(settled_events, within=60)
    assert {e["payment_intent_id"] for e in events} == {intent for intent, _ in online}
    for event in events[:5] + events[-5:]:
        view = (await rec.get(f"/settlements/{event['payment_id']}", headers=TELLER)).json()
        assert view["settlement_status"] == "Settled" and view["channel"] == "Online"

    # ... and payments, consuming those events, turns each of them Settled: the 50 online payments (In Progress
    # before) and the 3 counter payments the deposit line carried.
    async def settlement_in_payments() -> dict[str, str]:
        found: dict[str, str] = {}
        for payment_id in [str(e["payment_id"]) for e in events] + counter_ids:
            detail = (await pay.get(f"/payments/{payment_id}", headers=MANAGER)).json()
            found[payment_id] = detail["payment_information"]["settlement_status"]
        return found if set(found.values()) == {"Settled"} else {}

    assert len(await eventually(settlement_in_payments, within=120)) == 53

    # The till: 245.50 taken (200.00 received less 54.50 change on one), 235.50 counted.
    closed = await rec.post(
        f"/tills/Tina Teller/{DAY.isoformat()}/close",
        json={"counted_cash": "235.50"},
        headers=headers("Tina Teller", Role.CUSTOMER_EXECUTIVE, key=True),
    )
    assert closed.status_code == 201, closed.text
    till = closed.json()
    assert (till["expected_cash"]["amount"], till["variance"]["amount"]) == ("245.50", "-10.00")
    assert till["exception_id"]
    twice = await rec.post(
        f"/tills/Tina Teller/{DAY.isoformat()}/close",
        json={"counted_cash": "245.50"},
        headers=headers("Tina Teller", Role.CUSTOMER_EXECUTIVE, key=True),
    )
    assert twice.status_code == 409

    # The queue, worked to zero: the stranger's credit ignored with a reason, the shortage to an adjustment.
    queue = (await rec.get("/exceptions", headers=MANAGER)).json()["items"]
    assert {e["kind"] for e in queue} == {"unmatched_bank_line", "till_variance"}
    for exception in queue:
        action = (
            {"action": "adjustment_requested", "reason": "teller shortage, written off"}
            if exception["kind"] == "till_variance"
            else {"action": "ignore", "reason": "returned to sender by the bank"}
        )
        done = await rec.post(
            f"/exceptions/{exception['exception_id']}/resolve",
            json=action,
            headers=headers("Maria Manager", Role.BILLING_MANAGER, key=True),
        )
        assert done.status_code == 200, done.text
    assert (await rec.get("/exceptions", headers=MANAGER)).json()["items"] == []
