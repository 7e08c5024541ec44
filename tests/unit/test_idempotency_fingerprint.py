"""The request fingerprint behind idempotency keys: same content, same hash, whatever carries it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from pydantic import BaseModel

from shared.contracts.events import PaymentType
from shared.idempotency import request_fingerprint


@dataclass(frozen=True)
class RecordPayment:
    payment_type: PaymentType
    amount: Decimal
    payment_date: date


class RecordPaymentBody(BaseModel):
    payment_type: PaymentType
    amount: Decimal
    payment_date: date


COMMAND = RecordPayment(PaymentType.BILL, Decimal("145.50"), date(2025, 3, 1))


class TestRequestFingerprint:
    def test_a_dataclass_a_model_and_plain_data_with_the_same_content_agree(self) -> None:
        body = RecordPaymentBody(payment_type=PaymentType.BILL, amount=Decimal("145.50"), payment_date=date(2025, 3, 1))
        plain = {"payment_type": "bill", "amount": "145.50", "payment_date": "2025-03-01"}
        assert request_fingerprint(COMMAND) == request_fingerprint(body) == request_fingerprint(plain)

    def test_matches_the_hash_keys_already_stored_by_the_services(self) -> None:
        # payments and credit_notes hashed json.dumps(fields, default=str, sort_keys=True); keys stored before the
        # switch must still match their retries.
        stored = hashlib.sha256(json.dumps(COMMAND.__dict__, default=str, sort_keys=True).encode()).hexdigest()
        assert request_fingerprint(COMMAND) == stored

    def test_amounts_differ_by_their_exact_text(self) -> None:
        assert request_fingerprint({"amount": Decimal("4.5")}) != request_fingerprint({"amount": Decimal("4.50")})

    def test_field_order_does_not_matter(self) -> None:
        assert request_fingerprint({"a": 1, "b": 2}) == request_fingerprint({"b": 2, "a": 1})
