"""Every change to money already posted, on the real database and broker, with payments, credit_notes, receipts and
kpi all running: the state of each service is asserted once the events have settled.

Paths: reversal propagates (cancel, full and partial refund), disputes to the end (staff and Stripe), adjustments
with approval (and manual credit notes above the limit), the account's credit balance (auto-apply, credit refund).
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from services.credit_notes.app import create_service as create_credit_notes
from services.credit_notes.settings import CreditNotesSettings
from services.kpi.app import create_service as create_kpi
from services.kpi.settings import KpiSettings
from services.kpi.storage import daily_events
from services.kpi.storage import payments as kpi_payments
from services.payments.app import create_service as create_payments
from services.payments.settings import PaymentsSettings
from services.payments.storage import audit_log, receivables
from services.receipts.app import create_service as create_receipts
from services.receipts.settings import ReceiptsSettings
from services.receipts.storage import documents
from shared.auth import Role, mint_token
from shared.contracts import Envelope, Topic, new_envelope
from shared.contracts.events import BillIssued, GatewayPaymentStatusChanged, Money, PaymentType
from shared.service import Service
from tests.conftest import Infra
from tests.support.helpers import eventually, publish, read_topic
from tests.support.payments import billing_events, year_of

pytestmark = pytest.mark.kafka
D = Decimal
SECRET = "money-safety-test-secret-long-enough-for-hs256"
# The machine is shared: the bound is generous, and every wait is on a condition, never on a time budget.
SETTLE = 120.0


@dataclass
class Desk:
    payments: Service
    credit_notes: Service
    receipts: Service
    kpi: Service
    clients: dict[str, httpx.AsyncClient]
    bootstrap: str

    def auth(self, role: Role = Role.CUSTOMER_EXECUTIVE, user: str = "Jane Smith") -> dict[str, str]:
        return {"Authorization": f"Bearer {mint_token(SECRET, user=user, roles=[role])}"}

    def writer(self, role: Role = Role.CUSTOMER_EXECUTIVE, user: str = "Jane Smith") -> dict[str, str]:
        return self.auth(role, user) | {"Idempotency-Key": f"key-{uuid.uuid4().hex}"}

    async def call(
        self, service: str, method: str, path: str, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        return await self.clients[service].request(method, path, headers=headers or self.auth(), **kwargs)

    async def json(self, service: str, path: str, role: Role = Role.CUSTOMER_EXECUTIVE) -> dict[str, Any]:
        response = await self.call(service, "GET", path, headers=self.auth(role))
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def outstanding(self, reference: str) -> Decimal | None:
        """What payments says the item owes; None until payments has heard of it."""
        async with self.payments.sessions() as session:
            value = (
                await session.execute(
                    select(receivables.c.outstanding).where(receivables.c.item_reference == reference)
                )
            ).scalar_one_or_none()
        return None if value is None else D(value)

    async def kpi_payment(self, payment_id: str) -> Any:
        async with self.kpi.sessions() as session:
            return (await session.execute(select(kpi_payments).where(kpi_payments.c.payment_id == payment_id))).first()

    async def receipt_document(self, kind: str, number: str) -> dict[str, Any] | None:
        async with self.receipts.sessions() as session:
            row = (
                await session.execute(
                    select(documents.c.content).where(documents.c.kind == kind, documents.c.number == number)
                )
            ).first()
        return dict(row.content) if row else None


def _settings(infra: Infra) -> dict[str, Any]:
    return {
        "database_url": infra.database_url,
        "kafka_bootstrap_servers": infra.bootstrap_servers,
        "jwt_secret": SECRET,
        "outbox_poll_seconds": 0.05,
    }


@pytest.fixture(scope="module")
async def desk(infra: Infra) -> AsyncIterator[Desk]:
    services = {
        "payments": create_payments(PaymentsSettings(**_settings(infra))),
        "credit_notes": create_credit_notes(CreditNotesSettings(**_settings(infra))),
        "receipts": create_receipts(ReceiptsSettings(**_settings(infra))),
        "kpi": create_kpi(KpiSettings(**_settings(infra))),
    }
    started: list[Service] = []
    clients: dict[str, httpx.AsyncClient] = {}
    try:
        for service in services.values():
            await service.start()
            started.append(service)
        for name, service in services.items():
            transport = httpx.ASGITransport(app=service.http)
            clients[name] = httpx.AsyncClient(transport=transport, base_url=f"http://{name}", timeout=60)
        yield Desk(**services, clients=clients, bootstrap=infra.bootstrap_servers)
    finally:
        for client in clients.values():
            await client.aclose()
        for service in reversed(started):
            await service.stop()


async def settled(check: Callable[[], Awaitable[Any]]) -> Any:
    return await eventually(check, within=SETTLE, interval=0.2)


async def new_account(desk: Desk) -> str:
    """A consumer with two bills, two service charges and a plan, known to payments and credit_notes."""
    account = f"M-{uuid.uuid4().hex[:10].upper()}"
    await publish(desk.bootstrap, Topic.BILLING_RECEIVABLES, billing_events(account, f"Money Safety {account[-4:]}"))

    async def known() -> bool:
        response = await desk.call("payments", "GET", f"/consumers/{account}")
        return response.status_code == 200 and len(response.json()["unpaid_services"]) == 2

    await settled(known)
    return account


async def pay(desk: Desk, account: str, reference: str, amount: str, *, kind: str = "service") -> dict[str, Any]:
    body = {
        "account_number": account,
        "payment_type": kind,
        "item_reference": reference,
        "method": "Cash",
        "amount": amount,
        "cash_received": amount,
        "payment_date": f"{year_of(account)}-04-20",
    }
    response = await desk.call("payments", "POST", "/payments", headers=desk.writer(), json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def credit_note_of(desk: Desk, receipt: str) -> dict[str, Any]:
    async def found() -> dict[str, Any] | None:
        items = (await desk.json("credit_notes", f"/credit-notes?receipt_number={receipt}"))["items"]
        return items[0] if items else None

    summary = await settled(found)
    return await desk.json("credit_notes", f"/credit-notes/{summary['credit_note_number']}")


async def collected_on(desk: Desk, payment_id: str) -> Decimal | None:
    row = await desk.kpi_payment(payment_id)
    return None if row is None else (D(row.amount) if row.counted else D(0))


async def audit_actions(desk: Desk, subject: str) -> list[str]:
    async with desk.payments.sessions() as session:
        rows = await session.execute(select(audit_log.c.action).where(audit_log.c.subject == subject))
        return [r for (r,) in rows]


class TestReversalPropagates:
    async def test_cancelling_an_overpaid_payment_voids_its_credit_and_reverses_what_the_credit_paid(
        self, desk: Desk
    ) -> None:
        """INVARIANT: money received once never settles two items: a cancelled payment's credit is void, and what
        it had paid elsewhere is owed again, in every service."""
        account = await new_account(desk)
        late_fee, bill = f"SC-{account}-2", f"INV-{account}-1"
        payment = await pay(desk, account, late_fee, "30.00")
        note = await credit_note_of(desk, payment["receipt_number"])
        number = note["credit_note_number"]
        applied = await desk.call(
            "credit_notes",
            "POST",
            f"/credit-notes/{number}/apply",
            headers=desk.writer(),
            json={"payment_type": "bill", "item_reference": bill},
        )
        assert applied.status_code == 200, applied.text
        await settled(lambda: _is(desk.outstanding(bill), D("140.50")))

        cancelled = await desk.call(
            "payments",
            "POST",
            f"/payments/{payment['payment_id']}/cancel",
            headers=desk.auth(Role.ADMIN),
            json={"reason": "Entered twice"},
        )
        assert cancelled.status_code == 200, cancelled.text

        # credit_notes: the note is Voided with nothing left, and it says why in its trail.
        voided = await settled(lambda: _voided(desk, number))
        assert (voided["financial"]["remaining_balance"], voided["financial"]["voided_amount"]) == ("0.00", "5.00")
        history = (await desk.call("credit_notes", "GET", f"/credit-notes/{number}/history")).json()
        assert any(e["action"] == "credit_note.voided" and "Entered twice" in e["reason"] for e in history)
        refused = await desk.call(
            "credit_notes",
            "POST",
            f"/credit-notes/{number}/apply",
            headers=desk.writer(),
            json={"payment_type": "bill", "item_reference": f"INV-{account}-2"},
        )
        assert (refused.status_code, refused.json()["code"]) == (422, "credit_note_voided")
        # payments: both items are owed again, the reversal in the audit trail, no credit on the account.
        await settled(lambda: _is(desk.outstanding(bill), D("145.50")))
        assert await desk.outstanding(late_fee) == D("25.00")
        assert "credit_note.reversed" in await audit_actions(desk, bill)
        consumer = await desk.json("payments", f"/consumers/{account}")
        assert consumer["available_credit"]["total"]["amount"] == "0.00"
        # receipts: the credit note and its line on the receipt say VOID.
        document = await settled(lambda: _void_document(desk, "credit_note", number))
        assert document["status"] == "Voided"
        receipt = await settled(lambda: _void_document(desk, "receipt", payment["receipt_number"]))
        assert f"{number} ($5.00) VOID" in _line(receipt, "Credit note generated")
        # kpi: the payment left the figures of its own period, and the application left the day it was counted.
        await settled(lambda: _is(collected_on(desk, payment["payment_id"]), D(0)))
        async with desk.kpi.sessions() as session:
            voided_events = (
                await session.execute(
                    select(func.sum(daily_events.c.count)).where(daily_events.c.event == "credit_notes_voided")
                )
            ).scalar_one()
        assert voided_events >= 1

    async def test_a_partial_refund_voids_credit_first_then_reduces_what_the_payment_settled(self, desk: Desk) -> None:
        """INVARIANT: what went back comes off the credit first, then off the item; never both, never twice."""
        account = await new_account(desk)
        bill = f"INV-{account}-1"
        intent = f"pi_{uuid.uuid4().hex[:16]}"
        start = datetime(year_of(account), 4, 18, 9, tzinfo=UTC)
        await publish(
            desk.bootstrap,
            Topic.GATEWAY_EVENTS,
            [
                _gateway(account, intent, "processing", start, amount="150.00"),
                _gateway(account, intent, "succeeded", start + timedelta(hours=1), amount="150.00"),
            ],
        )
        payment = await settled(lambda: _online(desk, account, "Posted"))
        note = await credit_note_of(desk, payment["receipt_number"])
        assert note["financial"]["original_amount"] == "4.50"
        await settled(lambda: _is(desk.outstanding(bill), D("0.00")))

        refund = _gateway(account, intent, "partially_refunded", start + timedelta(days=1), refunded="10.00")
        await publish(desk.bootstrap, Topic.GATEWAY_EVENTS, [refund])
        await settled(lambda: _is(desk.outstanding(bill), D("5.50")))
        voided = await settled(lambda: _voided(desk, note["credit_note_number"]))
        assert voided["financial"]["voided_amount"] == "4.50"
        expected = {
            "applied": {"amount": "140.00", "currency": "USD", "display": "$140.00"},
            "credited": {"amount": "0.00", "currency": "USD", "display": "$0.00"},
            "refunded": {"amount": "10.00", "currency": "USD", "display": "$10.00"},
        }

        async def ledger() -> dict[str, Any]:
            return dict((await desk.json("payments", f"/payments/{payment['payment_id']}"))["ledger"])

        # payments learns of the voided credit from credit_notes' event, after it applied the refund itself.
        await settled(lambda: _is(ledger(), expected))
        await settled(lambda: _is(collected_on(desk, payment["payment_id"]), D("140.00")))

        full = _gateway(account, intent, "refunded", start + timedelta(days=2), refunded="150.00")
        await publish(desk.bootstrap, Topic.GATEWAY_EVENTS, [full])
        refunded = await settled(lambda: _online(desk, account, "Refunded"))
        assert refunded["payment_information"]["settlement_status"] == "N/A", "refunded money is not settled"
        await settled(lambda: _is(desk.outstanding(bill), D("145.50")))
        await settled(lambda: _is(collected_on(desk, payment["payment_id"]), D(0)))


class TestDisputes:
    async def test_a_staff_dispute_with_evidence_moves_open_under_review_lost_and_is_reversed_like_a_refund(
        self, desk: Desk
    ) -> None:
        account = await new_account(desk)
        fee = f"SC-{account}-1"
        payment = await pay(desk, account, fee, "75.00")
        evidence = base64.b64encode(b"%PDF-1.4 bank letter").decode()
        opened = await desk.call(
            "payments",
            "POST",
            f"/payments/{payment['payment_id']}/disputes",
            json={
                "reason": "Customer says the cheque bounced",
                "evidence_notes": "Called the bank",
                "attachments": [
                    {"filename": "letter.pdf", "content_type": "application/pdf", "content_base64": evidence}
                ],
            },
        )
        assert opened.status_code == 201, opened.text
        dispute = opened.json()
        assert (dispute["status"], dispute["source"], len(dispute["attachments"])) == ("Open", "staff", 1)
        file = await desk.call("payments", "GET", dispute["attachments"][0]["link"])
        assert file.content == b"%PDF-1.4 bank letter", "the evidence is kept in Postgres as it was uploaded"
        assert (await desk.json("payments", f"/payments/{payment['payment_id']}"))["status"] == "Disputed"
        await settled(lambda: _is(collected_on(desk, payment["payment_id"]), D("75.00")))  # disputed still counts

        review = await desk.call("payments", "POST", f"/disputes/{dispute['dispute_id']}/review", json={})
        assert review.json()["status"] == "Under review"
        lost = await desk.call("payments", "POST", f"/disputes/{dispute['dispute_id']}/close", json={"outcome": "lost"})
        assert (lost.json()["status"], lost.json()["outcome"]) == ("Lost", "lost")
        again = await desk.call("payments", "POST", f"/disputes/{dispute['dispute_id']}/close", json={"outcome": "won"})
        assert (again.status_code, again.json()["code"]) == (422, "dispute_closed")

        detail = await desk.json("payments", f"/payments/{payment['payment_id']}")
        assert detail["status"] == "Charged back"
        assert await desk.outstanding(fee) == D("75.00"), "a lost dispute is reversed like a refund"
        await settled(lambda: _is(collected_on(desk, payment["payment_id"]), D(0)))
        receipt = await settled(lambda: _receipt_status(desk, payment["receipt_number"], "Charged back"))
        assert receipt is not None

    async def test_a_stripe_dispute_won_counts_as_collected_again(self, desk: Desk) -> None:
        account = await new_account(desk)
        intent = f"pi_{uuid.uuid4().hex[:16]}"
        start = datetime(year_of(account), 4, 18, 9, tzinfo=UTC)
        dispute_id = f"dp_{uuid.uuid4().hex[:12]}"
        await publish(
            desk.bootstrap,
            Topic.GATEWAY_EVENTS,
            [
                _gateway(account, intent, "succeeded", start, amount="145.50"),
                _gateway(account, intent, "disputed", start + timedelta(days=1), dispute=dispute_id),
                _gateway(account, intent, "dispute_under_review", start + timedelta(days=2), dispute=dispute_id),
            ],
        )
        disputed = await settled(lambda: _online(desk, account, "Disputed"))
        assert disputed["disputes"][0]["status"] in ("Open", "Under review")
        await settled(lambda: _dispute_status(desk, disputed["payment_id"], "Under review"))
        await publish(
            desk.bootstrap,
            Topic.GATEWAY_EVENTS,
            [_gateway(account, intent, "dispute_won", start + timedelta(days=30), dispute=dispute_id)],
        )
        won = await settled(lambda: _online(desk, account, "Posted"))
        assert won["disputes"][0]["status"] == "Won" and won["disputes"][0]["source"] == "stripe"
        assert await desk.outstanding(f"INV-{account}-1") == D("0.00")
        await settled(lambda: _is(collected_on(desk, won["payment_id"]), D("145.50")))
        events = [e for e in await _payment_events(desk, account) if e.type.startswith("payment.dispute_")]
        assert [e.type for e in events] == ["payment.dispute_opened", "payment.dispute_closed"]


class TestAdjustments:
    async def test_a_move_under_the_limit_applies_at_once_and_reissues_the_receipt(self, desk: Desk) -> None:
        account = await new_account(desk)
        wrong, right = f"SC-{account}-2", f"SC-{account}-1"
        payment = await pay(desk, account, wrong, "25.00")
        await settled(lambda: _receipt_status(desk, payment["receipt_number"], "Posted"))
        moved = await desk.call(
            "payments",
            "POST",
            f"/payments/{payment['payment_id']}/adjustments",
            headers=desk.writer(),
            json={"kind": "move", "payment_type": "service", "item_reference": right, "reason": "Wrong fee"},
        )
        assert moved.status_code == 201, moved.text
        adjustment = moved.json()["adjustment"]
        assert adjustment["status"] == "Applied"
        assert adjustment["after"]["reversal"]["item_reference"] == wrong
        assert adjustment["after"]["allocation"]["item_reference"] == right
        assert (await desk.outstanding(wrong), await desk.outstanding(right)) == (D("25.00"), D("50.00"))
        assert (await audit_actions(desk, payment["payment_id"])).count("payment.adjusted") == 1

        versions = await settled(lambda: _versions(desk, payment["receipt_number"], 2))
        assert [v["status"] for v in versions["versions"]] == ["Superseded", "Current"]
        receipt = await desk.receipt_document("receipt", payment["receipt_number"])
        assert receipt is not None and _line(receipt, "Version") == "2"
        assert right in _line(receipt, "Service")
        await settled(lambda: _is(collected_on(desk, payment["payment_id"]), D("25.00")))

    async def test_above_the_limit_it_waits_for_a_billing_manager_who_is_not_the_requester(self, desk: Desk) -> None:
        """INVARIANT: no correction above the limit is applied on one person's word, and an approval applies once."""
        account = await new_account(desk)
        bill, other = f"INV-{account}-1", f"INV-{account}-2"
        payment = await pay(desk, account, bill, "145.50", kind="bill")
        requester = desk.writer(Role.BILLING_MANAGER, user="Mia Maker")
        asked = await desk.call(
            "payments",
            "POST",
            f"/payments/{payment['payment_id']}/adjustments",
            headers=requester,
            json={"kind": "move", "payment_type": "bill", "item_reference": other, "reason": "Paid the April bill"},
        )
        assert asked.status_code == 202, asked.text
        approval_id = asked.json()["adjustment"]["approval_id"]
        assert await desk.outstanding(bill) == D("0.00"), "nothing moves while it waits"
        waiting = await desk.json("payments", "/approvals", Role.BILLING_MANAGER)
        assert approval_id in [a["approval_id"] for a in waiting["approvals"]]

        own = await desk.call(
            "payments",
            "POST",
            f"/approvals/{approval_id}/approve",
            headers=desk.auth(Role.BILLING_MANAGER, user="Mia Maker"),
        )
        assert (own.status_code, own.json()["code"]) == (403, "own_request")

        async def approve(user: str) -> int:
            response = await desk.call(
                "payments",
                "POST",
                f"/approvals/{approval_id}/approve",
                headers=desk.auth(Role.BILLING_MANAGER, user=user),
            )
            return response.status_code

        outcomes = await asyncio.gather(approve("Cora Checker"), approve("Otto Other"))
        assert sorted(outcomes) == [200, 409]
        assert (await desk.outstanding(bill), await desk.outstanding(other)) == (D("145.50"), D("6.75"))
        assert (await audit_actions(desk, payment["payment_id"])).count("payment.adjusted") == 1
        events = [e for e in await _payment_events(desk, account) if e.type == "payment.adjusted"]
        assert len(events) == 1

    async def test_a_manual_credit_note_above_the_limit_is_pending_until_approved(self, desk: Desk) -> None:
        account = await new_account(desk)
        payment = await pay(desk, account, f"INV-{account}-2", "152.25", kind="bill")
        await settled(lambda: _credit_payment_known(desk, payment["receipt_number"]))
        admin = desk.auth(Role.ADMIN)
        policy = await desk.json("credit_notes", "/settings/credit-notes")
        lowered = await desk.call(
            "credit_notes", "PUT", "/settings/credit-notes", headers=admin, json={**policy, "approval_limit": "100.00"}
        )
        assert lowered.status_code == 200, lowered.text
        try:
            await self._pending_until_approved(desk, account, payment, "152.25")
        finally:
            await desk.call("credit_notes", "PUT", "/settings/credit-notes", headers=admin, json=policy)

    async def _pending_until_approved(self, desk: Desk, account: str, payment: dict[str, Any], amount: str) -> None:
        issued = await desk.call(
            "credit_notes",
            "POST",
            "/credit-notes",
            headers=desk.writer(user="Ken Clerk"),
            json={"receipt_number": payment["receipt_number"], "amount": amount, "reason": "Billing Error"},
        )
        assert issued.status_code == 201, issued.text
        number = issued.json()["credit_note_number"]
        assert issued.json()["status"] == "Pending approval"
        refused = await desk.call(
            "credit_notes",
            "POST",
            f"/credit-notes/{number}/apply",
            headers=desk.writer(),
            json={"payment_type": "bill", "item_reference": f"INV-{account}-1"},
        )
        assert (refused.status_code, refused.json()["code"]) == (422, "credit_note_pending_approval")
        pending = await desk.json("credit_notes", "/approvals", Role.BILLING_MANAGER)
        approval = next(a for a in pending["approvals"] if a["subject"] == number)
        approved = await desk.call(
            "credit_notes",
            "POST",
            f"/approvals/{approval['approval_id']}/approve",
            headers=desk.auth(Role.BILLING_MANAGER, user="Cora Checker"),
        )
        assert approved.status_code == 200, approved.text
        assert approved.json()["credit_note"]["status"] == "Active"
        # The credit came out of what the payment settled: the bill is owed again, never paid twice.
        await settled(lambda: _is(desk.outstanding(f"INV-{account}-2"), D("152.25")))
        consumer = await desk.json("payments", f"/consumers/{account}")
        assert consumer["available_credit"]["total"]["amount"] == "152.25"


