"""`paydesk dlq list|show|replay` on the real broker, with payments consuming `payments.commands.v1` in-process."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from paydesk.cli import app as cli_app
from services.payments.storage import payments, plumbing, receivables
from shared.contracts import Topic, new_envelope
from shared.contracts.events import BillIssued, Money, PaymentRecordRequested, PaymentType
from shared.messaging import DUPLICATES
from tests.conftest import Infra
from tests.support.helpers import at_least, eventually, publish, publish_raw
from tests.support.payments import Api, payments_api, seeded, year_of

pytestmark = pytest.mark.kafka

CARD = "4242 4242 4242 4242"


@pytest.fixture(scope="module")
async def api(infra: Infra) -> AsyncIterator[Api]:
    async for running_api in payments_api(infra):
        yield running_api


async def paydesk(*args: str) -> str:
    """Run a `paydesk` command as on-call would (in a thread: the commands run their own event loop)."""
    result = await asyncio.to_thread(CliRunner().invoke, cli_app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def line_with(output: str, needle: str) -> str | None:
    return next((line for line in output.splitlines() if needle in line), None)


async def payment_count(api: Api, account: str) -> int:
    async with api.service.sessions() as session:
        query = select(func.count()).where(payments.c.account_number == account)
        return int((await session.execute(query)).scalar_one())


async def applied(api: Api, event_id: uuid.UUID) -> bool:
    async with api.service.sessions() as session:
        query = select(func.count()).where(
            plumbing.inbox.c.event_id == event_id, plumbing.inbox.c.consumer == "commands"
        )
        return bool((await session.execute(query)).scalar_one())


async def test_a_dead_letter_is_listed_shown_masked_and_after_a_fix_replayed_into_exactly_one_payment(
    api: Api, infra: Infra
) -> None:
    """INVARIANT: replaying a dead letter applies it once, however often it is replayed."""
    account, _ = await seeded(api)
    late_invoice = f"INV-{account}-LATE"
    command = new_envelope(
        "payment.record_requested",
        source="lockbox",
        subject=account,
        data=PaymentRecordRequested(
            account_number=account,
            payment_type=PaymentType.BILL,
            item_reference=late_invoice,  # billing has not published this invoice yet
            method="Bank Transfer",
            amount=Decimal("80.00"),
            payment_date=date(year_of(account), 5, 2),
        ),
    )
    marker = uuid.uuid4().hex
    malformed = f'{{"id": "{marker}", "data": {{"note": "card {CARD}"'.encode()
    await publish_raw(infra.bootstrap_servers, Topic.PAYMENTS_COMMANDS, malformed, account.encode(), [])
    await publish(infra.bootstrap_servers, Topic.PAYMENTS_COMMANDS, [command])

    async def both_listed() -> tuple[str, str] | None:
        output = await paydesk("dlq", "list", Topic.PAYMENTS_COMMANDS)
        unknown = line_with(output, str(command.id))
        broken = next(
            (line for line in output.splitlines() if f"key={account}" in line and "undecodable" in line), None
        )
        return (unknown, broken) if unknown and broken else None

    unknown_line, _ = await eventually(both_listed, within=60)
    assert "payment.record_requested" in unknown_line and "unknown_item" in unknown_line
    assert "consumer=paydesk.payments.commands" in unknown_line

    async def listed_among_every_dlq() -> bool:
        return str(command.id) in await paydesk("dlq", "list")

    assert await eventually(listed_among_every_dlq), "without a topic every DLQ is listed"

    malformed_id = await eventually(lambda: _id_of_malformed(account, marker))
    shown = await paydesk("dlq", "show", malformed_id)
    assert "invalid envelope" in shown and marker in shown
    assert CARD not in shown and "4242424242424242" not in shown
    assert "************4242" in shown, "the card-shaped number is masked, its last four kept"

    # The fix: billing publishes the invoice; then the dead letter is replayed, twice.
    bill = BillIssued(
        account_number=account,
        invoice_number=late_invoice,
        billing_period=f"{year_of(account)}-05",
        amount=Money(amount=Decimal("80.00")),
        issued_on=date(year_of(account), 5, 1),
        due_date=date(year_of(account), 5, 30),
    )
    await publish(
        infra.bootstrap_servers,
        Topic.BILLING_RECEIVABLES,
        [new_envelope("bill.issued", source="billing", subject=account, data=bill)],
    )
    await eventually(lambda: _receivable_known(api, late_invoice))
    dead_letter_id = unknown_line.split()[0]
    before = await payment_count(api, account)
    assert "replayed 1 dead letters" in await paydesk("dlq", "replay", dead_letter_id)
    await eventually(lambda: applied(api, command.id), within=60)
    assert await payment_count(api, account) == before + 1
    duplicates = DUPLICATES.labels("payments", "commands")._value.get
    seen = duplicates()
    assert "replayed 1 dead letters" in await paydesk("dlq", "replay", dead_letter_id)
    await eventually(lambda: at_least(duplicates, seen + 1), within=60)
    assert await payment_count(api, account) == before + 1, "the inbox makes a second replay harmless"


async def _id_of_malformed(account: str, marker: str) -> str | None:
    """The id of the one malformed record sent, or None until exactly one is read back."""
    from paydesk import oncall

    records = await oncall.read_dead_letters(
        os.environ["KAFKA_BOOTSTRAP_SERVERS"], oncall.dlq_topic(Topic.PAYMENTS_COMMANDS)
    )
    found = [r for r in records if r.key == account.encode() and marker.encode() in (r.value or b"")]
    return found[0].id if len(found) == 1 else None


async def _receivable_known(api: Api, invoice: str) -> bool:
    async with api.service.sessions() as session:
        query = select(func.count()).where(receivables.c.item_reference == invoice)
        return bool((await session.execute(query)).scalar_one())
