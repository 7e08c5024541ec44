"""Receipts' pure rules: what a receipt and a credit note say, and how their state moves with the events."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from services.receipts.domain import (
    CreditNoteActivity,
    Document,
    DocumentStyle,
    Letterhead,
    PaymentState,
    credit_note_document,
    credit_note_standing,
    first_sight,
    item_lines,
    receipt_document,
    state_when_posted,
)
from services.receipts.samples import (
    STYLE,
    sample_credit_note,
    sample_credit_note_document,
    sample_payment,
    sample_receipt_document,
    usd,
)
from shared.contracts.events import ItemSnapshot, PaymentType

T0 = datetime(2025, 4, 20, 14, 0, tzinfo=UTC)


def posted_state() -> PaymentState:
    return PaymentState(status="Posted", status_at=T0, verification="Verified")


class TestPaymentState:
    def test_a_later_status_replaces_the_current_one(self) -> None:
        assert posted_state().with_status("Refunded", T0 + timedelta(hours=1)).status == "Refunded"

    def test_an_older_status_report_changes_nothing(self) -> None:
        state = posted_state().with_status("Refunded", T0 + timedelta(hours=2))
        assert state.with_status("Pending", T0 + timedelta(hours=1)) == state

    def test_the_same_status_change_twice_is_the_same_state(self) -> None:
        once = posted_state().with_status("Refunded", T0 + timedelta(hours=1))
        assert once.with_status("Refunded", T0 + timedelta(hours=1)) == once

    def test_a_cancelled_payment_stays_void_whatever_status_comes_later(self) -> None:
        cancelled = posted_state().cancelled("Admin", "Duplicate entry", T0 + timedelta(hours=1))
        assert cancelled.void and cancelled.status == "Cancelled"
        assert cancelled.with_status("Posted", T0 + timedelta(days=3)) == cancelled

    def test_verification_records_who_verified_first(self) -> None:
        state = PaymentState(status="Posted", status_at=T0, verification="Pending")
        verified = state.verified("Bill Manager", T0 + timedelta(hours=1))
        assert (verified.verification, verified.verified_by) == ("Verified", "Bill Manager")
        assert verified.verified("Someone Else", T0 + timedelta(hours=2)) == verified

    def test_a_status_seen_before_the_posting_does_not_override_it(self) -> None:
        online = sample_payment(channel="Online", received_by="System", verification="Pending")
        pending_first = first_sight("Pending", online.posted_at - timedelta(minutes=5))
        state = state_when_posted(online, pending_first)
        assert (state.status, state.verification) == ("Posted", "Pending")

    def test_a_cancellation_seen_before_the_posting_still_voids_the_receipt(self) -> None:
        cancelled_first = first_sight().cancelled("Admin", "Entered twice", T0 + timedelta(days=1))
        state = state_when_posted(sample_payment(), cancelled_first)
        assert state.void and state.status == "Cancelled" and state.verification == "Verified"

    def test_posting_twice_keeps_what_happened_after_the_first(self) -> None:
        posted = sample_payment()
        refunded = state_when_posted(posted, None).with_status("Refunded", posted.posted_at + timedelta(days=1))
        assert state_when_posted(posted, refunded) == refunded


class TestCreditNoteStanding:
    def test_a_new_credit_note_is_active_with_everything_remaining(self) -> None:
        assert credit_note_standing(Decimal("4.50"), []) == (Decimal("0"), Decimal("4.50"), "Active")

    def test_the_latest_application_in_event_time_wins_whatever_the_arrival_order(self) -> None:
        first = CreditNoteActivity(at=T0, remaining=Decimal("2.00"), status="Active", applied=Decimal("2.50"))
        last = CreditNoteActivity(
            at=T0 + timedelta(days=1), remaining=Decimal("0.00"), status="Applied", applied=Decimal("2.00")
        )
        assert credit_note_standing(Decimal("4.50"), [last, first]) == (Decimal("4.50"), Decimal("0.00"), "Applied")

    def test_an_expired_note_shows_expired(self) -> None:
        expired = CreditNoteActivity(at=T0, remaining=Decimal("4.50"), status="Expired")
        assert credit_note_standing(Decimal("4.50"), [expired])[2] == "Expired"


class TestItemPaid:
    def test_a_bill_shows_invoice_and_billing_period(self) -> None:
        lines = {ln.label: ln.value for ln in item_lines(sample_payment(), STYLE)}
        assert lines == {"Payment type": "Bill", "Invoice": "INV-2025-001234", "Billing period": "Mar 2025"}

    def test_a_service_shows_the_service_and_its_date(self) -> None:
        item = ItemSnapshot(
            payment_type=PaymentType.SERVICE,
            item_reference="SC-2025-0001",
            description="Reconnection Fee",
            period_or_date="2025-04-18",
            due=usd("75.00"),
        )
        lines = {ln.label: ln.value for ln in item_lines(sample_payment(item=item), STYLE)}
        assert lines == {
            "Payment type": "Service",
            "Service": "Reconnection Fee (SC-2025-0001)",
            "Service date": "Apr 18, 2025",
        }

    def test_an_installment_shows_the_plan_and_installment_number(self) -> None:
        item = ItemSnapshot(
            payment_type=PaymentType.INSTALLMENT,
            item_reference="PP-2025-0034/2",
            description="Plan PP-2025-0034 installment 2",
            period_or_date="2025-05-15",
            due=usd("67.50"),
        )
        lines = {ln.label: ln.value for ln in item_lines(sample_payment(item=item), STYLE)}
        assert lines == {
            "Payment type": "Installment",
            "Payment plan": "PP-2025-0034",
            "Installment": "#2 due May 15, 2025",
        }


class TestReceiptDocument:
    def test_cash_details_appear_only_for_cash_payments(self) -> None:
        card = sample_payment(method="Credit Card", cash_received=None, change_given=None)
        document = receipt_document(card, state_when_posted(card, None), [], STYLE)
        labels = {ln.label for s in document.sections for ln in s.lines}
        assert "Cash received" not in labels and "Change given" not in labels

    def test_an_overpayment_shows_its_difference_and_the_credit_note_generated(self) -> None:
        over = sample_payment(amount=usd("150.00"), difference=usd("4.50"), outcome="over", change_given=usd("0.00"))
        document = receipt_document(over, state_when_posted(over, None), [sample_credit_note()], STYLE)
        assert document.line("Difference") == "$4.50 (Overpaid)"
        assert document.line("Credit note generated") == "CN-46129 ($4.50)"

    def test_the_hash_is_the_same_for_the_same_data_and_changes_with_it(self) -> None:
        posted = sample_payment()
        state = state_when_posted(posted, None)
        first = receipt_document(posted, state, [], STYLE)
        assert first.document_hash == receipt_document(posted, state, [], STYLE).document_hash
        void = receipt_document(posted, state.cancelled("Admin", "x", T0 + timedelta(days=1)), [], STYLE)
        assert void.void and void.document_hash != first.document_hash

    def test_dates_follow_the_configured_format_and_zone(self) -> None:
        style = DocumentStyle(Letterhead("U", "A", "C"), date_format="%d/%m/%Y", timezone="Pacific/Auckland")
        note = sample_credit_note(created_at=datetime(2025, 4, 20, 13, 0, tzinfo=UTC))
        document = credit_note_document(note, [], style)
        assert document.line("Created") == "21/04/2025", "13:00 UTC is the next day in Auckland"

    def test_a_document_survives_its_json_round_trip_with_the_same_hash(self) -> None:
        document = receipt_document(sample_payment(), state_when_posted(sample_payment(), None), [], STYLE)
        again = Document.from_json(document.to_json())
        assert again == document and again.sealed().document_hash == document.document_hash

    def test_a_documents_json_is_exactly_what_asdict_made_so_hashes_and_stored_content_stay_the_same(self) -> None:
        """INVARIANT: the content hash of a document never changes with how its JSON is built."""
        posted = sample_payment()
        cancelled = state_when_posted(posted, None).cancelled("Admin", "wrong account", T0 + timedelta(days=1))
        documents = [
            sample_receipt_document(),
            sample_credit_note_document(),
            receipt_document(posted, cancelled, [sample_credit_note()], STYLE, void_notes=frozenset({"CN-46129"})),
        ]
        for document in documents:
            expected = dataclasses.asdict(document)
            expected["as_of"] = document.as_of.astimezone(UTC).isoformat()
            assert document.to_json() == expected
            assert list(document.to_json()) == list(expected), "fields in the same order"