class TestCreditBalance:
    async def test_credit_shows_on_the_account_pays_a_new_bill_by_itself_and_can_be_refunded(self, desk: Desk) -> None:
        account = await new_account(desk)
        first = await pay(desk, account, f"SC-{account}-2", "40.00")  # 15.00 over
        second = await pay(desk, account, f"SC-{account}-1", "80.00")  # 5.00 over
        notes = [await credit_note_of(desk, p["receipt_number"]) for p in (first, second)]

        async def credit_total() -> dict[str, Any] | None:
            consumer = await desk.json("payments", f"/consumers/{account}")
            total = consumer["available_credit"]["total"]["amount"]
            return consumer if total == "20.00" else None

        consumer = await settled(credit_total)
        assert [n["credit_note_number"] for n in consumer["available_credit"]["credit_notes"]] == [
            n["credit_note_number"] for n in notes
        ]
        assert all(n["expires_at"] for n in consumer["available_credit"]["credit_notes"])

        refunded = await desk.call(
            "credit_notes",
            "POST",
            f"/credit-notes/{notes[1]['credit_note_number']}/refund",
            headers=desk.auth(Role.BILLING_MANAGER),
            json={"reason": "Customer asked for the money back"},
        )
        assert refunded.status_code == 200, refunded.text
        assert refunded.json()["status"] == "Refunded"

        async def refund_requested() -> bool:
            events = await _events(desk, Topic.CREDITNOTES_EVENTS, account)
            return "credit_note.refund_requested" in [e.type for e in events]

        await settled(refund_requested)

        policy = await desk.json("credit_notes", "/settings/credit-notes")
        admin = desk.auth(Role.ADMIN)
        turned_on = await desk.call(
            "credit_notes",
            "PUT",
            "/settings/credit-notes",
            headers=admin,
            json={**policy, "auto_apply_credit": "oldest_first"},
        )
        assert turned_on.status_code == 200, turned_on.text
        try:
            invoice = f"INV-{account}-9"
            bill = BillIssued(
                account_number=account,
                invoice_number=invoice,
                billing_period=f"{year_of(account)}-06",
                amount=Money(amount=D("60.00")),
                issued_on=datetime(year_of(account), 6, 1).date(),
                due_date=datetime(year_of(account), 6, 15).date(),
            )
            envelope = new_envelope("bill.issued", source="billing", subject=account, data=bill)
            # Delivered twice (a producer retry under a new id): the bill is paid from credit once.
            again = envelope.model_copy(update={"id": uuid.uuid4()})
            await publish(desk.bootstrap, Topic.BILLING_RECEIVABLES, [envelope, again])
            await settled(lambda: _is(desk.outstanding(invoice), D("45.00")))
            used = await desk.json("credit_notes", f"/credit-notes/{notes[0]['credit_note_number']}")
            assert (used["status"], used["applications"][0]["automatic"]) == ("Applied", True)
            await settled(lambda: _is(_credit_total(desk, account), "0.00"))
            assert await desk.outstanding(invoice) == D("45.00")
        finally:
            restored = await desk.call(
                "credit_notes",
                "PUT",
                "/settings/credit-notes",
                headers=admin,
                json={**policy, "auto_apply_credit": "off"},
            )
            assert restored.status_code == 200


