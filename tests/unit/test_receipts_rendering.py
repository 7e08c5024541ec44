"""Receipt and credit-note documents as people get them: PDF read back with pypdf, PNG through pdftoppm."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from services.receipts.domain import Document, receipt_document, state_when_posted
from services.receipts.rendering import PdfRenderer, print_view
from services.receipts.samples import (
    STYLE,
    sample_credit_note,
    sample_credit_note_document,
    sample_payment,
    sample_receipt_document,
    to_png,
    usd,
)
from tests.support.helpers import pdf_text

SAMPLES = Path(__file__).parents[2] / "docs" / "receipts"


@pytest.fixture(scope="module")
def renderer() -> PdfRenderer:
    return PdfRenderer()


def overpaid_cash_receipt() -> Document:
    """R-5001 paid with $150.00 against $145.50 billed: change is none, the $4.50 became CN-46129."""
    posted = sample_payment(amount=usd("150.00"), difference=usd("4.50"), outcome="over", change_given=usd("0.00"))
    return receipt_document(posted, state_when_posted(posted, None), [sample_credit_note()], STYLE)


def test_ac12_receipt_pdf_includes_every_payment_detail(renderer: PdfRenderer) -> None:
    document = overpaid_cash_receipt()
    text = pdf_text(renderer.pdf(document))
    expected = [
        # the utility's header
        "Cityville Water & Power",
        "1 Utility Plaza, Cityville",
        "Payment Receipt",
        # payment summary
        "Receipt number R-5001",
        "Payment ID PAY-2025-004521",
        "Transaction ID TXN-2025-008934",
        "Payment date Apr 20, 2025",
        # consumer info
        "Consumer name John Doe",
        "Account number WU-10001",
        "Service address 123 Main Street, Cityville",
        # item paid
        "Payment type Bill",
        "Invoice INV-2025-001234",
        "Billing period Mar 2025",
        # amounts
        "Channel Walk-in",
        "Method Cash",
        "Amount paid $150.00",
        "Billed amount $145.50",
        "Difference $4.50 (Overpaid)",
        "Cash received $150.00",
        "Change given $0.00",
        "Credit note generated CN-46129 ($4.50)",
        # processing information
        "Received by Jane Smith",
        "Verification Verified",
        "Status Posted",
    ]
    missing = [line for line in expected if line not in text]
    assert not missing, f"not on the receipt: {missing}\n---\n{text}"
    printed_hash = re.search(r"Document hash \(SHA-256\): ([0-9a-f]{64})", text)
    assert printed_hash is not None and printed_hash.group(1) == document.document_hash
    assert "VOID" not in text


def test_ac12_service_and_installment_receipts_name_what_was_paid(renderer: PdfRenderer) -> None:
    from shared.contracts.events import ItemSnapshot, PaymentType

    service = ItemSnapshot(
        payment_type=PaymentType.SERVICE,
        item_reference="SC-2025-0001",
        description="Reconnection Fee",
        period_or_date="2025-04-18",
        due=usd("75.00"),
    )
    plan = ItemSnapshot(
        payment_type=PaymentType.INSTALLMENT,
        item_reference="PP-2025-0034/1",
        description="Plan PP-2025-0034 installment 1",
        period_or_date="2025-04-15",
        due=usd("67.50"),
    )
    for item, lines in (
        (service, ["Service Reconnection Fee (SC-2025-0001)", "Service date Apr 18, 2025"]),
        (plan, ["Payment plan PP-2025-0034", "Installment #1 due Apr 15, 2025"]),
    ):
        posted = sample_payment(item=item, amount=item.due, cash_received=None, change_given=None, method="Card")
        text = pdf_text(renderer.pdf(receipt_document(posted, state_when_posted(posted, None), [], STYLE)))
        assert all(line in text for line in lines), text
        assert "Cash received" not in text


def test_a_cancelled_payments_receipt_is_marked_void(renderer: PdfRenderer) -> None:
    posted = sample_payment()
    state = state_when_posted(posted, None).cancelled(
        "Ada Admin", "Entered twice", posted.posted_at + timedelta(hours=2)
    )
    text = pdf_text(renderer.pdf(receipt_document(posted, state, [], STYLE)))
    assert "VOID" in text
    assert "Status Cancelled" in text and "Cancelled by Ada Admin" in text and "Reason Entered twice" in text


def test_ac39_credit_note_pdf_shows_header_consumer_amount_reason_dates_receipt_status_and_stamp(
    renderer: PdfRenderer,
) -> None:
    document = sample_credit_note_document()
    text = pdf_text(renderer.pdf(document))
    expected = [
        "Cityville Water & Power",
        "Credit Note",
        "Credit note number CN-46129",
        "Consumer name John Doe",
        "Account number WU-10001",
        "Credit amount $4.50",
        "Applied amount $2.50",
        "Remaining balance $2.00",
        "Reason Overpayment",
        "Created Apr 20, 2025",
        "Expires Apr 20, 2026",
        "Linked receipt R-5001",
        "Status Active",
        "Created by Jane Smith",
        "System stamp: issued by the Paydesk system for Cityville Water & Power on Apr 20, 2025",
    ]
    missing = [line for line in expected if line not in text]
    assert not missing, f"not on the credit note: {missing}\n---\n{text}"
    assert document.document_hash in text


def test_the_same_document_renders_to_the_same_bytes_in_another_process(renderer: PdfRenderer) -> None:
    """INVARIANT: a document's bytes depend only on its data, so its hash means something."""
    here = renderer.pdf(sample_receipt_document())
    assert here == renderer.pdf(sample_receipt_document())
    elsewhere = subprocess.run(
        [
            sys.executable,
            "-c",
            "import hashlib; from services.receipts.rendering import PdfRenderer;"
            "from services.receipts.samples import sample_receipt_document as d;"
            "print(hashlib.sha256(PdfRenderer().pdf(d())).hexdigest())",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    ).stdout.strip()
    assert elsewhere == hashlib.sha256(here).hexdigest()


def test_the_samples_in_docs_are_what_the_code_renders_today(renderer: PdfRenderer) -> None:
    """The committed samples were rendered on another machine: equal bytes show fonts and layout are portable.

    Regenerate with `python -m services.receipts.samples docs/receipts` after changing the layout.
    """
    assert (SAMPLES / "receipt-R-5001.pdf").read_bytes() == renderer.pdf(sample_receipt_document())
    assert (SAMPLES / "credit-note-CN-46129.pdf").read_bytes() == renderer.pdf(sample_credit_note_document())


def test_ac13_receipt_renders_to_a_png_page_a_person_can_look_at(renderer: PdfRenderer, tmp_path: Path) -> None:
    pdf = tmp_path / "receipt.pdf"
    pdf.write_bytes(renderer.pdf(overpaid_cash_receipt()))
    png = tmp_path / "receipt.png"
    to_png(pdf, png, dpi=50)
    header = png.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
    assert (width, height) == (414, 585), "one A4 page at 50 dpi"
    # And it is not blank: in a greyscale rendering, text and rules darken a few percent of the pixels.
    subprocess.run(["pdftoppm", "-gray", "-r", "50", "-singlefile", str(pdf), str(tmp_path / "grey")], check=True)
    pixels = (tmp_path / "grey.pgm").read_bytes()[-width * height :]
    dark = sum(1 for p in pixels if p < 128) / len(pixels)
    assert 0.005 < dark < 0.5, f"{dark:.2%} dark pixels"


def test_ac13_print_view_shows_the_same_fields_and_hash_as_the_pdf() -> None:
    document = overpaid_cash_receipt()
    page = print_view(document, "R-5001.pdf?download=true")
    for section in document.sections:
        for line in section.lines:
            assert f"<th>{line.label}</th><td>{line.value.replace('&', '&amp;')}</td>" in page
    assert document.document_hash in page
    assert "@media print" in page and "window.print()" in page and 'href="R-5001.pdf?download=true"' in page
