"""Billing's events applied a delivery batch at a time by payments and credit_notes leave exactly what one at a
time leaves, in a fixed number of statements, on the real database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import insert, select

from services.credit_notes.app import create_service as create_credit_notes
from services.credit_notes.settings import CreditNotesSettings
from services.credit_notes.storage import open_items
from services.payments.storage import accounts, receivables
from shared.contracts import CONTENT_TYPE, Envelope, Topic, new_envelope
from shared.contracts.events import (
    AccountUpserted,
    BillIssued,
    Installment,
    InstallmentPlanCreated,
    Money,
    ServiceChargeIssued,
)
from shared.messaging import Delivery, EventConsumer
from tests.conftest import Infra
from tests.integration.test_payments_command_batches import counted_statements
from tests.support.payments import Api, payments_api

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
async def api(infra: Infra) -> AsyncIterator[Api]:
    async for running_api in payments_api(infra):
        yield running_api


def usd(amount: str) -> Money:
    return Money(amount=Decimal(amount), currency="USD")


def account(number: str, name: str, balance: str | None = None) -> Envelope:
    data = AccountUpserted(
        account_number=number,
        name=name,
        service_address="1 Main St",
        currency="USD",
        current_balance=usd(balance) if balance is not None else None,
    )
    return new_envelope("account.upserted", source="billing", subject=number, data=data)


def bill(number: str, invoice: str, amount: str, due: date, period: str = "2026-11") -> Envelope:
    data = BillIssued(
        invoice_number=invoice,
        account_number=number,
        billing_period=period,
        issued_on=date(2026, 11, 1),
        due_date=due,
        amount=usd(amount),
    )
    return new_envelope("bill.issued", source="billing", subject=number, data=data)


def history(prefix: str) -> list[Envelope]:
    """One account's month: described, billed, re-described without a balance, the bill re-issued with another
    amount and due date, a service charge, an installment plan, and a second account."""
    first, second = f"{prefix}-1", f"{prefix}-2"
    return [
        account(first, "Ada Lovelace", "120.00"),
        bill(first, f"INV-{prefix}-1", "80.00", date(2026, 12, 1)),
        account(first, "Ada King"),
        bill(first, f"INV-{prefix}-1", "95.00", date(2026, 12, 15), period="2026-11b"),
        new_envelope(
            "service_charge.issued",
            source="billing",
            subject=first,
            data=ServiceChargeIssued(
                service_charge_id=f"SC-{prefix}",
                account_number=first,
                description="Meter test",
                service_date=date(2026, 11, 3),
                due_date=date(2026, 12, 3),
                amount=usd("25.00"),
            ),
        ),
        new_envelope(
            "installment_plan.created",
            source="billing",
            subject=first,
            data=InstallmentPlanCreated(
                plan_id=f"PP-{prefix}",
                account_number=first,
                created_on=date(2026, 11, 4),
                installments=[
                    Installment(number=1, due_date=date(2026, 12, 4), amount=usd("10.00")),
                    Installment(number=2, due_date=date(2027, 1, 4), amount=usd("10.00")),
                ],
            ),
        ),
        account(second, "Grace Hopper", "0.00"),
        account(second, "Grace Hopper", "40.00"),
        bill(second, f"INV-{prefix}-2", "40.00", date(2026, 12, 2)),
    ]


def deliveries(envelopes: list[Envelope]) -> list[Delivery]:
    return [Delivery(e.to_bytes(), {"content-type": CONTENT_TYPE}, e.subject.encode()) for e in envelopes]


def billing_consumer(api: Api) -> EventConsumer:
    return next(c for c in api.service.event_consumers if c.topic == Topic.BILLING_RECEIVABLES)


async def state(api: Api, prefix: str) -> dict[str, list[dict[str, Any]]]:
    """The rows the events left, with the prefix taken out so two runs compare."""

    def plain(row: Any) -> dict[str, Any]:
        return {k: v.replace(prefix, "P") if isinstance(v, str) else v for k, v in dict(row).items()}

    async with api.service.sessions() as session:
        found_accounts = await session.execute(
            select(accounts).where(accounts.c.account_number.startswith(prefix)).order_by(accounts.c.account_number)
        )
        found_items = await session.execute(
            select(receivables)
            .where(receivables.c.account_number.startswith(prefix))
            .order_by(receivables.c.payment_type, receivables.c.item_reference)
        )
        return {
            "accounts": [
                {k: v for k, v in plain(row).items() if k not in ("updated_at", "search_text")}
                for row in found_accounts.mappings()
            ],
            "items": [plain(row) for row in found_items.mappings()],
        }


async def test_a_batch_leaves_what_one_by_one_leaves_in_a_fixed_number_of_statements(api: Api) -> None:
    together, alone = f"BB{uuid.uuid4().hex[:6]}", f"BA{uuid.uuid4().hex[:6]}"
    consumer = billing_consumer(api)

    with counted_statements(api) as statements:
        outcomes = await consumer.deliver(deliveries(history(together)))
    assert set(outcomes) == {"applied"}
    # The inbox claim, one upsert of the accounts and one of the items (not counted: transaction control, and the
    # outbox relay polling on its own connection meanwhile).
    applying = [s for _, s in statements if not s.startswith(("BEGIN", "COMMIT")) and "outbox" not in s]
    assert len(applying) == 3, applying

    for envelope in history(alone):
        assert await consumer.deliver(deliveries([envelope])) == ["applied"]

    batched, one_by_one = await state(api, together), await state(api, alone)
    assert batched == one_by_one
    ada = batched["accounts"][0]
    assert (ada["name"], ada["reported_balance"]) == ("Ada King", Decimal("120.00"))
    reissued = next(i for i in batched["items"] if i["item_reference"] == "INV-P-1")
    # The re-issue moved the due date and description, never the amount first billed or what is outstanding.
    assert (reissued["due_date"], reissued["period_or_date"], reissued["amount"], reissued["outstanding"]) == (
        date(2026, 12, 15),
        "2026-11b",
        Decimal("80.00"),
        Decimal("80.00"),
    )
    assert len(batched["items"]) == 5


async def test_a_description_without_balance_keeps_billings_figure_and_what_was_collected_since(api: Api) -> None:
    prefix = f"BK{uuid.uuid4().hex[:6]}"
    number = f"{prefix}-1"
    async with api.service.sessions() as session, session.begin():
        await session.execute(
            insert(accounts).values(
                account_number=number,
                name="Old",
                service_address="x",
                currency="USD",
                reported_balance=Decimal("90.00"),
                collected_since_report=Decimal("5.00"),
            )
        )
    consumer = billing_consumer(api)
    await consumer.deliver(
        deliveries([account(number, "Renamed"), bill(number, f"INV-{prefix}", "9.00", date.today())])
    )
    kept = (await state(api, prefix))["accounts"][0]
    assert (kept["name"], kept["reported_balance"], kept["collected_since_report"]) == (
        "Renamed",
        Decimal("90.00"),
        Decimal("5.00"),
    )

    await consumer.deliver(deliveries([account(number, "Renamed", "70.00"), account(number, "Again")]))
    reset = (await state(api, prefix))["accounts"][0]
    assert (reset["name"], reset["reported_balance"], reset["collected_since_report"]) == (
        "Again",
        Decimal("70.00"),
        Decimal("0.00"),
    )


async def test_a_bad_event_in_a_batch_is_dead_lettered_alone(api: Api) -> None:
    prefix = f"BD{uuid.uuid4().hex[:6]}"
    good = account(f"{prefix}-1", "Good")
    bad = bill(f"{prefix}-1", f"INV-{prefix}", "1.00", date(2026, 12, 9))
    corrupted = bad.to_bytes().replace(b'"due_date":"2026-12-09"', b'"due_date":"not a date"')
    assert corrupted != bad.to_bytes()
    records = deliveries([good])
    records.append(Delivery(corrupted, {"content-type": CONTENT_TYPE}, bad.subject.encode()))
    outcomes = await billing_consumer(api).deliver(records)
    assert outcomes == ["applied", "dead_lettered"]
    assert [a["name"] for a in (await state(api, prefix))["accounts"]] == ["Good"]


async def test_credit_notes_applies_a_batch_of_items_as_one_by_one_would(infra: Infra) -> None:
    """Credit notes keeps the items a credit note can pay; with no credit to pay them, a batch is one statement."""
    service = create_credit_notes(
        CreditNotesSettings(
            database_url=infra.database_url, kafka_bootstrap_servers=infra.bootstrap_servers, development=True
        )
    )
    consumer = next(c for c in service.event_consumers if c.topic == Topic.BILLING_RECEIVABLES)
    together, alone = f"CB{uuid.uuid4().hex[:6]}", f"CA{uuid.uuid4().hex[:6]}"

    async def items(prefix: str) -> list[dict[str, Any]]:
        async with service.sessions() as session:
            found = await session.execute(
                select(open_items)
                .where(open_items.c.account_number.startswith(prefix))
                .order_by(open_items.c.payment_type, open_items.c.item_reference)
            )
            return [
                {k: v.replace(prefix, "P") if isinstance(v, str) else v for k, v in row.items()}
                for row in found.mappings()
            ]

    try:
        outcomes = await consumer.deliver(deliveries(history(together)))
        assert outcomes.count("applied") == 5 and outcomes.count("ignored") == 4  # accounts are not its business
        for envelope in history(alone):
            await consumer.deliver(deliveries([envelope]))
        batched = await items(together)
        assert batched == await items(alone)
        assert next(i for i in batched if i["item_reference"] == "INV-P-1")["amount"] == Decimal("95.00")
        assert len(batched) == 5
    finally:
        await service.engine.dispose()