# --- helpers ---


async def _is(value: Awaitable[Any], expected: Any) -> bool:
    return bool(await value == expected)


async def _credit_total(desk: Desk, account: str) -> str:
    return str((await desk.json("payments", f"/consumers/{account}"))["available_credit"]["total"]["amount"])


async def _voided(desk: Desk, number: str) -> dict[str, Any] | None:
    note = await desk.json("credit_notes", f"/credit-notes/{number}")
    return note if note["status"] == "Voided" else None


async def _void_document(desk: Desk, kind: str, number: str) -> dict[str, Any] | None:
    document = await desk.receipt_document(kind, number)
    if document is None:
        return None
    if kind == "credit_note":
        return document if document["void"] else None
    return document if "VOID" in _line(document, "Credit note generated") else None


async def _receipt_status(desk: Desk, receipt: str, status: str) -> dict[str, Any] | None:
    document = await desk.receipt_document("receipt", receipt)
    return document if document and document["status"] == status else None


async def _versions(desk: Desk, receipt: str, current: int) -> dict[str, Any] | None:
    response = await desk.call("receipts", "GET", f"/receipts/{receipt}/versions")
    if response.status_code != 200 or response.json()["current_version"] != current:
        return None
    return dict(response.json())


async def _credit_payment_known(desk: Desk, receipt: str) -> bool:
    response = await desk.call("credit_notes", "GET", f"/credit-notes/payments/{receipt}")
    return response.status_code == 200


