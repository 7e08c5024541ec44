"""The request fingerprint behind idempotency keys: same content, same hash, whatever carries it."""

from __future__ import annotations

import dataclasses
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


@dataclass(frozen=True)
class Batch:
    label: str
    payments: tuple[RecordPayment, ...]
    by_item: dict[str, RecordPayment]


class TestFingerprintWithoutAsdict:
    def test_is_the_hash_of_asdict_at_any_depth_so_stored_keys_still_match(self) -> None:
        batch = Batch(
            "lockbox", (COMMAND, RecordPayment(PaymentType.SERVICE, Decimal("3"), date(2025, 3, 2))), {"a": COMMAND}
        )
        as_before = json.dumps(dataclasses.asdict(batch), default=str, sort_keys=True)
        assert request_fingerprint(batch) == hashlib.sha256(as_before.encode()).hexdigest()

    def test_another_request_has_another_fingerprint(self) -> None:
        other = RecordPayment(PaymentType.BILL, Decimal("145.51"), date(2025, 3, 1))
        assert request_fingerprint(other) != request_fingerprint(COMMAND)
        assert request_fingerprint(RecordPayment(PaymentType.BILL, Decimal("145.50"), date(2025, 3, 1))) == (
            request_fingerprint(COMMAND)
        )
