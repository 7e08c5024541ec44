"""Events the receipts tests hand to the service, defined once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from shared.contracts import Envelope, new_envelope
from shared.contracts.events import CreditNoteIssued, Money


def credit_note_issued(account: str, receipt_number: str, payment_id: str, number: str) -> Envelope:
    """A `credit_note.issued` of 4.50 USD for an overpayment, on the given receipt and payment."""
    created = datetime.now(UTC)
    data = CreditNoteIssued(
        credit_note_number=number,
        account_number=account,
        consumer_name="Test Consumer",
        receipt_number=receipt_number,
        payment_id=payment_id,
        amount=Money(amount=Decimal("4.50")),
        reason="Overpayment",
        created_by="Jane Smith",
        created_at=created,
        expires_at=created + timedelta(days=365),
    )
    return new_envelope("credit_note.issued", source="credit_notes", subject=account, data=data)
