"""Commands from other systems posted a batch at a time, on the real database and broker: order, numbers, the
DLQ for a bad command, and the statements a batch costs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import event, select

from services.payments.storage import audit_log, payments, receivables
from shared.contracts import CONTENT_TYPE, Envelope, Topic, new_envelope
from shared.contracts.events import PaymentRecordRequested, PaymentType
from shared.messaging import Delivery, EventConsumer
from tests.conftest import Infra
from tests.support.helpers import eventually, read_topic
from tests.support.payments import Api, payments_api, seeded, year_of

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
async def api(infra: Infra) -> AsyncIterator[Api]:
    async for running_api in payments_api(infra):
        yield running_api


def command(account: str, amount: str, reference: str = "", **overrides: Any) -> Envelope:
    data = PaymentRecordRequested(
        account_number=account,
        payment_type=PaymentType.BILL,
        item_reference=reference or f"INV-{account}-1",
        method="Bank Transfer",
        amount=Decimal(amount),
        payment_date=date(year_of(account), 4, 20),
    ).model_copy(update=overrides)
    return new_envelope("payment.record_requested", source="lockbox", subject=account, data=data)


def records(envelopes: list[Envelope]) -> list[Delivery]:
    return [Delivery(e.to_bytes(), {"content-type": CONTENT_TYPE.encode()}, e.subject.encode()) for e in envelopes]


def commands_consumer(api: Api) -> EventConsumer:
    return next(c for c in api.service.event_consumers if c.name == "commands")


@contextmanager
def counted_statements(api: Api) -> Iterator[list[tuple[int, str]]]:
    """Every statement the service's engine runs meanwhile, with the connection it ran on."""
    seen: list[tuple[int, str]] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append((id(conn), statement))

    engine = api.service.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


async def posted_for(api: Api, accounts: list[str]) -> list[Any]:
    async with api.service.sessions() as session:
        query = select(payments).where(payments.c.account_number.in_(accounts)).order_by(payments.c.payment_id)
        return list((await session.execute(query)).all())


async def test_a_batch_is_posted_in_order_with_fresh_numbers_in_a_fixed_number_of_statements(api: Api) -> None:
    """INVARIANT: payments for one bill in one batch allocate one after another, in the order they came, and
    each gets its own payment id, transaction id and receipt number."""
    (first, _), (second, _) = [await seeded(api) for _ in range(2)]
    batch = [
        command(first, "100.00"),
        command(second, "145.50"),
        command(first, "40.00"),
        command(first, "20.00"),  # 5.50 left on the bill: 14.50 over
        command(second, "75.00", f"SC-{second}-1", payment_type=PaymentType.SERVICE, cash_received=Decimal("80")),
    ]
    with counted_statements(api) as seen:
        outcomes = await commands_consumer(api).deliver(records(batch))
    assert outcomes == ["applied"] * 5
    # The batch's transaction, from its inbox claim to its outbox insert (the relay shares the engine meanwhile).
    connection = next(conn for conn, statement in seen if statement.startswith("INSERT INTO payments.inbox"))
    statements = [statement for conn, statement in seen if conn == connection]
    start = next(i for i, s in enumerate(statements) if s.startswith("INSERT INTO payments.inbox"))
    end = next(i for i, s in enumerate(statements) if s.startswith("INSERT INTO payments.outbox"))
    # Inbox claim, settings, arrangement holds, accounts, item locks, numbers, (once an earlier test has edited
    # the number formats: the taken-number check), keys, two updates, payments, audit, outbox: the same for 5
    # commands as for 500, where one command at a time took a dozen each.
    assert end - start + 1 <= 13, statements[start : end + 1]

    rows = await posted_for(api, [first, second])
    by_amount = {(row.account_number, row.amount): row for row in rows}
    assert [by_amount[(first, Decimal(a))].due for a in ("100.00", "40.00", "20.00")] == [
        Decimal("145.50"),
        Decimal("45.50"),
        Decimal("5.50"),
    ]
    assert [by_amount[(first, Decimal(a))].outcome for a in ("100.00", "40.00", "20.00")] == ["under", "under", "over"]
    assert by_amount[(second, Decimal("75.00"))].change_given == Decimal("5.00")
    for kind in ("payment_id", "transaction_id", "receipt_number"):
        assert len({getattr(row, kind) for row in rows}) == 5
    # Numbers ascend in the batch's order, as they would have one command at a time.
    in_batch_order = sorted((r for r in rows if r.account_number == first), key=lambda r: r.due, reverse=True)
    for kind in ("payment_id", "transaction_id", "receipt_number"):
        drawn = [getattr(row, kind) for row in in_batch_order]
        assert drawn == sorted(drawn), kind
    async with api.service.sessions() as session:
        left = dict(
            (
                await session.execute(
                    select(receivables.c.item_reference, receivables.c.outstanding).where(
                        receivables.c.account_number.in_([first, second])
                    )
                )
            ).all()
        )
        audited = (
            await session.execute(select(audit_log.c.subject).where(audit_log.c.action == "payment.posted"))
        ).scalars()
        assert {row.payment_id for row in rows} <= set(audited)
    assert left[f"INV-{first}-1"] == Decimal("0.00")
    assert left[f"INV-{second}-1"] == Decimal("0.00")
    assert left[f"SC-{second}-1"] == Decimal("0.00")

    async def announced() -> list[bytes] | None:
        values = [
            r.value
            for r in await read_topic(api.bootstrap, Topic.PAYMENTS_EVENTS)
            if r.key == first.encode() and (b'"payment.posted"' in r.value or b'"payment.overpaid"' in r.value)
        ]
        return values if len(values) == 4 else None

    events = await eventually(announced)
    posted = [value for value in events if b'"payment.posted"' in value]
    assert all(row.payment_id.encode() in value for row, value in zip(in_batch_order, posted, strict=True))
    assert b'"payment.overpaid"' in events[-1], "the overpayment is announced after its posting"


async def test_a_bad_command_in_a_batch_goes_to_the_dlq_alone_and_the_others_post_once(api: Api) -> None:
    """INVARIANT: a command that breaks a rule never holds back or doubles the others of its batch."""
    account, _ = await seeded(api)
    good = [command(account, "10.00"), command(account, "20.00", f"INV-{account}-2")]
    bad = command(account, "5.00", "INV-DOES-NOT-EXIST")
    batch = records([good[0], bad, good[1]])
    consumer = commands_consumer(api)
    assert await consumer.deliver(batch) == ["applied", "dead_lettered", "applied"]
    assert sorted(row.amount for row in await posted_for(api, [account])) == [Decimal("10.00"), Decimal("20.00")]
    # The whole batch again, as after a crash before its offsets were committed.
    assert await consumer.deliver(batch) == ["duplicate", "dead_lettered", "duplicate"]
    assert len(await posted_for(api, [account])) == 2

    async def rejected() -> bool:
        records_ = await read_topic(api.bootstrap, Topic.PAYMENTS_EVENTS)
        return any(b'"payment.record_rejected"' in r.value and str(bad.id).encode() in r.value for r in records_)

    assert await eventually(rejected)


async def test_a_command_refused_by_a_rule_leaves_the_rest_of_its_batch_posted(api: Api) -> None:
    account, _ = await seeded(api)
    too_much = command(account, "99999.00")  # beyond the outstanding plus the overpayment threshold
    fine = command(account, "45.50")
    assert await commands_consumer(api).deliver(records([too_much, fine])) == ["dead_lettered", "applied"]
    (row,) = await posted_for(api, [account])
    assert (row.amount, row.due) == (Decimal("45.50"), Decimal("145.50"))
