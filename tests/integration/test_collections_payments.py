"""Collections and payments together on the real broker and database: bills an arrangement covers are held in
payments (not offered, not payable at the counter, by command or in a preview) while its installments are; what
the arrangement received comes off them, oldest first, when it ends and they reopen."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from shared.contracts import CONTENT_TYPE, Envelope, Topic, new_envelope
from shared.contracts.events import PaymentRecordRequested, PaymentType
from shared.messaging import Delivery
from tests.conftest import Infra
from tests.support.collections import Desk, collections_desk
from tests.support.helpers import eventually, publish, read_topic, unique_account
from tests.support.payments import Api, payments_api

pytestmark = pytest.mark.kafka
D = Decimal


@pytest.fixture(scope="module")
async def desk(infra: Infra) -> AsyncIterator[Desk]:
    async for created in collections_desk(infra):
        yield created


@pytest.fixture(scope="module")
async def api(infra: Infra) -> AsyncIterator[Api]:
    async for created in payments_api(infra):
        yield created


def _offered(consumer: dict[str, Any]) -> dict[str, str]:
    """What the counter offers: reference -> outstanding, bills and installments alike."""
    items = consumer["unpaid_bills"] + consumer["unpaid_services"] + consumer["unpaid_installments"]
    return {i["item_reference"]: i["outstanding"]["amount"] for i in items}


async def _offered_is(api: Api, account: str, expected: dict[str, str]) -> bool:
    return _offered(await api.consumer(account)) == expected


def _payment(account: str, reference: str, amount: str, day: date, payment_type: str = "bill") -> dict[str, Any]:
    return {
        "account_number": account,
        "payment_type": payment_type,
        "item_reference": reference,
        "method": "Cash",
        "amount": amount,
        "payment_date": day.isoformat(),
        "cash_received": amount,
    }


async def _rejection_of(api: Api, command: Envelope) -> dict[str, Any] | None:
    for record in await read_topic(api.bootstrap, Topic.PAYMENTS_EVENTS):
        event = Envelope.model_validate_json(record.value)
        if event.type == "payment.record_rejected" and event.data["command_id"] == str(command.id):
            return dict(event.data)
    return None


class TestHeldBills:
    async def test_covered_bills_are_held_while_the_arrangement_is_in_force_and_reopen_at_what_is_left(
        self, desk: Desk, api: Api
    ) -> None:
        y = random.randrange(2300, 2900)
        account = unique_account()
        older, newer = f"INV-{account}-1", f"INV-{account}-2"
        desk.set_today(date(y, 3, 1))
        await desk.delinquent(account, "Hel D", [(older, "120.00", date(y, 1, 5)), (newer, "180.00", date(y, 2, 5))])
        await eventually(lambda: _offered_is(api, account, {older: "120.00", newer: "180.00"}))

        response = await desk.post(
            "/arrangements",
            {"account_number": account, "installments": 3, "frequency": "monthly", "first_due_date": f"{y}-03-10"},
        )
        assert response.status_code == 201, response.text
        plan = response.json()["arrangement_id"]
        installments = {f"{plan}/{n}": "100.00" for n in (1, 2, 3)}
        # The counter, online and command paths now see the installments instead of the bills.
        await eventually(lambda: _offered_is(api, account, installments))
        own = await api.get(f"/accounts/{account}")
        assert {i["item_reference"] for i in own.json()["open_items"]} == set(installments)

        refused = await api.pay(_payment(account, older, "120.00", date(y, 3, 2)))
        assert refused.status_code == 422, refused.text
        assert (refused.json()["code"], refused.json()["field"]) == ("item_held_by_arrangement", "item_reference")
        assert plan in refused.json()["detail"]
        preview = await api.client.post(
            "/payments/preview", json=_payment(account, newer, "10.00", date(y, 3, 2)), headers=api.auth()
        )
        assert preview.status_code == 200, preview.text
        assert [p["code"] for p in preview.json()["problems"]] == ["item_held_by_arrangement"]
        command = new_envelope(
            "payment.record_requested",
            source="lockbox",
            subject=account,
            data=PaymentRecordRequested(
                account_number=account,
                payment_type=PaymentType.BILL,
                item_reference=newer,
                method="Cheque",
                amount=D("180.00"),
                payment_date=date(y, 3, 2),
            ),
        )
        # In one lockbox batch with a payment for a bill nobody holds: only the held one is refused.
        neighbour = unique_account()
        free_bill = f"INV-{neighbour}-1"
        await desk.delinquent(neighbour, "Hel N", [(free_bill, "45.00", date(y, 2, 1))])
        await eventually(lambda: _offered_is(api, neighbour, {free_bill: "45.00"}))
        free = new_envelope(
            "payment.record_requested",
            source="lockbox",
            subject=neighbour,
            data=PaymentRecordRequested(
                account_number=neighbour,
                payment_type=PaymentType.BILL,
                item_reference=free_bill,
                method="Cheque",
                amount=D("45.00"),
                payment_date=date(y, 3, 2),
            ),
        )
        commands = next(c for c in api.service.event_consumers if c.name == "commands")
        outcomes = await commands.deliver(
            [
                Delivery(e.to_bytes(), {"content-type": CONTENT_TYPE.encode()}, e.subject.encode())
                for e in (command, free)
            ]
        )
        assert outcomes == ["dead_lettered", "applied"]
        rejection = await eventually(lambda: _rejection_of(api, command))
        assert "arrangement" in rejection["reason"]
        await eventually(lambda: _offered_is(api, neighbour, {}))
        assert await _rejection_of(api, free) is None
        # And alone, over the broker, the same.
        again = command.model_copy(update={"id": uuid.uuid4()})
        await publish(api.bootstrap, Topic.PAYMENTS_COMMANDS, [again])
        assert "arrangement" in (await eventually(lambda: _rejection_of(api, again)))["reason"]

        # The first installment is paid at the counter; collections matches it and tells payments.
        paid = await api.pay(_payment(account, f"{plan}/1", "100.00", date(y, 3, 9), "installment"))
        assert paid.status_code == 201, paid.text
        await eventually(lambda: _offered_is(api, account, {f"{plan}/2": "100.00", f"{plan}/3": "100.00"}))
        await eventually(lambda: desk.events(account, "arrangement.payment_applied"))

        # Cancelled: the bills are payable again at what the arrangement left unpaid (100 off the older first),
        # and its unpaid installments are withdrawn.
        cancelled = await desk.post(f"/arrangements/{plan}/cancel", {"reason": "customer asked"})
        assert cancelled.status_code == 200, cancelled.text
        await eventually(lambda: _offered_is(api, account, {older: "20.00", newer: "180.00"}))
        withdrawn = await api.pay(_payment(account, f"{plan}/2", "100.00", date(y, 3, 20), "installment"))
        assert (withdrawn.status_code, withdrawn.json()["field"]) == (422, "item_reference")
        reopened = await api.pay(_payment(account, older, "20.00", date(y, 3, 20)))
        assert reopened.status_code == 201, reopened.text
        assert reopened.json()["amount_analysis"]["due"]["amount"] == "20.00"
        consumer = await api.consumer(account)
        assert D(consumer["current_balance"]["amount"]) == D("180.00")
