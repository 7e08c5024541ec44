"""Collections applies billing and payment events a delivery batch at a time; a batch leaves exactly the rows and
the staged events (same ones, same order per account) that the same events one by one leave, on the real
database, and the common case takes a fixed number of statements whatever the batch's size."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, insert, select

from services.collections.app import CollectionsService, create_service
from services.collections.batches import new_row
from services.collections.settings import CollectionsSettings
from services.collections.storage import accounts, activities, arrangements, installments, items, payments, plumbing
from services.collections.worklist import lock_account
from shared.contracts import CONTENT_TYPE, Envelope, Topic, new_envelope
from shared.contracts.events import (
    AccountUpserted,
    BillIssued,
    Installment,
    InstallmentPlanCreated,
    Money,
    PaymentCancelled,
    PaymentType,
)
from shared.messaging import Delivery, EventConsumer
from tests.conftest import Infra
from tests.support.helpers import counter_payment

# A year no clock of another test reaches: a compliance pass of another collections instance on the same database
# (it refreshes the rows whose next change is due by its today) never touches these accounts.
NOW = datetime(2990, 12, 1, 9, tzinfo=UTC)


@pytest.fixture(scope="module")
async def service(infra: Infra) -> AsyncIterator[CollectionsService]:
    """Not started: no relay takes the staged events out of the outbox before they are compared."""
    created = create_service(
        CollectionsSettings(
            database_url=infra.database_url,
            kafka_bootstrap_servers=infra.bootstrap_servers,
            disconnection_threshold_days=60,
            disconnection_threshold_amount=Decimal("50.00"),
        )
    )
    created.desk.clock.set(NOW)
    yield created
    await created.engine.dispose()


def consumer(service: CollectionsService, topic: str) -> EventConsumer:
    return next(c for c in service.event_consumers if c.topic == topic)


def deliveries(envelopes: list[Envelope]) -> list[Delivery]:
    return [Delivery(e.to_bytes(), {"content-type": CONTENT_TYPE}, e.subject.encode()) for e in envelopes]


def described(account: str, name: str, currency: str = "USD") -> Envelope:
    data = AccountUpserted(account_number=account, name=name, service_address="1 Main St", currency=currency)
    return new_envelope("account.upserted", source="billing", subject=account, data=data)


def bill(account: str, invoice: str, amount: str, due: date) -> Envelope:
    data = BillIssued(
        invoice_number=invoice,
        account_number=account,
        billing_period="2990-09",
        issued_on=date(2990, 8, 1),
        due_date=due,
        amount=Money(amount=Decimal(amount)),
    )
    return new_envelope("bill.issued", source="billing", subject=account, data=data)


def paid(account: str, receipt: str, reference: str, amount: str, due: str, **kwargs: Any) -> Envelope:
    return counter_payment(
        account,
        receipt_number=receipt,
        amount=amount,
        due=due,
        item_reference=reference,
        day=date(2990, 11, 30),
        **kwargs,
    )


def billing_history(p: str) -> list[Envelope]:
    """A: billed past the threshold (eligible), the bill re-issued lower (cleared), a second old bill (eligible
    again); B: billed before it is described, in euros; C: an open promise to pay and F an arrangement (the
    handlers' path); D: billing's own installment plan."""
    return [
        described(f"{p}A", "Ada"),
        bill(f"{p}A", f"INV-{p}A1", "100.00", date(2990, 9, 1)),
        bill(f"{p}A", f"INV-{p}A1", "30.00", date(2990, 9, 1)),
        bill(f"{p}B", f"INV-{p}B1", "20.00", date(2990, 12, 20)),
        bill(f"{p}A", f"INV-{p}A2", "70.00", date(2990, 9, 15)),
        described(f"{p}B", "Bob", currency="EUR"),
        bill(f"{p}C", f"INV-{p}C1", "80.00", date(2990, 8, 1)),
        described(f"{p}C", "Cy"),
        bill(f"{p}F", f"INV-{p}F2", "10.00", date(2990, 12, 20)),
        new_envelope(
            "installment_plan.created",
            source="billing",
            subject=f"{p}D",
            data=InstallmentPlanCreated(
                plan_id=f"PP-{p}D",
                account_number=f"{p}D",
                created_on=date(2990, 8, 1),
                installments=[
                    Installment(number=1, due_date=date(2990, 9, 1), amount=Money(amount=Decimal("60.00"))),
                    Installment(number=2, due_date=date(2991, 1, 1), amount=Money(amount=Decimal("60.00"))),
                ],
            ),
        ),
    ]


def payment_history(p: str) -> list[Envelope]:
    """Several payments for A in one batch (the second old bill paid: cleared; part of the first); a payment for
    an account and a bill never seen (E); C's payment keeps its promise; D pays an installment; F pays its covered
    bill and an installment of its arrangement; a failed online
    payment for B; a cancellation in the middle of the run."""
    return [
        paid(f"{p}A", f"R-{p}1", f"INV-{p}A2", "70.00", "70.00"),
        paid(f"{p}E", f"R-{p}2", f"INV-{p}E1", "15.00", "40.00", consumer_name="Eve"),
        paid(f"{p}A", f"R-{p}3", f"INV-{p}A1", "10.00", "30.00"),
        paid(f"{p}C", f"R-{p}4", f"INV-{p}C1", "25.00", "80.00"),
        paid(f"{p}F", f"R-{p}9", f"INV-{p}F1", "30.00", "100.00"),
        paid(f"{p}F", f"R-{p}90", f"PA-{p}/2", "20.00", "50.00", payment_type=PaymentType.INSTALLMENT),
        paid(f"{p}D", f"R-{p}5", f"PP-{p}D/1", "60.00", "60.00", payment_type=PaymentType.INSTALLMENT),
        new_envelope(
            "payment.cancelled",
            source="payments",
            subject=f"{p}A",
            data=PaymentCancelled(
                payment_id=f"PAY-R-{p}3",
                receipt_number=f"R-{p}3",
                account_number=f"{p}A",
                amount=Money(amount=Decimal("10.00")),
                cancelled_by="Admin",
                reason="keyed twice",
                cancelled_at=NOW,
            ),
        ),
        failed(paid(f"{p}B", f"R-{p}6", f"INV-{p}B1", "20.00", "20.00", method="Card")),
        paid(f"{p}A", f"R-{p}7", f"INV-{p}A1", "5.00", "30.00"),
        paid(f"{p}E", f"R-{p}8", f"INV-{p}E1", "25.00", "25.00"),
    ]


def failed(posted: Envelope) -> Envelope:
    posted.data["status"] = "Failed"
    return posted


async def promise(service: CollectionsService, account: str) -> None:
    async with service.sessions() as session, session.begin():
        await session.execute(
            insert(activities).values(
                activity_id=f"ACT-{account}",
                account_number=account,
                kind="promise_to_pay",
                promise_amount=Decimal("20.00"),
                promise_date=date(2990, 12, 10),
                promise_status="Open",
                executive="Rita Recovery",
                created_at=NOW,
            )
        )


async def arrangement(service: CollectionsService, p: str) -> None:
    """F's active arrangement: two installments of 50.00, covering its bill F1."""
    plan = f"PA-{p}"
    async with service.sessions() as session, session.begin():
        await session.execute(
            insert(arrangements).values(
                arrangement_id=plan,
                seq=uuid.uuid4().int % 2**62,
                account_number=f"{p}F",
                status="Active",
                plan_id=plan,
                total=Decimal("100.00"),
                currency="USD",
                installment_count=2,
                frequency="monthly",
                first_due_date=date(2990, 11, 1),
                grace_days=5,
                covered=[{"payment_type": "bill", "item_reference": f"INV-{p}F1", "amount": "100.00"}],
                executive="Rita Recovery",
                created_by="Rita Recovery",
                created_at=NOW,
            )
        )
        await session.execute(
            insert(installments),
            [
                {
                    "plan_id": plan,
                    "number": 1,
                    "arrangement_id": plan,
                    "amount": Decimal("50.00"),
                    "due_date": date(2990, 11, 1),
                },
                {
                    "plan_id": plan,
                    "number": 2,
                    "arrangement_id": plan,
                    "amount": Decimal("50.00"),
                    "due_date": date(2990, 12, 15),
                },
            ],
        )
        await session.execute(
            insert(items).values(
                payment_type="bill",
                item_reference=f"INV-{p}F1",
                account_number=f"{p}F",
                amount=Decimal("100.00"),
                currency="USD",
                due_date=date(2990, 10, 1),
                arrangement_id=plan,
            )
        )


async def state(service: CollectionsService, p: str) -> dict[str, Any]:
    """The rows and staged events the events left, with the prefix taken out so two runs compare."""

    def plain(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace(p, "P-")
        if isinstance(value, list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    def rows(found: Any, leave: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        return [{k: plain(v) for k, v in row.items() if k not in leave} for row in found.mappings()]

    outbox = plumbing.outbox
    async with service.sessions() as session:
        found: dict[str, Any] = {
            "accounts": rows(
                await session.execute(
                    select(accounts).where(accounts.c.account_number.startswith(p)).order_by(accounts.c.account_number)
                )
            ),
            "items": rows(
                await session.execute(
                    select(items).where(items.c.account_number.startswith(p)).order_by(items.c.item_reference)
                )
            ),
            "payments": rows(
                await session.execute(
                    select(payments).where(payments.c.account_number.startswith(p)).order_by(payments.c.receipt_number)
                )
            ),
            "promises": rows(
                await session.execute(select(activities).where(activities.c.account_number.startswith(p))),
                leave=("activity_id",),
            ),
        }
        staged: dict[str, list[tuple[str, str, Any]]] = {}
        for row in await session.execute(select(outbox).where(outbox.c.key.startswith(p)).order_by(outbox.c.id)):
            envelope = Envelope.model_validate_json(row.value)
            data = {k: plain(v) for k, v in envelope.data.items()}
            staged.setdefault(plain(row.key), []).append((row.topic, envelope.type, data))
        found["staged"] = staged
        return found


@contextmanager
def counted_statements(service: CollectionsService) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    engine = service.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


async def test_a_batch_leaves_the_rows_and_events_one_by_one_leaves(
    service: CollectionsService, caplog: pytest.LogCaptureFixture
) -> None:
    together, alone = f"CB{uuid.uuid4().hex[:6].upper()}-", f"CA{uuid.uuid4().hex[:6].upper()}-"
    billing, paying = consumer(service, Topic.BILLING_RECEIVABLES), consumer(service, Topic.PAYMENTS_EVENTS)
    for prefix in (together, alone):
        await promise(service, f"{prefix}C")
        await arrangement(service, prefix)

    with caplog.at_level(logging.WARNING, logger="shared.messaging"):
        assert set(await billing.deliver(deliveries(billing_history(together)))) == {"applied"}
        assert set(await paying.deliver(deliveries(payment_history(together)))) == {"applied"}
    # Applied by the batch path (with C's and D's events through their handlers in it), not rolled back to one by one.
    assert not [r for r in caplog.records if "rolled back" in r.getMessage()]
    for envelope in billing_history(alone):
        assert await billing.deliver(deliveries([envelope])) == ["applied"]
    for envelope in payment_history(alone):
        assert await paying.deliver(deliveries([envelope])) == ["applied"]

    batched, one_by_one = await state(service, together), await state(service, alone)
    assert batched == one_by_one
    # What the comparison covers is what was meant: A went eligible, clear, eligible, clear (events in that
    # order), B took its currency, C's promise was kept.
    assert [kind for _, kind, _ in batched["staged"]["P-A"]] == [
        "disconnection.eligible",
        "disconnection.cleared",
        "disconnection.eligible",
        "disconnection.cleared",
    ]
    rows = {row["account_number"]: row for row in batched["accounts"]}
    assert (rows["P-A"]["name"], rows["P-A"]["amount_overdue"]) == ("Ada", Decimal("25.00"))
    assert (rows["P-B"]["currency"], rows["P-B"]["amount_owed"]) == ("EUR", Decimal("20.00"))
    # E's first payment made its row (no name yet: a name fills only a row that exists); its second named it.
    assert (rows["P-E"]["name"], rows["P-E"]["amount_owed"]) == ("Test Consumer", Decimal("0.00"))
    assert batched["promises"][0]["promise_status"] == "Kept"
    assert next(i for i in batched["items"] if i["item_reference"] == "INV-P-E1")["paid"] == Decimal("40.00")
    assert [p["receipt_number"] for p in batched["payments"]] == [f"R-P-{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 90)]
    # F's payments went to its arrangement: 30.00 to installment 1, then 20.00 named for installment 2.
    assert [p["allocations"] for p in batched["payments"] if p["account_number"] == "P-F"] == [
        [["PA-P-", 1, "30.00"]],
        [["PA-P-", 2, "20.00"]],
    ]
    assert [kind for _, kind, _ in batched["staged"]["P-F"]] == [
        "disconnection.hold_placed",  # its first refresh, by billing's new bill
        "arrangement.payment_applied",
        "arrangement.payment_applied",
    ]


async def test_a_payment_announced_again_in_a_later_batch_changes_nothing(service: CollectionsService) -> None:
    p = f"CR{uuid.uuid4().hex[:6].upper()}-"
    billing, paying = consumer(service, Topic.BILLING_RECEIVABLES), consumer(service, Topic.PAYMENTS_EVENTS)
    await billing.deliver(
        deliveries([described(f"{p}A", "Ada"), bill(f"{p}A", f"INV-{p}1", "90.00", date(2990, 9, 1))])
    )
    first = paid(f"{p}A", f"R-{p}1", f"INV-{p}1", "30.00", "90.00")
    await paying.deliver(deliveries([first, paid(f"{p}B", f"R-{p}2", f"INV-{p}2", "1.00", "1.00")]))
    before = await state(service, p)
    again = Envelope.model_validate({**first.model_dump(), "id": uuid.uuid4()})  # a new id: the inbox lets it in
    assert await paying.deliver(deliveries([again, paid(f"{p}C", f"R-{p}3", f"INV-{p}3", "1.00", "1.00")])) == [
        "applied",
        "applied",
    ]
    after = await state(service, p)
    assert after["items"][0] == before["items"][0] and after["items"][0]["paid"] == Decimal("30.00")
    assert [a for a in after["accounts"] if a["account_number"] == "P-A"] == [
        a for a in before["accounts"] if a["account_number"] == "P-A"
    ]


@pytest.mark.parametrize("size", [4, 40])
async def test_a_batch_of_payments_takes_a_fixed_number_of_statements(service: CollectionsService, size: int) -> None:
    p = f"CS{uuid.uuid4().hex[:6].upper()}-"
    billing, paying = consumer(service, Topic.BILLING_RECEIVABLES), consumer(service, Topic.PAYMENTS_EVENTS)
    bills = [bill(f"{p}{n}", f"INV-{p}{n}", "75.00", date(2990, 9, 1)) for n in range(size)]
    with counted_statements(service) as billing_statements:
        assert set(await billing.deliver(deliveries([described(f"{p}{n}", "X") for n in range(size)] + bills))) == {
            "applied"
        }
    payments_ = [paid(f"{p}{n}", f"R-{p}{n}", f"INV-{p}{n}", "75.00", "75.00") for n in range(size)]
    with counted_statements(service) as payment_statements:
        assert set(await paying.deliver(deliveries(payments_))) == {"applied"}
    # The inbox claim; the accounts locked, whether any has an arrangement or a promise, their items; the items
    # written; the new accounts made with their rows (billing) or the payments inserted and the rows written
    # (payments); the events staged.
    working = [s for s in billing_statements if not s.startswith(("BEGIN", "COMMIT"))]
    assert len(working) == 7, working
    working = [s for s in payment_statements if not s.startswith(("BEGIN", "COMMIT"))]
    assert len(working) == 8, working
    found = await state(service, p)
    assert len(found["staged"]) == size  # each went eligible, then cleared
    assert all(
        [kind for _, kind, _ in events] == ["disconnection.eligible", "disconnection.cleared"]
        for events in found["staged"].values()
    )


async def test_an_account_a_batch_creates_starts_as_one_created_alone_starts(service: CollectionsService) -> None:
    """The batch writes a new account's row once, from `new_row`; it must start from what `lock_account` makes."""
    account = f"CS{uuid.uuid4().hex[:6].upper()}-NEW"
    async with service.sessions() as session, session.begin():
        created = dict((await lock_account(session, account))._mapping)
    assert new_row(account) == created


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """Deliveries of billing or payment events for three accounts (descriptions, bills and re-issues, payments in
    full, in part or failed, cancellations), each delivery split into batches by the draw."""
    account = st.sampled_from("ABC")
    billing_step = st.one_of(
        st.tuples(st.just("describe"), account, st.sampled_from(["Ann", "Bo"]), st.sampled_from(["USD", "EUR"])),
        st.tuples(st.just("bill"), account, st.integers(0, 2), st.integers(1, 200), st.integers(-120, 30)),
    )
    payment_step = st.one_of(
        st.tuples(st.just("pay"), account, st.integers(0, 2), st.integers(1, 150), st.integers(0, 200), st.booleans()),
        st.tuples(st.just("cancel"), st.integers(0, 9)),
    )
    deliveries_: list[tuple[str, list[tuple[Any, ...]]]] = []
    for _ in range(draw(st.integers(1, 4))):
        topic = draw(st.sampled_from([Topic.BILLING_RECEIVABLES, Topic.PAYMENTS_EVENTS]))
        steps = draw(st.lists(billing_step if topic == Topic.BILLING_RECEIVABLES else payment_step, max_size=12))
        deliveries_.append((topic, steps))
    return deliveries_


def envelopes_of(p: str, steps: list[tuple[Any, ...]], receipts: list[str]) -> list[Envelope]:
    out = []
    for step in steps:
        if step[0] == "describe":
            out.append(described(f"{p}{step[1]}", step[2], currency=step[3]))
        elif step[0] == "bill":
            _, letter, n, amount, due = step
            out.append(bill(f"{p}{letter}", f"INV-{p}{letter}{n}", f"{amount}.00", date(2990, 12, 1) + timedelta(due)))
        elif step[0] == "pay":
            _, letter, n, amount, due, ok = step
            receipt = f"R-{p}{len(receipts)}"
            receipts.append(receipt)
            posted = paid(f"{p}{letter}", receipt, f"INV-{p}{letter}{n}", f"{amount}.00", f"{due}.00")
            out.append(posted if ok else failed(posted))
        else:
            receipt = receipts[step[1] % len(receipts)] if receipts else f"R-{p}none"
            data = PaymentCancelled(
                payment_id=f"PAY-{receipt}",
                receipt_number=receipt,
                account_number=receipt,
                amount=Money(amount=Decimal("1.00")),
                cancelled_by="Admin",
                reason="test",
                cancelled_at=NOW,
            )
            out.append(new_envelope("payment.cancelled", source="payments", subject=f"{p}X", data=data))
    return out


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(history=histories(), cut=st.integers(1, 12))
async def test_any_history_applied_in_batches_leaves_what_one_by_one_leaves(
    service: CollectionsService, history: list[tuple[str, list[tuple[Any, ...]]]], cut: int
) -> None:
    together, alone = f"HB{uuid.uuid4().hex[:6].upper()}-", f"HA{uuid.uuid4().hex[:6].upper()}-"
    receipts: dict[str, list[str]] = {together: [], alone: []}
    for topic, steps in history:
        batched = envelopes_of(together, steps, receipts[together])
        for at in range(0, len(batched), cut):
            outcomes = await consumer(service, topic).deliver(deliveries(batched[at : at + cut]))
            assert set(outcomes) <= {"applied"}
        for envelope in envelopes_of(alone, steps, receipts[alone]):
            assert await consumer(service, topic).deliver(deliveries([envelope])) == ["applied"]
    assert await state(service, together) == await state(service, alone)