async def _online(desk: Desk, account: str, status: str) -> dict[str, Any] | None:
    rows = (await desk.json("payments", f"/payments?q={account}"))["payments"]
    if not rows:
        return None
    detail = await desk.json("payments", f"/payments/{rows[0]['payment_id']}")
    return detail if detail["status"] == status else None


async def _dispute_status(desk: Desk, payment_id: str, status: str) -> bool:
    detail = await desk.json("payments", f"/payments/{payment_id}")
    return bool(detail["disputes"]) and detail["disputes"][0]["status"] == status


async def _events(desk: Desk, topic: str, account: str) -> list[Envelope]:
    """The account's events on a topic (keyed by account; other tests also put malformed records there)."""
    records = await read_topic(desk.bootstrap, topic)
    return [Envelope.model_validate_json(r.value) for r in records if r.key == account.encode()]


async def _payment_events(desk: Desk, account: str) -> list[Envelope]:
    return await _events(desk, Topic.PAYMENTS_EVENTS, account)


def _line(document: dict[str, Any], label: str) -> str:
    for section in document["sections"]:
        for line in section["lines"]:
            if line["label"] == label:
                return str(line["value"])
    raise KeyError(label)


def _gateway(
    account: str,
    intent: str,
    status: str,
    at: datetime,
    *,
    amount: str = "150.00",
    refunded: str | None = None,
    dispute: str | None = None,
) -> Envelope:
    views = {
        "processing": ("Not Confirmed", "N/A"),
        "succeeded": ("In Settlement", "In Progress"),
        "partially_refunded": ("Partially Refunded", "N/A"),
        "refunded": ("Refunded", "N/A"),
        "disputed": ("Disputed", "N/A"),
        "dispute_under_review": ("Dispute Under Review", "N/A"),
        "dispute_won": ("Dispute Won", "N/A"),
        "dispute_lost": ("Dispute Lost", "N/A"),
    }
    webhook, settlement = views[status]
    data = GatewayPaymentStatusChanged(
        gateway_event_id=f"evt_{uuid.uuid4().hex[:12]}",
        payment_intent_id=intent,
        account_number=account,
        payment_type=PaymentType.BILL,
        item_reference=f"INV-{account}-1",
        amount=Money(amount=D(amount)),
        gateway_status=status,
        webhook_status=webhook,
        settlement_status=settlement,
        occurred_at=at,
        amount_refunded=Money(amount=D(refunded)) if refunded else None,
        dispute_id=dispute,
        dispute_reason="fraudulent" if dispute else None,
    )
    return new_envelope("gateway.payment_status_changed", source="gateway_bridge", subject=account, data=data)
