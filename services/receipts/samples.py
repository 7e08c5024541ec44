"""The seed's sample receipt (R-5001) and credit note (CN-46129), as the events would carry them.

`python -m services.receipts.samples docs/receipts` writes them as PDF and PNG (pdftoppm) for people to look
at; a test checks that today's code still renders those exact bytes.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

from services.receipts.domain import (
    CreditNoteActivity,
    Document,
    DocumentStyle,
    Letterhead,
    credit_note_document,
    receipt_document,
    state_when_posted,
)
from services.receipts.rendering import PdfRenderer
from shared.contracts.events import ConsumerSnapshot, CreditNoteIssued, ItemSnapshot, Money, PaymentPosted, PaymentType

STYLE = DocumentStyle(
    Letterhead(
        name="Cityville Water & Power",
        address="1 Utility Plaza, Cityville",
        contact="(555) 000-1000 · billing@cityville-utility.example",
    ),
    date_format="%b %d, %Y",
)

POSTED_AT = datetime(2025, 4, 20, 14, 32, 5, tzinfo=UTC)


def usd(amount: str) -> Money:
    return Money(amount=Decimal(amount), currency="USD")


def sample_payment(**changes: object) -> PaymentPosted:
    """John Doe pays INV-2025-001234 ($145.50) in cash at the counter, hands over $150.00: R-5001."""
    posted = PaymentPosted(
        payment_id="PAY-2025-004521",
        transaction_id="TXN-2025-008934",
        receipt_number="R-5001",
        consumer=ConsumerSnapshot(
            account_number="WU-10001",
            name="John Doe",
            service_address="123 Main Street, Cityville",
            phone="(555) 123-4567",
            email="john.doe@email.com",
        ),
        item=ItemSnapshot(
            payment_type=PaymentType.BILL,
            item_reference="INV-2025-001234",
            description="Bill 2025-03",
            period_or_date="2025-03",
            issued_on=date(2025, 3, 31),
            due=usd("145.50"),
        ),
        channel="Walk-in",
        method="Cash",
        amount=usd("145.50"),
        payment_date=date(2025, 4, 20),
        posted_at=POSTED_AT,
        received_by="Jane Smith",
        status="Posted",
        verification="Verified",
        difference=usd("0.00"),
        outcome="exact",
        cash_received=usd("150.00"),
        change_given=usd("4.50"),
        notes="Customer paid in full",
    )
    return posted.model_copy(update=changes)


def sample_credit_note(**changes: object) -> CreditNoteIssued:
    """The seed's CN-46129: $4.50 credited against R-5001."""
    issued = CreditNoteIssued(
        credit_note_number="CN-46129",
        account_number="WU-10001",
        consumer_name="John Doe",
        receipt_number="R-5001",
        payment_id="PAY-2025-004521",
        amount=usd("4.50"),
        reason="Overpayment",
        created_by="Jane Smith",
        created_at=datetime(2025, 4, 20, 14, 32, 6, tzinfo=UTC),
        expires_at=datetime(2026, 4, 20, 14, 32, 6, tzinfo=UTC),
    )
    return issued.model_copy(update=changes)


def sample_receipt_document() -> Document:
    posted = sample_payment()
    return receipt_document(posted, state_when_posted(posted, None), [], STYLE)


def sample_credit_note_document() -> Document:
    applied = CreditNoteActivity(
        at=datetime(2025, 5, 15, 9, 0, tzinfo=UTC), remaining=Decimal("2.00"), status="Active", applied=Decimal("2.50")
    )
    return credit_note_document(sample_credit_note(), [applied], STYLE)


def to_png(pdf: Path, png: Path, *, dpi: int = 80) -> None:
    """First page of a PDF as PNG, with Debian's pdftoppm (poppler-utils)."""
    subprocess.run(
        ["pdftoppm", "-png", "-r", str(dpi), "-f", "1", "-singlefile", str(pdf), str(png.with_suffix(""))],
        check=True,
    )


def write_samples(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    renderer = PdfRenderer()
    written = []
    for name, document in (
        ("receipt-R-5001", sample_receipt_document()),
        ("credit-note-CN-46129", sample_credit_note_document()),
    ):
        pdf = folder / f"{name}.pdf"
        pdf.write_bytes(renderer.pdf(document))
        to_png(pdf, pdf.with_suffix(".png"))
        written += [pdf, pdf.with_suffix(".png")]
    return written


if __name__ == "__main__":  # pragma: no cover - a developer's tool
    for path in write_samples(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/receipts")):
        print(path)
