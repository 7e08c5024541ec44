"""The credit_notes service on the real broker and database: automatic and manual credit notes, application,
expiry, search, export, detail view, audit trail and settings."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
import zipfile
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text, update
from typer.testing import CliRunner

from paydesk.cli import app as cli
from services.credit_notes import commands, queries
from services.credit_notes.app import CreditNotesService, create_service
from services.credit_notes.settings import CreditNotesSettings
from services.credit_notes.storage import audit_log, credit_notes, open_items, payments
from shared.auth import Role, mint_token
from shared.contracts import Envelope, Topic, new_envelope
from shared.contracts.events import CreditNoteIssued, Money, PaymentCancelled, PaymentStatusChanged, PaymentType
from shared.errors import Rejected
from tests.conftest import Infra
from tests.support.helpers import (
    bill_issued,
    counter_payment,
    eventually,
    payment_overpaid,
    publish,
    read_topic,
    settled,
    unique_account,
    unique_day,
)

pytestmark = pytest.mark.kafka
D = Decimal


@pytest.fixture(scope="module")
async def service(infra: Infra) -> AsyncIterator[CreditNotesService]:
    created = create_service(
        CreditNotesSettings(
            database_url=infra.database_url, kafka_bootstrap_servers=infra.bootstrap_servers, development=True
        )
    )
    await created.start()
    try:
        yield created
    finally:
        await created.stop()


@pytest.fixture(scope="module")
async def api(service: CreditNotesService) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=service.http), base_url="http://cn") as client:
        yield client


def auth(service: CreditNotesService, role: Role = Role.CUSTOMER_EXECUTIVE, user: str = "Jane Smith") -> dict[str, str]:
    token = mint_token(service.settings.jwt_secret.get_secret_value(), user=user, roles=[role])
    return {"Authorization": f"Bearer {token}"}


def writer(service: CreditNotesService, user: str = "Jane Smith") -> dict[str, str]:
    return {**auth(service, user=user), "Idempotency-Key": f"key-{uuid.uuid4().hex}"}


async def payment_row(service: CreditNotesService, receipt_number: str) -> Any:
    async with service.sessions() as session:
        return (await session.execute(select(payments).where(payments.c.receipt_number == receipt_number))).first()


async def notes_of(service: CreditNotesService, receipt_number: str) -> list[Any]:
    async with service.sessions() as session:
        return list(
            (
                await session.execute(
                    select(credit_notes)
                    .where(credit_notes.c.receipt_number == receipt_number)
                    .order_by(credit_notes.c.seq)
                )
            ).all()
        )


async def given_payment(
    infra: Infra,
    service: CreditNotesService,
    account: str,
    *,
    amount: str,
    due: str | None = None,
    consumer_name: str = "Test Consumer",
    item_reference: str | None = None,
    day: date | None = None,
) -> str:
    """A posted payment the service has taken into its read model; returns its receipt number."""
    receipt = f"R-{uuid.uuid4().hex[:8].upper()}"
    event = counter_payment(
        account,
        receipt_number=receipt,
        amount=amount,
        due=due or amount,
        item_reference=item_reference or f"INV-{receipt}",
        consumer_name=consumer_name,
        day=day,
    )
    await publish(infra.bootstrap_servers, Topic.PAYMENTS_EVENTS, [event])
    await eventually(lambda: payment_row(service, receipt))
    return receipt


async def outstanding(service: CreditNotesService, item_reference: str) -> Decimal | None:
    async with service.sessions() as session:
        item = (await session.execute(select(open_items).where(open_items.c.item_reference == item_reference))).first()
    if item is None or item.amount is None:
        return None
    return Decimal(item.amount - item.paid - item.credited)


async def events_for(infra: Infra, account: str, event_type: str) -> list[Envelope]:
    records = await read_topic(infra.bootstrap_servers, Topic.CREDITNOTES_EVENTS)
    found = [Envelope.model_validate_json(r.value) for r in records]
    return [e for e in found if e.subject == account and e.type == event_type]


async def issue(api: httpx.AsyncClient, service: CreditNotesService, receipt: str, **body: Any) -> httpx.Response:
    return await api.post(
        "/credit-notes", json={"receipt_number": receipt, "reason": "Billing Error", **body}, headers=writer(service)
    )


class TestAutomaticCreditNotes:
    async def test_ac24_overpayment_creates_one_credit_note(self, infra: Infra, service: CreditNotesService) -> None:
        """INVARIANT: one overpayment gives exactly one credit note, whatever is redelivered or announced again."""
        account = unique_account()
        posted = counter_payment(
            account, receipt_number=f"R-{account}", amount="150.00", due="145.50", item_reference=f"INV-{account}"
        )
        overpaid = payment_overpaid(posted)
        announced_again = overpaid.model_copy(update={"id": uuid.uuid4()})
        await publish(infra.bootstrap_servers, Topic.PAYMENTS_EVENTS, [posted, overpaid, overpaid, announced_again])

        notes = await eventually(lambda: notes_of(service, f"R-{account}"))
        issued = await eventually(lambda: events_for(infra, account, "credit_note.issued"))
        await settled(service)  # the duplicates consumed, so a second note would show
        notes = await notes_of(service, f"R-{account}")
        assert len(notes) == 1
        note = notes[0]
        assert (note.amount, note.reason, note.created_by, note.status, note.receipt_number) == (
            D("4.50"),
            "Overpayment",
            "System",
            "Active",
            f"R-{account}",
        )
        assert len(await events_for(infra, account, "credit_note.issued")) == 1
        event = CreditNoteIssued.model_validate(issued[0].data)
        assert (event.credit_note_number, event.amount.amount, event.receipt_number, event.created_by) == (
            note.credit_note_number,
            D("4.50"),
            f"R-{account}",
            "System",
        )
        assert event.payment_id == f"PAY-R-{account}" and event.consumer_name == "Test Consumer"

    async def test_an_overpayment_seen_before_its_payment_still_gives_one_note_and_settles_the_item(
        self, infra: Infra, service: CreditNotesService
    ) -> None:
        account = unique_account()
        invoice = f"INV-{account}"
        await publish(infra.bootstrap_servers, Topic.BILLING_RECEIVABLES, [bill_issued(account, invoice, "145.50")])
        await eventually(lambda: outstanding(service, invoice))
        posted = counter_payment(
            account, receipt_number=f"R-{account}", amount="150.00", due="145.50", item_reference=invoice
        )
        await publish(infra.bootstrap_servers, Topic.PAYMENTS_EVENTS, [payment_overpaid(posted), posted, posted])
        await eventually(lambda: _equals(outstanding(service, invoice), D("0.00")))
        payment = await payment_row(service, f"R-{account}")
        assert (payment.method, payment.item_reference, payment.allocated, payment.credited) == (
            "Cash",
            invoice,
            D("145.50"),
            D("4.50"),
        )
        assert [n.amount for n in await notes_of(service, f"R-{account}")] == [D("4.50")]

    async def test_ac24_credit_note_numbers_are_unique_and_sequential(
        self, infra: Infra, service: CreditNotesService, api: httpx.AsyncClient
    ) -> None:
        account = unique_account()
        receipt = await given_payment(infra, service, account, amount="100.00")
        responses = await asyncio.gather(*(issue(api, service, receipt, amount="10.00") for _ in range(6)))
        assert [r.status_code for r in responses] == [201] * 6
        numbers = sorted(int(r.json()["credit_note_number"].removeprefix("CN-")) for r in responses)
        assert all(r.json()["credit_note_number"].startswith("CN-") for r in responses)
        assert numbers == list(range(numbers[0], numbers[0] + 6)), "consecutive, none reused"


class TestManualCreditNotes:
    async def test_ac25_credit_note_cannot_exceed_the_original_payment_amount(
        self, infra: Infra, service: CreditNotesService, api: httpx.AsyncClient
    ) -> None:
        receipt = await given_payment(infra, service, unique_account(), amount="145.50")
        too_much = await issue(api, service, receipt, amount="145.51")
        assert too_much.status_code == 422
        assert (too_much.json()["code"], too_much.json()["field"]) == ("amount_exceeds_payment", "amount")
        assert (await issue(api, service, receipt, amount="100.00")).status_code == 201
        beyond_what_is_left = await issue(api, service, receipt, amount="45.51")
        assert beyond_what_is_left.status_code == 422, "credit already issued counts against the payment"
        assert (await issue(api, service, receipt, amount="45.50")).status_code == 201
        assert (await payment_row(service, receipt)).credited == D("145.50")

    async def test_ac41_negative_or_zero_credit_amounts_are_refused(
        self, infra: Infra, service: CreditNotesService, api: httpx.AsyncClient
    ) -> None:
        receipt = await given_payment(infra, service, unique_account(), amount="20.00")
        beyond = await issue(api, service, receipt, amount="20.01")
        assert (beyond.status_code, beyond.json()["code"], beyond.json()["field"]) == (
            422,
            "amount_exceeds_payment",
            "amount",
        )
        for amount in ("-1.00", "0", "0.00", "1.005", "abc"):
            response = await issue(api, service, receipt, amount=amount)
            assert response.status_code == 422, amount
            assert response.json()["errors"][0]["field"] == "amount"
        assert await notes_of(service, receipt) == []

    async def test_ac26_reason_is_required_and_must_come_from_the_predefined_list(
        self, infra: Infra, service: CreditNotesService, api: httpx.AsyncClient
    ) -> None:
        receipt = await given_payment(infra, service, unique_account(), amount="20.00")
        missing = await api.post("/credit-notes", json={"receipt_number": receipt}, headers=writer(service))
        assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "reason"
        unknown = await issue(api, service, receipt, reason="Felt like it")
        assert (unknown.status_code, unknown.json()["code"], unknown.json()["field"]) == (
            422,
            "unknown_reason",
            "reason",
        )
        for reason in ("Overpayment", "Duplicate Payment", "Billing Error", "Billing Adjustment"):
            assert (await issue(api, service, receipt, amount="1.00", reason=reason)).status_code == 201
        form = await api.get(f"/credit-notes/payments/{receipt}", headers=auth(service))
        assert form.json()["reasons"] == [
            "Overpayment",
            "Duplicate Payment",
            "Billing Error",
            "Billing Adjustment",
            "Refund Request",
            "Customer Request",
            "Other",
        ]

    async def test_ac27_remaining_payment_value_is_payment_minus_credit_and_zero_is_a_full_reversal(
        self, infra: Infra, service: CreditNotesService, api: httpx.AsyncClient
    ) -> None:
        receipt = await given_payment(infra, service, unique_account(), amount="145.50")
        partial = await issue(api, service, receipt, amount="45.50")
        assert partial.status_code == 201
        assert partial.json()["summary"] == {
            "original_payment_amount": "145.50",
            "credit_note_amount": "45.50",
            "remaining_payment_value": "100.00",
            "full_reversal": False,
        }
        rest = await issue(api, service, receipt)  # amount defaults to what is left of the payment
        assert rest.status_code == 201
        assert rest.json()["amount"] == "100.00"
        assert rest.json()["summary"]["remaining_payment_value"] == "0.00"
        assert rest.json()["summary"]["full_reversal"] is True

    async def test_amount_defaults_to_the_full_payment_amount(
        self, infra: Infra, service: CreditNotesService, api: httpx.AsyncClient
    ) -> None:
        receipt = await given_payment(infra, service, unique_account(), amount="145.50")
        form = await api.get(f"/credit-notes/payments/{receipt}", headers=auth(service))
        assert (form.json()["maximum_credit"], form.json()["maximum_credit_display"]) == ("145.50", "$145.50")
        response = await issue(api, service, receipt)
        assert (response.status_code, response.json()["amount"], response.json()["remaining"]) == (
            201,
            "145.50",
            "145.50",
        )

    async def test_ac28_credit_note_expires_one_year_after_creation_by_default(
        self, infra: Infra, service: CreditNotesService, api: httpx.AsyncClient
    ) -> None:
        receipt = await given_payment(infra, service, unique_account(), amount="30.00")
        response = await issue(api, service, receipt, amount="4.50")
        created = datetime.fromisoformat(response.json()["created_at"])
        expires = datetime.fromisoformat(response.json()["expires_at"])
        assert (expires.year, expires.month, expires.day) == (created.year + 1, created.month, created.day)
        assert expires.time() == created.time()

    async def test_created_by_comes_from_the_token_and_the_note_is_announced(
        self, infra: Infra, service: CreditNotesService, api: httpx.AsyncClient
    ) -> None:
        account = unique_account()
        receipt = await given_payment(infra, service, account, amount="30.00")
        response = await api.post(
            "/credit-notes",
            json={
                "receipt_number": receipt,
                "amount": "5.00",
                "reason": "Other",
                "remarks": "Paid twice at the counter",
                "created_by": "Mallory",
            },
            headers=writer(service, user="Ann Clerk"),
        )
        assert response.json()["created_by"] == "Ann Clerk"
        issued = await eventually(lambda: events_for(infra, account, "credit_note.issued"))
        event = CreditNoteIssued.model_validate(issued[0].data)
        assert (event.created_by, event.reason, event.amount.amount) == ("Ann Clerk", "Other", D("5"))
        assert event.remarks == "Paid twice at the counter"

    async def test_a_retry_with_the_same_key_returns_the_first_credit_note_and_a_new_body_is_a_conflict(
        self, infra: Infra, service: CreditNotesService, api: httpx.AsyncClient
    ) -> None:
        receipt = await given_payment(infra, service, unique_account(), amount="30.00")
        headers = writer(service)
        body = {"receipt_number": receipt, "amount": "5.00", "reason": "Other"}
        first, again = [await api.post("/credit-notes", json=body, headers=headers) for _ in range(2)]
        assert first.json()["credit_note_number"] == again.json()["credit_note_number"]
        assert len(await notes_of(service, receipt)) == 1
        changed = await api.post("/credit-notes", json={**body, "amount": "6.00"}, headers=headers)
        assert (changed.status_code, changed.json()["code"]) == (409, "idempotency_key_reused")

    async def test_remarks_are_optional_and_limited_to_500_characters(
        self, infra: Infra, service: CreditNotesService, api: httpx.AsyncClient
    ) -> None:
        receipt = await given_payment(infra, service, unique_account(), amount="30.00")
        too_long = await issue(api, service, receipt, amount="1.00", remarks="x" * 501)
        assert too_long.status_code == 422 and too_long.json()["errors"][0]["field"] == "remarks"
        ok = await issue(api, service, receipt, amount="1.00", remarks="Customer overpaid due to billing adjustment")
        assert ok.json()["remarks"] == "Customer overpaid due to billing adjustment"

    async def test_unknown_receipt_is_not_found_and_roles_are_enforced(
        self, service: CreditNotesService, api: httpx.AsyncClient
    ) -> None:
        unknown = await issue(api, service, "R-NOPE")
        assert (unknown.status_code, unknown.json()["code"], unknown.json()["field"]) == (
            404,
            "unknown_receipt",
            "receipt_number",
        )
        anonymous = await api.post("/credit-notes", json={"receipt_number": "R-1", "reason": "Other"})
        assert anonymous.status_code == 401

    async def test_a_cancelled_payment_gets_no_new_credit_note_and_its_item_is_owed_again(
        self, infra: Infra, service: CreditNotesService, api: httpx.AsyncClient
    ) -> None:
        account = unique_account()
        invoice, receipt = await given_bill_paid_in_full(infra, service, account, "80.00")
        cancelled = PaymentCancelled(
            payment_id=f"PAY-{receipt}",
            receipt_number=receipt,
            account_number=account,
            amount=Money(amount=D("80.00")),
            reason="Entered twice",
            cancelled_by="Admin",
            cancelled_at=datetime.now(UTC),
        )
        await publish(
            infra.bootstrap_servers,
            Topic.PAYMENTS_EVENTS,
            [new_envelope("payment.cancelled", source="payments", subject=account, data=cancelled)],
        )
        await eventually(lambda: _equals(outstanding(service, invoice), D("80.00")))
        refused = await issue(api, service, receipt, amount="1.00")
        assert (refused.status_code, refused.json()["code"]) == (422, "payment_cancelled")

    async def test_a_refunded_payment_gets_no_new_credit_note_and_its_item_is_owed_again(
        self, infra: Infra, service: CreditNotesService, api: httpx.AsyncClient
    ) -> None:
        account = unique_account()
        invoice, receipt = await given_bill_paid_in_full(infra, service, account, "60.00")

        def changed(previous: str, status: str) -> Envelope:
            data = PaymentStatusChanged(
                payment_id=f"PAY-{receipt}",
                receipt_number=receipt,
                account_number=account,
                previous_status=previous,
                status=status,
                changed_at=datetime.now(UTC),
            )
            return new_envelope("payment.status_changed", source="payments", subject=account, data=data)

        events = [changed("Posted", "Disputed"), changed("Disputed", "Refunded")]
        await publish(infra.bootstrap_servers, Topic.PAYMENTS_EVENTS, events)
        await eventually(lambda: _equals(outstanding(service, invoice), D("60.00")))
        refused = await issue(api, service, receipt, amount="1.00")
        assert (refused.status_code, refused.json()["code"], refused.json()["field"]) == (
            422,
            "payment_refunded",
            "receipt_number",
        )
        payment = await api.get(f"/credit-notes/payments/{receipt}", headers=auth(service))
        assert (payment.json()["status"], payment.json()["maximum_credit"]) == ("Refunded", "0.00")


async def _equals(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def given_bill_paid_in_full(
    infra: Infra, service: CreditNotesService, account: str, amount: str
) -> tuple[str, str]:
    """A bill of `amount` and a payment of all of it; returns the invoice and receipt numbers."""
    invoice = f"INV-{account}"
    await publish(infra.bootstrap_servers, Topic.BILLING_RECEIVABLES, [bill_issued(account, invoice, amount)])
    await eventually(lambda: outstanding(service, invoice))
    receipt = await given_payment(infra, service, account, amount=amount, item_reference=invoice)
    await eventually(lambda: _equals(outstanding(service, invoice), D("0.00")))
    return invoice, receipt


async def given_credit_note(
    infra: Infra, service: CreditNotesService, api: httpx.AsyncClient, account: str, amount: str, **body: Any
) -> str:
    receipt = await given_payment(infra, service, account, amount=amount, **body)
    response = await issue(api, service, receipt, amount=amount)
    assert response.status_code == 201, response.text
    return str(response.json()["credit_note_number"])


async def given_bill(infra: Infra, service: CreditNotesService, account: str, amount: str) -> str:
    invoice = f"INV-{uuid.uuid4().hex[:8].upper()}"
    await publish(infra.bootstrap_servers, Topic.BILLING_RECEIVABLES, [bill_issued(account, invoice, amount)])
    await eventually(lambda: outstanding(service, invoice))
    return invoice


async def apply(
    api: httpx.AsyncClient, service: CreditNotesService, number: str, invoice: str, amount: str | None = None
) -> httpx.Response:
    body: dict[str, Any] = {"payment_type": "bill", "item_reference": invoice}
    if amount is not None:
        body["amount"] = amount
    return await api.post(f"/credit-notes/{number}/apply", json=body, headers=writer(service))


class TestApplying:
    async def test_ac29_usage_percentage_is_tracked_and_status_becomes_applied_at_zero(
        self, infra: Infra, service: CreditNotesService, api: httpx.AsyncClient
    ) -> None:
        account = unique_account()
        number = await given_credit_note(infra, service, api, account, "30.00")
        invoice = await given_bill(infra, service, account, "152.25")
        first = await apply(api, service, number, invoice, "10.00")
        assert first.status_code == 200, first.text
        assert {k: first.json()[k] for k in ("applied", "remaining", "usage_percentage", "status")} == {
            "applied": "10.00",
            "remaining": "20.00",
            "usage_percentage": "33.3",
            "status": "Active",
        }
        rest = await apply(api, service, number, invoice)
        assert {k: rest.json()[k] for k in ("applied", "applied_total", "remaining", "usage_percentage", "status")} == {
            "applied": "20.00",
            "applied_total": "30.00",
            "remaining": "0.00",
            "usage_percentage": "100.0",
            "status": "Applied",
        }
        assert await outstanding(service, invoice) == D("122.25")
        await eventually(lambda: _has_length(events_for(infra, account, "credit_note.applied"), 2))
        applied = await events_for(infra, account, "credit_note.applied")
        assert [(e.data["applied"]["amount"], e.data["remaining"]["amount"], e.data["status"]) for e in applied] == [
            ("10.00", "20.00", "Active"),
            ("20.00", "0.00", "Applied"),
        ]
        assert applied[0].data["item_reference"] == invoice and applied[0].data["payment_type"] == "bill"

    async def test_ac42_status_is_updated_automatically_from_the_remaining_balance(
        self, infra: Infra, service: CreditNotesService, api: httpx.AsyncClient
    ) -> None:
        account = unique_account()
        number = await given_credit_note(infra, service, api, account, "5.00")
        invoice = await given_bill(infra, service, account, "50.00")
        detail = await api.get(f"/credit-notes/{number}", headers=auth(service))
        assert detail.json()["status"] == "Active"
        await apply(api, service, number, invoice, "5.00")
        detail = await api.get(f"/credit-notes/{number}", headers=auth(service))
        assert (detail.json()["status"], detail.json()["financial"]["remaining_balance"]) == ("Applied", "0.00")
        used_up = await apply(api, service, number, invoice, "0.01")
        assert (used_up.status_code, used_up.json()["code"]) == (422, "credit_note_used_up")

    async def test_payments_reduce_what_an_item_owes_and_credit_cannot_exceed_it(
        self, infra: Infra, service: CreditNotesService, api: httpx.AsyncClient
    ) -> None:
        account = unique_account()
        invoice = await given_bill(infra, service, account, "100.00")
        await given_payment(infra, service, account, amount="60.00", due="100.00", item_reference=invoice)
        await eventually(lambda: _equals(outstanding(service, invoice), D("40.00")))
        number = await given_credit_note(infra, service, api, account, "50.00")
        too_much = await apply(api, service, number, invoice, "40.01")
        assert (too_much.status_code, too_much.json()["code"]) == (422, "amount_exceeds_outstanding")
        whole = await apply(api, service, number, invoice)
        assert (whole.json()["applied"], whole.json()["remaining"]) == ("40.00", "10.00")
        assert await outstanding(service, invoice) == D("0.00")

    async def test_credit_applies_only_to_items_of_the_same_account(
        self, infra: Infra, service: CreditNotesService, api: httpx.AsyncClient
    ) -> None:
        number = await given_credit_note(infra, service, api, unique_account(), "5.00")
        elsewhere = await given_bill(infra, service, unique_account(), "50.00")
        response = await apply(api, service, number, elsewhere, "1.00")
        assert (response.status_code, response.json()["code"], response.json()["field"]) == (
            422,
            "item_of_another_account",
            "item_reference",
        )
        unknown = await apply(api, service, number, "INV-NOPE", "1.00")
        assert unknown.status_code == 404

    async def test_two_applications_racing_for_the_last_cent_never_over_apply(
        self, infra: Infra, service: CreditNotesService, api: httpx.AsyncClient
    ) -> None:
        """INVARIANT: concurrent applications of one credit note never apply more than its amount."""
        account = unique_account()
        number = await given_credit_note(infra, service, api, account, "10.00")
        first_bill, second_bill = [await given_bill(infra, service, account, "50.00") for _ in range(2)]
        assert (await apply(api, service, number, first_bill, "9.99")).status_code == 200

        async def take_the_last_cent(invoice: str) -> str:
            command = commands.ApplyCreditNote(number, PaymentType.BILL, invoice, D("0.01"))
            try:
                async with service.sessions() as session, session.begin():
                    await commands.apply_credit_note(
                        session, command, applied_by="Racer", idempotency_key=uuid.uuid4().hex
                    )
                    await asyncio.sleep(0.2)  # hold the lock so the other transaction really waits on it
                return "applied"
            except Rejected as refused:
                return refused.code

        for attempt in range(3):
            outcomes = await asyncio.gather(take_the_last_cent(first_bill), take_the_last_cent(second_bill))
            async with service.sessions() as session:
                note = (
                    await session.execute(select(credit_notes).where(credit_notes.c.credit_note_number == number))
                ).one()
            assert note.applied == D("10.00") and note.remaining == D("0.00") and note.status == "Applied"
            expected = ["applied", "credit_note_used_up"] if attempt == 0 else ["credit_note_used_up"] * 2
            assert sorted(outcomes) == expected
        assert (await outstanding(service, first_bill), await outstanding(service, second_bill)) in {
            (D("40.00"), D("50.00")),
            (D("40.01"), D("49.99")),
        }


async def _has_length(value: Any, length: int) -> bool:
    return len(await value) == length


class TestExpiry:
    async def test_the_expiry_pass_expires_due_credit_notes_and_announces_it(
        self, infra: Infra, service: CreditNotesService, api: httpx.AsyncClient
    ) -> None:
        account = unique_account()
        number = await given_credit_note(infra, service, api, account, "12.00")
        invoice = await given_bill(infra, service, account, "50.00")
        await apply(api, service, number, invoice, "2.00")
        async with service.sessions() as session, session.begin():
            await session.execute(
                update(credit_notes)
                .where(credit_notes.c.credit_note_number == number)
                .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
        refused = await apply(api, service, number, invoice, "1.00")
        assert (refused.status_code, refused.json()["code"]) == (422, "credit_note_expired")

        assert await service.expire_now() >= 1
        detail = (await api.get(f"/credit-notes/{number}", headers=auth(service))).json()
        assert (detail["status"], detail["financial"]["remaining_balance"]) == ("Expired", "10.00")
        assert detail["dates"]["expired_at"] is not None
        expired = await eventually(lambda: events_for(infra, account, "credit_note.expired"))
        assert (expired[0].data["credit_note_number"], expired[0].data["remaining"]["amount"]) == (number, "10.00")
        await service.expire_now()  # a second pass must not expire it again
        await settled(service)
        assert len(await events_for(infra, account, "credit_note.expired")) == 1

    async def test_the_cli_runs_one_expiry_pass(
        self, infra: Infra, service: CreditNotesService, api: httpx.AsyncClient
    ) -> None:
        number = await given_credit_note(infra, service, api, unique_account(), "3.00")
        async with service.sessions() as session, session.begin():
            await session.execute(
                update(credit_notes)
                .where(credit_notes.c.credit_note_number == number)
                .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
        result = await asyncio.to_thread(CliRunner().invoke, cli, ["expire-credit-notes"])
        assert result.exit_code == 0, result.output
        assert result.output.startswith("expired ")
        detail = (await api.get(f"/credit-notes/{number}", headers=auth(service))).json()
        assert detail["status"] == "Expired"


class TestSearchAndExport:
    async def given_notes(
        self, infra: Infra, service: CreditNotesService, api: httpx.AsyncClient
    ) -> tuple[str, str, list[str], list[str]]:
        """Three credit notes of one consumer with a unique name: 10.00, 20.00 (half used), 30.00 (used up)."""
        account = unique_account()
        name = f"Zelda {uuid.uuid4().hex[:6]} Quartermain"
        receipts, numbers = [], []
        invoice = await given_bill(infra, service, account, "500.00")
        for amount, reason in (("10.00", "Billing Error"), ("20.00", "Duplicate Payment"), ("30.00", "Other")):
            receipt = await given_payment(infra, service, account, amount=amount, consumer_name=name)
            response = await issue(api, service, receipt, amount=amount, reason=reason)
            receipts.append(receipt)
            numbers.append(response.json()["credit_note_number"])
        await apply(api, service, numbers[1], invoice, "10.00")
        await apply(api, service, numbers[2], invoice, "30.00")
        return account, name, receipts, numbers

    async def search(self, api: httpx.AsyncClient, service: CreditNotesService, **params: Any) -> list[str]:
        response = await api.get("/credit-notes", params=params, headers=auth(service, Role.BILLING_MANAGER))
        assert response.status_code == 200, response.text
        return [item["credit_note_number"] for item in response.json()["items"]]

    async def test_ac36_search_by_number_consumer_account_and_receipt_case_insensitive_partial(
        self, infra: Infra, service: CreditNotesService, api: httpx.AsyncClient
    ) -> None:
        account, name, receipts, numbers = await self.given_notes(infra, service, api)
        newest_first = list(reversed(numbers))
        assert await self.search(api, service, q=name.split()[1].upper()) == newest_first
        assert await self.search(api, service, q=account.lower()[2:]) == newest_first
        assert await self.search(api, service, q=receipts[0].lower()) == [numbers[0]]
        assert await self.search(api, service, q=numbers[1].lower()) == [numbers[1]]
        assert await self.search(api, service, q=f"{name.split()[1]}%") == [], "wildcards are taken literally"

    async def test_ac36_search_uses_the_trigram_indexes(self, service: CreditNotesService) -> None:
        filters = queries.CreditNoteFilters(text="zelda")
        statement = select(credit_notes.c.seq).where(*queries.search_conditions(filters))
        async with service.sessions() as session, session.begin():
            await session.execute(text("SET LOCAL enable_seqscan = off"))
            compiled = statement.compile(session.bind, compile_kwargs={"literal_binds": True})
            plan = "\n".join(r[0] for r in (await session.execute(text(f"EXPLAIN {compiled}"))).all())
        for column in ("credit_note_number", "consumer_name", "account_number", "receipt_number"):
            assert f"ix_credit_notes_{column}_trgm" in plan, plan

    async def test_ac37_credit_note_table_has_the_seed_columns(
        self, infra: Infra, service: CreditNotesService, api: httpx.AsyncClient
    ) -> None:
        account, name, receipts, numbers = await self.given_notes(infra, service, api)
        response = await api.get("/credit-notes", params={"q": account}, headers=auth(service))
        row = response.json()["items"][-1]
        assert row == {
            "credit_note_number": numbers[0],
            "consumer": {"name": name, "account_number": account},
            "amount": "10.00",
            "remaining": "10.00",
            "currency": "USD",
            "amount_display": "$10.00",
            "remaining_display": "$10.00",
            "reason": "Billing Error",
            "status": "Active",
            "created_at": row["created_at"],
            "created_date": datetime.fromisoformat(row["created_at"]).date().isoformat(),
            "linked_payment": receipts[0],
        }

    async def test_ac38_filters_status_date_reason_consumer_remaining_linked_payment_and_amount(
        self, infra: Infra, service: CreditNotesService, api: httpx.AsyncClient
    ) -> None:
        account, name, receipts, numbers = await self.given_notes(infra, service, api)
        mine = {"consumer": name.lower()}
        assert await self.search(api, service, **mine, status="Applied") == [numbers[2]]
        assert await self.search(api, service, **mine, status="active") == [numbers[1], numbers[0]]
        assert await self.search(api, service, **mine, status="All") == [numbers[2], numbers[1], numbers[0]]
        assert await self.search(api, service, **mine, status="Expired") == []
        assert await self.search(api, service, **mine, created="today") == [numbers[2], numbers[1], numbers[0]]
        assert len(await self.search(api, service, **mine, created="this_week")) == 3
        assert len(await self.search(api, service, **mine, created="this_month")) == 3
        assert await self.search(api, service, **mine, created_from="2001-01-01", created_to="2001-12-31") == []
        assert await self.search(api, service, **mine, reason=["Billing Error", "Other"]) == [numbers[2], numbers[0]]
        assert await self.search(api, service, consumer=account) == [numbers[2], numbers[1], numbers[0]]
        assert await self.search(api, service, **mine, remaining="fully_used") == [numbers[2]]
        assert await self.search(api, service, **mine, remaining="partial") == [numbers[1]]
        assert await self.search(api, service, **mine, remaining="full") == [numbers[0]]
        assert await self.search(api, service, receipt_number=receipts[1]) == [numbers[1]]
        assert await self.search(api, service, **mine, amount_min="15", amount_max="30.00") == [numbers[2], numbers[1]]

    async def test_ac38_invalid_filters_are_refused_naming_the_field(
        self, service: CreditNotesService, api: httpx.AsyncClient
    ) -> None:
        for params, field in (
            ({"created": "custom", "created_from": "2025-01-01"}, "created_to"),
            ({"created_from": "2025-02-01", "created_to": "2025-01-01"}, "created_from"),
            ({"amount_min": "ten"}, "amount_min"),
            ({"amount_min": "-1"}, "amount_min"),
            ({"amount_min": "20", "amount_max": "10"}, "amount_min"),
            ({"status": "Pending"}, "status"),
            ({"remaining": "some"}, "remaining"),
        ):
            response = await api.get("/credit-notes", params=params, headers=auth(service))
            assert response.status_code == 422, params
            body = response.json()
            assert body.get("field") == field or body["errors"][0]["field"].endswith(field), (params, body)

    async def test_cursor_paging_visits_every_match_once(
        self, infra: Infra, service: CreditNotesService, api: httpx.AsyncClient
    ) -> None:
        account, _name, _receipts, numbers = await self.given_notes(infra, service, api)
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, str | int] = {"q": account, "limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await api.get("/credit-notes", params=params, headers=auth(service))).json()
            seen += [item["credit_note_number"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == list(reversed(numbers))
        oldest = (
            await api.get("/credit-notes", params={"q": account, "limit": 2, "order": "oldest"}, headers=auth(service))
        ).json()
        assert [item["credit_note_number"] for item in oldest["items"]] == numbers[:2]
        rest = await api.get(
            "/credit-notes",
            params={"q": account, "limit": 2, "order": "oldest", "cursor": oldest["next_cursor"]},
            headers=auth(service),
        )
        assert [item["credit_note_number"] for item in rest.json()["items"]] == numbers[2:]
        for cursor_of_the_other_order in ("garbage", oldest["next_cursor"]):
            bad = await api.get("/credit-notes", params={"cursor": cursor_of_the_other_order}, headers=auth(service))
            assert (bad.status_code, bad.json()["field"]) == (422, "cursor")

    async def test_export_of_the_filtered_list_as_csv_and_xlsx(
        self, infra: Infra, service: CreditNotesService, api: httpx.AsyncClient
    ) -> None:
        account, _name, receipts, numbers = await self.given_notes(infra, service, api)
        response = await api.get(
            "/credit-notes/export", params={"q": account, "status": "Active", "format": "csv"}, headers=auth(service)
        )
        assert response.headers["content-type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(response.text)))
        assert rows[0][:4] == ["Credit Note #", "Consumer", "Account Number", "Amount"]
        assert [(r[0], r[3], r[4], r[7], r[9]) for r in rows[1:]] == [
            (numbers[1], "20.00", "10.00", "Active", receipts[1]),
            (numbers[0], "10.00", "10.00", "Active", receipts[0]),
        ]
        xlsx = await api.get("/credit-notes/export", params={"q": account, "format": "xlsx"}, headers=auth(service))
        assert xlsx.status_code == 200 and "attachment" in xlsx.headers["content-disposition"]
        with zipfile.ZipFile(io.BytesIO(xlsx.content)) as book:
            sheet = book.read("xl/worksheets/sheet1.xml").decode()
        assert all(number in sheet for number in numbers)
        assert sheet.count("<row ") == 4, "a header and three credit notes"


class TestDetailAuditAndSettings:
    async def test_ac39_detail_view_has_header_consumer_dates_financials_reason_creator_and_linked_payment(
        self, infra: Infra, service: CreditNotesService, api: httpx.AsyncClient
    ) -> None:
        account = unique_account()
        day = unique_day()
        receipt = await given_payment(infra, service, account, amount="150.00", consumer_name="John Doe", day=day)
        created = await issue(
            api,
            service,
            receipt,
            amount="4.50",
            reason="Overpayment",
            remarks="Customer overpaid due to billing adjustment",
        )
        number = created.json()["credit_note_number"]
        invoice = await given_bill(infra, service, account, "152.25")
        await apply(api, service, number, invoice, "1.50")
        detail = (await api.get(f"/credit-notes/{number}", headers=auth(service, Role.BILLING_MANAGER))).json()
        assert (detail["credit_note_number"], detail["status"]) == (number, "Active")
        assert detail["consumer"] == {"name": "John Doe", "account_number": account}
        assert detail["dates"]["created_at"] == created.json()["created_at"]
        assert detail["dates"]["expires_at"] == created.json()["expires_at"]
        assert detail["financial"] == {
            "currency": "USD",
            "original_amount": "4.50",
            "applied_amount": "1.50",
            "remaining_balance": "3.00",
            "voided_amount": "0.00",
            "refunded_amount": "0.00",
            "usage_percentage": "33.3",
            "original_amount_display": "$4.50",
            "applied_amount_display": "$1.50",
            "remaining_balance_display": "$3.00",
        }
        assert (detail["reason"], detail["created_by"]) == ("Overpayment", "Jane Smith")
        assert detail["remarks"] == "Customer overpaid due to billing adjustment"
        assert detail["linked_payment"] == {
            "receipt_number": receipt,
            "payment_id": f"PAY-{receipt}",
            "amount": "150.00",
            "payment_date": day.isoformat(),
            "method": "Cash",
        }
        assert [(a["item_reference"], a["amount"]) for a in detail["applications"]] == [(invoice, "1.50")]
        missing = await api.get("/credit-notes/CN-0", headers=auth(service))
        assert missing.status_code == 404

    async def test_ac43_audit_trail_records_creation_application_and_expiry(
        self, infra: Infra, service: CreditNotesService, api: httpx.AsyncClient
    ) -> None:
        account = unique_account()
        number = await given_credit_note(infra, service, api, account, "8.00")
        invoice = await given_bill(infra, service, account, "50.00")
        await apply(api, service, number, invoice, "3.00")
        async with service.sessions() as session, session.begin():
            await session.execute(
                update(credit_notes)
                .where(credit_notes.c.credit_note_number == number)
                .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
        await service.expire_now()
        trail = (await api.get(f"/credit-notes/{number}/history", headers=auth(service))).json()
        assert [(e["action"], e["actor"]) for e in trail] == [
            ("credit_note.issued", "Jane Smith"),
            ("credit_note.applied", "Jane Smith"),
            ("credit_note.expired", "System"),
        ]
        issued, applied, expired = trail
        assert issued["before"] is None and issued["after"]["amount"] == "8.00"
        assert issued["after"]["reason"] == "Billing Error"
        assert applied["before"] == {"applied": "0.00", "remaining": "8.00", "status": "Active"}
        assert (applied["after"]["remaining"], applied["after"]["item_reference"]) == ("5.00", invoice)
        assert (expired["before"]["status"], expired["after"]["status"]) == ("Active", "Expired")
        assert all(e["at"] for e in trail)

    async def test_ac44_admin_configures_the_expiry_period_and_reasons(
        self, infra: Infra, service: CreditNotesService, api: httpx.AsyncClient
    ) -> None:
        admin = auth(service, Role.ADMIN, user="Ada Admin")
        original = (await api.get("/settings/credit-notes", headers=auth(service))).json()
        assert original == {
            "expiry": {"count": 1, "unit": "years"},
            "reasons": [
                "Overpayment",
                "Duplicate Payment",
                "Billing Error",
                "Billing Adjustment",
                "Refund Request",
                "Customer Request",
                "Other",
            ],
            "approval_limit": "500.00",
            "auto_apply_credit": "off",
        }
        changed = {
            "expiry": {"count": 90, "unit": "days"},
            "reasons": [*original["reasons"], "Goodwill"],
            "approval_limit": "250.00",
            "auto_apply_credit": "off",
        }
        forbidden = await api.put("/settings/credit-notes", json=changed, headers=auth(service, Role.BILLING_MANAGER))
        assert forbidden.status_code == 403
        try:
            assert (await api.put("/settings/credit-notes", json=changed, headers=admin)).json() == changed
            receipt = await given_payment(infra, service, unique_account(), amount="10.00")
            response = await issue(api, service, receipt, amount="1.00", reason="Goodwill")
            assert response.status_code == 201, response.text
            created = datetime.fromisoformat(response.json()["created_at"])
            assert datetime.fromisoformat(response.json()["expires_at"]) == created + timedelta(days=90)
            invalid = await api.put("/settings/credit-notes", json={**changed, "reasons": ["Goodwill"]}, headers=admin)
            assert (invalid.status_code, invalid.json()["code"]) == (422, "overpayment_reason_required")
        finally:
            restored = await api.put("/settings/credit-notes", json=original, headers=admin)
            assert restored.status_code == 200
        async with service.sessions() as session:
            changes = (
                await session.execute(
                    select(audit_log)
                    .where(audit_log.c.subject == "credit_notes", audit_log.c.actor == "Ada Admin")
                    .order_by(audit_log.c.at.desc())
                    .limit(2)
                )
            ).all()
        latest, before_it = changes
        assert (before_it.before, before_it.after) == (original, changed), "ac43: settings changes are audited"
        assert (latest.before, latest.after) == (changed, original)
        trail = await api.get("/settings/credit-notes/history", headers=admin)
        assert [(e["before"], e["after"]) for e in trail.json()[-2:]] == [(original, changed), (changed, original)]
        staff = await api.get("/settings/credit-notes/history", headers=auth(service))
        assert staff.status_code == 403
