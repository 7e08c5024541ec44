"""Receipts on the real broker and database: documents follow the events, once per number, whatever the order."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from services.receipts.app import ReceiptsService
from services.receipts.app import create_service as create_receipts
from services.receipts.commands import Renderings, render_pending
from services.receipts.domain import Document
from services.receipts.settings import ReceiptsSettings
from services.receipts.storage import documents
from shared.auth import Role, mint_token
from shared.contracts import Envelope, Topic, new_envelope
from shared.contracts.events import Money, PaymentCancelled, PaymentStatusChanged
from shared.service import Service
from tests.conftest import Infra
from tests.support.helpers import (
    eventually,
    payment_posted,
    pdf_text,
    publish,
    read_topic,
    running,
    settled,
    unique_account,
    unique_day,
)
from tests.support.receipts import credit_note_issued

pytestmark = pytest.mark.kafka

# A day no other test uses: kpi's tests (and the e2e run) total payments by day and month on the same topic.
DAY = unique_day()


@pytest.fixture(scope="module")
async def receipts(infra: Infra) -> AsyncIterator[Service]:
    settings = ReceiptsSettings(
        database_url=infra.database_url, kafka_bootstrap_servers=infra.bootstrap_servers, development=True
    )
    async with running(create_receipts(settings), catch_up=True) as service:
        yield service


def staff(service: Service, role: Role) -> dict[str, str]:
    token = mint_token(service.settings.jwt_secret.get_secret_value(), user="Casey Clerk", roles=[role])
    return {"Authorization": f"Bearer {token}"}


def http(service: Service) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=service.http), base_url="http://receipts")


async def stored(service: Service, kind: str, number: str) -> dict[str, Any]:
    """The stored document, rendered or not, or an empty dict (falsy, for `eventually`) while there is none."""
    async with service.sessions() as session:
        row = (
            (await session.execute(select(documents).where(documents.c.kind == kind, documents.c.number == number)))
            .mappings()
            .first()
        )
    return dict(row) if row else {}


async def document(service: Service, kind: str, number: str) -> dict[str, Any]:
    """The stored document once the render worker has stored its PDF, or an empty dict while it has not."""
    row = await stored(service, kind, number)
    return row if row and row["pdf"] is not None else {}


async def at_revision(service: Service, kind: str, number: str, revision: int) -> dict[str, Any]:
    row = await document(service, kind, number)
    return row if row and row["revision"] >= revision else {}


def status_changed(account: str, number: int, status: str, at: datetime) -> Envelope:
    data = PaymentStatusChanged(
        payment_id=f"PAY-T-{account}-{number}",
        receipt_number=f"R-T-{account}-{number}",
        account_number=account,
        previous_status="Posted",
        status=status,
        changed_at=at,
    )
    return new_envelope("payment.status_changed", source="payments", subject=account, data=data)


def cancelled(account: str, number: int, at: datetime) -> Envelope:
    data = PaymentCancelled(
        payment_id=f"PAY-T-{account}-{number}",
        receipt_number=f"R-T-{account}-{number}",
        account_number=account,
        amount=Money(amount=Decimal("20.00")),
        reason="Entered twice",
        cancelled_by="Ada Admin",
        cancelled_at=at,
    )
    return new_envelope("payment.cancelled", source="payments", subject=account, data=data)


async def rendered_events(infra: Infra, number: str, kind: str = "receipt.rendered") -> list[Envelope]:
    records = await read_topic(infra.bootstrap_servers, Topic.RECEIPTS_EVENTS)
    envelopes = [Envelope.model_validate_json(r.value) for r in records]
    return [e for e in envelopes if e.type == kind and e.data["number"] == number]


async def available_events(infra: Infra, number: str) -> list[Envelope]:
    return await rendered_events(infra, number, "receipt.available")


async def test_ac11_each_posted_payment_gets_one_receipt_under_its_own_number(infra: Infra, receipts: Service) -> None:
    """INVARIANT: a redelivered or republished payment.posted never makes a second document or rendering."""
    account = unique_account()
    first, second = payment_posted(account, "20.00", DAY, number=1), payment_posted(account, "35.10", DAY, number=2)
    republished = first.model_copy(update={"id": payment_posted(account, "20.00", DAY, number=1).id})
    await publish(infra.bootstrap_servers, Topic.PAYMENTS_EVENTS, [first, second, first, republished])

    one = await eventually(lambda: document(receipts, "receipt", f"R-T-{account}-1"))
    two = await eventually(lambda: document(receipts, "receipt", f"R-T-{account}-2"))
    assert Document.from_json(one["content"]).line("Amount paid") == "$20.00"
    assert Document.from_json(two["content"]).line("Amount paid") == "$35.10"
    events = await eventually(lambda: rendered_events(infra, f"R-T-{account}-2"))
    await settled(receipts)  # the redelivered and republished payment consumed, any rendering published
    assert [e.data["revision"] for e in await rendered_events(infra, f"R-T-{account}-1")] == [1]
    assert events[0].data["sha256"] == two["sha256"] and events[0].data["document_hash"] == two["document_hash"]
    assert (await document(receipts, "receipt", f"R-T-{account}-1"))["revision"] == 1


async def test_ac13_staff_download_the_receipt_pdf_and_open_its_print_view(infra: Infra, receipts: Service) -> None:
    account = unique_account()
    number = f"R-T-{account}-1"
    await publish(infra.bootstrap_servers, Topic.PAYMENTS_EVENTS, [payment_posted(account, "20.00", DAY, number=1)])
    stored = await eventually(lambda: document(receipts, "receipt", number))

    async with http(receipts) as client:
        # Every staff role; a customer or a payee is not staff.
        for role in (r for r in Role if r not in (Role.CUSTOMER, Role.PAYEE)):
            pdf = await client.get(f"/receipts/{number}.pdf", headers=staff(receipts, role))
            assert pdf.status_code == 200, (role, pdf.text)
        # A customer's token is not a staff token: the staff route refuses it whatever its account.
        secret = receipts.settings.jwt_secret.get_secret_value()
        customer = mint_token(secret, user="Casey", roles=[Role.CUSTOMER], account_number=account)
        refused = await client.get(f"/receipts/{number}.pdf", headers={"Authorization": f"Bearer {customer}"})
        assert refused.status_code == 403
        assert pdf.headers["content-type"] == "application/pdf"
        assert pdf.headers["content-disposition"] == f'inline; filename="{number}.pdf"'
        assert pdf.content == bytes(stored["pdf"])
        text = pdf_text(pdf.content)
        assert f"Receipt number {number}" in text and stored["document_hash"] in text

        download = await client.get(f"/receipts/{number}.pdf?download=true", headers=staff(receipts, Role.ADMIN))
        assert download.headers["content-disposition"] == f'attachment; filename="{number}.pdf"'

        view = await client.get(f"/receipts/{number}", headers=staff(receipts, Role.CUSTOMER_EXECUTIVE))
        assert view.status_code == 200 and view.headers["content-type"].startswith("text/html")
        assert f"<td>{number}</td>" in view.text and stored["document_hash"] in view.text
        assert "@media print" in view.text

        assert (await client.get(f"/receipts/{number}.pdf")).status_code == 401
        missing = await client.get("/receipts/R-NOPE.pdf", headers=staff(receipts, Role.ADMIN))
        assert missing.status_code == 404 and missing.json()["code"] == "receipt_not_found"


async def test_ac39_a_credit_note_issued_before_its_payment_is_posted_is_on_one_receipt_and_prints(
    infra: Infra, receipts: Service
) -> None:
    """INVARIANT: cross-topic order never yields two receipts, or a receipt that forgot its credit note."""
    account = unique_account()
    posted = payment_posted(account, "20.00", DAY, number=1)
    number, cn = f"R-T-{account}-1", f"CN-T-{account}"
    await publish(
        infra.bootstrap_servers,
        Topic.CREDITNOTES_EVENTS,
        [credit_note_issued(account, number, f"PAY-T-{account}-1", cn)],
    )
    await eventually(lambda: document(receipts, "credit_note", cn))
    assert await document(receipts, "receipt", number) == {}, "no receipt before the payment is posted"

    await publish(infra.bootstrap_servers, Topic.PAYMENTS_EVENTS, [posted])
    receipt = await eventually(lambda: document(receipts, "receipt", number))
    assert Document.from_json(receipt["content"]).line("Credit note generated") == f"{cn} ($4.50)"
    assert receipt["revision"] == 1, "rendered once, already knowing its credit note"

    async with http(receipts) as client:
        response = await client.get(f"/credit-notes/{cn}.pdf", headers=staff(receipts, Role.BILLING_MANAGER))
    assert response.status_code == 200 and response.headers["content-type"] == "application/pdf"
    text = pdf_text(response.content)
    for line in (f"Credit note number {cn}", "Credit amount $4.50", "Reason Overpayment", f"Linked receipt {number}"):
        assert line in text, text
    assert "Status Active" in text and "System stamp" in text


async def test_credit_notes_and_payments_arriving_together_always_meet_on_the_receipt(
    infra: Infra, receipts: Service
) -> None:
    """INVARIANT: the two consumers racing on one receipt never lose the credit note (advisory lock)."""
    account = unique_account()
    pairs = range(1, 9)
    notes = [
        credit_note_issued(account, f"R-T-{account}-{n}", f"PAY-T-{account}-{n}", f"CN-T-{account}-{n}") for n in pairs
    ]
    payments = [payment_posted(account, "20.00", DAY, number=n) for n in pairs]
    await asyncio.gather(
        publish(infra.bootstrap_servers, Topic.CREDITNOTES_EVENTS, notes),
        publish(infra.bootstrap_servers, Topic.PAYMENTS_EVENTS, payments),
    )

    async def all_name_their_note() -> bool:
        for n in pairs:
            row = await document(receipts, "receipt", f"R-T-{account}-{n}")
            if not row or Document.from_json(row["content"]).line("Credit note generated") == "None":
                return False
        return True

    await eventually(all_name_their_note)


async def test_a_status_change_delivered_twice_renders_once_and_a_cancellation_voids_the_receipt(
    infra: Infra, receipts: Service
) -> None:
    """INVARIANT: a duplicate fact (even under a new event id) never makes a new revision; VOID is final."""
    account = unique_account()
    number = f"R-T-{account}-1"
    posted = payment_posted(account, "20.00", DAY, number=1)
    later = datetime.now(UTC) + timedelta(minutes=5)
    refunded = status_changed(account, 1, "Refunded", later)
    refunded_again = status_changed(account, 1, "Refunded", later)  # same fact, new event id
    stale = status_changed(account, 1, "Pending", later - timedelta(minutes=1))
    await publish(
        infra.bootstrap_servers,
        Topic.PAYMENTS_EVENTS,
        [posted, refunded, refunded, refunded_again, stale, cancelled(account, 1, later + timedelta(minutes=1))],
    )
    final = await eventually(lambda: at_revision(receipts, "receipt", number, 3))
    content = Document.from_json(final["content"])
    assert final["revision"] == 3, "posted, refunded, cancelled: three revisions, no more"
    assert content.void and content.line("Status") == "Cancelled" and content.line("Cancelled by") == "Ada Admin"
    assert "VOID" in pdf_text(bytes(final["pdf"]))
    revisions = await eventually(lambda: _revisions_when(infra, number, 3))
    assert revisions == [1, 2, 3]
    # The worker renders what a document says when its turn comes: a revision superseded before that is skipped,
    # but none is rendered twice, and the last one always is.
    rendered = [e.data["revision"] for e in await rendered_events(infra, number)]
    assert rendered == sorted(set(rendered)) and rendered[-1] == 3
    assert [e.data["sha256"] for e in await rendered_events(infra, number)][-1] == final["sha256"]


async def _revisions_when(infra: Infra, number: str, count: int) -> list[int] | None:
    revisions = sorted(e.data["revision"] for e in await available_events(infra, number))
    return revisions if len(revisions) >= count else None


async def test_a_receipt_is_available_before_it_is_rendered_and_the_worker_stores_the_same_bytes(
    infra: Infra, receipts: Service
) -> None:
    """INVARIANT: the PDF served on demand and the one the render worker stores are the same file."""
    account = unique_account()
    number = f"R-T-{account}-1"
    await publish(infra.bootstrap_servers, Topic.PAYMENTS_EVENTS, [payment_posted(account, "20.00", DAY, number=1)])
    [available] = await eventually(lambda: available_events(infra, number))
    row = await stored(receipts, "receipt", number)
    assert available.data["document_hash"] == row["document_hash"] and available.data["revision"] == 1
    assert available.data["status"] == "Posted" and available.data["account_number"] == account

    async with http(receipts) as client:  # whether or not the worker got there first
        served = await client.get(f"/receipts/{number}.pdf", headers=staff(receipts, Role.CUSTOMER_EXECUTIVE))
    assert served.status_code == 200 and served.headers["x-document-hash"] == row["document_hash"]
    assert f"Receipt number {number}" in pdf_text(served.content)

    rendered = await eventually(lambda: document(receipts, "receipt", number))
    assert bytes(rendered["pdf"]) == served.content
    assert served.headers["etag"] == f'"{rendered["sha256"]}"'
    [event] = await eventually(lambda: rendered_events(infra, number))
    assert event.data["sha256"] == rendered["sha256"] and event.data["revision"] == 1


async def test_content_that_changes_while_it_is_rendered_is_left_for_the_next_pass(
    infra: Infra, receipts: Service
) -> None:
    """INVARIANT: a stored file always says what its row says: a render of older content is never stored."""
    assert isinstance(receipts, ReceiptsService)
    await receipts.render_worker.stop()  # this test plays the worker itself, one pass at a time
    try:
        account = unique_account()
        number = f"R-T-{account}-1"
        await publish(infra.bootstrap_servers, Topic.PAYMENTS_EVENTS, [payment_posted(account, "20.00", DAY, number=1)])
        waiting = await eventually(lambda: stored(receipts, "receipt", number))
        assert waiting["pdf"] is None and waiting["sha256"] is None, "nothing renders it while the worker is away"

        async with http(receipts) as client:  # available all the same: rendered on demand, nothing written
            served = await client.get(f"/receipts/{number}.pdf", headers=staff(receipts, Role.BILLING_MANAGER))
        assert served.status_code == 200 and f"Receipt number {number}" in pdf_text(served.content)
        assert (await stored(receipts, "receipt", number))["pdf"] is None

        held = _HeldRenderings(receipts.renderings)
        first_pass = asyncio.create_task(render_pending(receipts.sessions, held, batch=500))
        await eventually(lambda: _true(held.started.is_set()))
        # While the pass renders revision 1, the payment is cancelled: revision 2 says VOID.
        await publish(
            infra.bootstrap_servers, Topic.PAYMENTS_EVENTS, [cancelled(account, 1, datetime.now(UTC) + timedelta(1))]
        )
        await eventually(lambda: _at_stored_revision(receipts, number, 2))
        held.go.set()
        await first_pass
        after_first = await stored(receipts, "receipt", number)
        assert after_first["pdf"] is None and after_first["revision"] == 2, "the render of revision 1 was dropped"

        await render_pending(receipts.sessions, receipts.renderings, batch=500)
        final = await document(receipts, "receipt", number)
        assert final["revision"] == 2 and "VOID" in pdf_text(bytes(final["pdf"]))
        assert bytes(final["pdf"]) != served.content
        events = await eventually(lambda: rendered_events(infra, number))
        assert [e.data["revision"] for e in events] == [2] and events[0].data["sha256"] == final["sha256"]
    finally:
        receipts.render_worker.start()


async def _true(value: bool) -> bool:
    return value


async def _at_stored_revision(service: Service, number: str, revision: int) -> bool:
    row = await stored(service, "receipt", number)
    return bool(row) and row["revision"] == revision


class _HeldRenderings(Renderings):
    """The service's renderings, held mid-render until the test says go."""

    def __init__(self, inner: Renderings) -> None:
        super().__init__(inner.renderer)
        self.started = threading.Event()
        self.go = threading.Event()

    def render_all(self, batch: list[Document]) -> list[bytes]:
        self.started.set()
        assert self.go.wait(timeout=300), "the test never let the render finish"
        return super().render_all(batch)
