"""The counter's path (`services/payments/counter.py`) on the real database and broker: what it re-implements on the
driver connection is what the session's path did."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from services.payments import commands
from services.payments.storage import accounts, audit_log, payments, plumbing, receivables
from tests.conftest import Infra
from tests.support.payments import Api, bill_payment, payments_api, seeded

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
async def api(infra: Infra) -> AsyncIterator[Api]:
    async for running_api in payments_api(infra):
        yield running_api


def data(value: bytes) -> dict[str, Any]:
    return dict(json.loads(value)["data"])


async def test_the_events_of_a_counter_payment_are_those_its_committed_row_gives(api: Api) -> None:
    """INVARIANT: the counter builds its events before the one statement that writes the row and stages them; they
    say what the committed row says, to the cent (amounts typed without cents, a cash payment's change)."""
    account, _ = await seeded(api)
    response = await api.pay(bill_payment(account, "150", method="Cash", cash_received="200"))
    assert response.status_code == 201, response.text
    payment_id = response.json()["payment_id"]
    async with api.service.sessions() as session:
        payment = (await session.execute(select(payments).where(payments.c.payment_id == payment_id))).one()
        item = (
            await session.execute(
                select(receivables, accounts.c.name, accounts.c.service_address, accounts.c.phone, accounts.c.email)
                .join(accounts, accounts.c.account_number == receivables.c.account_number)
                .where(
                    receivables.c.payment_type == payment.payment_type,
                    receivables.c.item_reference == payment.item_reference,
                )
            )
        ).one()
        staged = (
            await session.execute(
                select(plumbing.outbox.c.value).where(plumbing.outbox.c.key == account).order_by(plumbing.outbox.c.id)
            )
        ).scalars()
        by_type = {json.loads(value)["type"]: value for value in staged}
        audited = (await session.execute(select(audit_log).where(audit_log.c.subject == payment_id))).one()

    expected = {e.envelope.type: data(e.envelope.to_bytes()) for e in commands.posting_events(payment, item, item)}
    assert set(expected) == {"payment.posted", "payment.overpaid"}
    for event_type, payload in expected.items():
        assert data(by_type[event_type]) == payload, event_type
    usage = data(by_type["usage.tracked"])
    assert usage["properties"] == {"payment_type": "bill", "method": "Cash", "channel": "Walk-in"}
    assert (audited.actor, audited.action, audited.before) == ("Jane Smith", "payment.posted", None)
    assert audited.after == {"amount": "150.00", "item": f"INV-{account}-1", "receipt_number": payment.receipt_number}
