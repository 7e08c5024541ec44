"""The CloudEvents envelope (structured and binary mode) and money inside event payloads."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.contracts.envelope import (
    CONTENT_TYPE,
    Envelope,
    EnvelopeError,
    decode_envelope,
    new_envelope,
    peek_type,
)
from shared.contracts.events import Money, PaymentRecordRequested, PaymentType

EVENT_ID = "3f1c8f0e-8b1e-4c7b-9f51-1a2b3c4d5e6f"
DATA: dict[str, Any] = {"payment_id": "PAY-2025-004521", "amount": {"amount": "145.50", "currency": "USD"}}


def structured(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": EVENT_ID,
        "type": "payment.posted",
        "specversion": "1.0",
        "time": "2025-04-18T10:15:00Z",
        "source": "payments",
        "subject": "WU-10001",
        "datacontenttype": "application/json",
        "data": DATA,
    }
    body.update(overrides)
    return body


def without(body: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != key}


def binary_headers(**overrides: bytes) -> dict[str, bytes | str]:
    headers: dict[str, bytes | str] = {
        "ce_id": EVENT_ID.encode(),
        "ce_type": b"payment.posted",
        "ce_source": b"payments",
        "ce_specversion": b"1.0",
        "ce_time": b"2025-04-18T10:15:00+00:00",
        "ce_subject": b"WU-10001",
    }
    headers.update(overrides)
    return headers


class TestStructuredMode:
    def test_decodes_a_json_object_with_all_attributes(self) -> None:
        envelope = decode_envelope(json.dumps(structured()).encode(), {})
        assert envelope.id == uuid.UUID(EVENT_ID)
        assert envelope.type == "payment.posted"
        assert envelope.specversion == "1.0"
        assert envelope.time == datetime(2025, 4, 18, 10, 15, tzinfo=UTC)
        assert envelope.source == "payments"
        assert envelope.subject == "WU-10001"
        assert envelope.datacontenttype == "application/json"
        assert envelope.data == DATA

    def test_keeps_a_non_utc_offset_as_the_same_instant(self) -> None:
        envelope = decode_envelope(json.dumps(structured(time="2025-04-18T12:15:00+02:00")).encode(), {})
        assert envelope.time == datetime(2025, 4, 18, 10, 15, tzinfo=UTC)

    def test_structured_mode_ignores_unrelated_headers(self) -> None:
        envelope = decode_envelope(json.dumps(structured()).encode(), {"content-type": CONTENT_TYPE.encode()})
        assert envelope.subject == "WU-10001"

    def test_rejects_a_json_array(self) -> None:
        with pytest.raises(EnvelopeError, match="JSON object"):
            decode_envelope(json.dumps([structured()]).encode(), {})

    @pytest.mark.parametrize("value", [b"null", b"42", b'"text"'])
    def test_rejects_other_json_values_that_are_not_objects(self, value: bytes) -> None:
        with pytest.raises(EnvelopeError, match="JSON object"):
            decode_envelope(value, {})

    def test_rejects_a_naive_time(self) -> None:
        with pytest.raises(EnvelopeError, match=r"^time: .*timezone"):
            decode_envelope(json.dumps(structured(time="2025-04-18T10:15:00")).encode(), {})

    def test_rejects_a_missing_subject(self) -> None:
        with pytest.raises(EnvelopeError, match=r"^subject: Field required"):
            decode_envelope(json.dumps(without(structured(), "subject")).encode(), {})

    def test_rejects_an_empty_subject(self) -> None:
        with pytest.raises(EnvelopeError, match=r"^subject: "):
            decode_envelope(json.dumps(structured(subject="")).encode(), {})

    @pytest.mark.parametrize("field", ["id", "type", "time", "source", "data"])
    def test_rejects_a_missing_required_attribute_and_names_it(self, field: str) -> None:
        with pytest.raises(EnvelopeError, match=rf"^{field}: Field required"):
            decode_envelope(json.dumps(without(structured(), field)).encode(), {})

    def test_rejects_an_id_that_is_not_a_uuid(self) -> None:
        with pytest.raises(EnvelopeError, match=r"^id: "):
            decode_envelope(json.dumps(structured(id="not-a-uuid")).encode(), {})

    def test_rejects_an_unsupported_specversion(self) -> None:
        with pytest.raises(EnvelopeError, match=r"^specversion: "):
            decode_envelope(json.dumps(structured(specversion="0.3")).encode(), {})

    def test_rejects_data_that_is_not_an_object(self) -> None:
        with pytest.raises(EnvelopeError, match=r"^data: "):
            decode_envelope(json.dumps(structured(data=[1, 2])).encode(), {})

    def test_names_every_bad_field_in_one_message(self) -> None:
        body = without(structured(time="2025-04-18T10:15:00"), "subject")
        with pytest.raises(EnvelopeError) as caught:
            decode_envelope(json.dumps(body).encode(), {})
        assert "time: " in str(caught.value)
        assert "subject: " in str(caught.value)


class TestBinaryMode:
    def test_decodes_ce_headers_and_a_bare_data_value(self) -> None:
        envelope = decode_envelope(json.dumps(DATA).encode(), binary_headers())
        assert envelope.id == uuid.UUID(EVENT_ID)
        assert envelope.type == "payment.posted"
        assert envelope.source == "payments"
        assert envelope.specversion == "1.0"
        assert envelope.time == datetime(2025, 4, 18, 10, 15, tzinfo=UTC)
        assert envelope.subject == "WU-10001"
        assert envelope.data == DATA

    def test_accepts_str_header_values_as_well_as_bytes(self) -> None:
        headers: dict[str, bytes | str] = {k: v.decode() for k, v in binary_headers().items() if isinstance(v, bytes)}
        envelope = decode_envelope(json.dumps(DATA).encode(), headers)
        assert envelope.subject == "WU-10001"

    def test_binary_and_structured_mode_decode_to_the_same_envelope(self) -> None:
        from_binary = decode_envelope(json.dumps(DATA).encode(), binary_headers())
        from_structured = decode_envelope(json.dumps(structured()).encode(), {})
        assert from_binary == from_structured

    def test_ce_headers_win_over_a_value_that_looks_structured(self) -> None:
        # In binary mode the value is the data, even if it happens to contain envelope-like keys.
        envelope = decode_envelope(json.dumps(structured(subject="WU-99999")).encode(), binary_headers())
        assert envelope.subject == "WU-10001"
        assert envelope.data["subject"] == "WU-99999"

    def test_rejects_a_naive_time_header(self) -> None:
        with pytest.raises(EnvelopeError, match=r"^time: .*timezone"):
            decode_envelope(json.dumps(DATA).encode(), binary_headers(ce_time=b"2025-04-18T10:15:00"))

    def test_rejects_a_missing_subject_header(self) -> None:
        headers = binary_headers()
        del headers["ce_subject"]
        with pytest.raises(EnvelopeError, match=r"^subject: "):
            decode_envelope(json.dumps(DATA).encode(), headers)

    def test_rejects_a_missing_specversion_header(self) -> None:
        headers = binary_headers()
        del headers["ce_specversion"]
        with pytest.raises(EnvelopeError, match=r"^specversion: "):
            decode_envelope(json.dumps(DATA).encode(), headers)

    def test_rejects_a_bare_value_that_is_not_an_object(self) -> None:
        with pytest.raises(EnvelopeError, match=r"^data: "):
            decode_envelope(b"[1, 2]", binary_headers())


class TestUndecodableValues:
    @pytest.mark.parametrize("value", [b"", None])
    def test_rejects_an_empty_value(self, value: bytes | None) -> None:
        with pytest.raises(EnvelopeError, match="empty message value"):
            decode_envelope(value, {})

    def test_rejects_an_empty_value_in_binary_mode_too(self) -> None:
        with pytest.raises(EnvelopeError, match="empty message value"):
            decode_envelope(b"", binary_headers())

    @pytest.mark.parametrize("value", [b"not json", b"{", b"\xff\xfe\xfd", b"{'single': 'quotes'}"])
    def test_rejects_a_value_that_is_not_json(self, value: bytes) -> None:
        with pytest.raises(EnvelopeError, match="value is not JSON"):
            decode_envelope(value, {})

    def test_envelope_error_is_a_value_error(self) -> None:
        assert issubclass(EnvelopeError, ValueError)


class TestNewEnvelope:
    def test_stamps_a_utc_aware_time_of_now(self) -> None:
        before = datetime.now(UTC)
        envelope = new_envelope("payment.posted", source="payments", subject="WU-10001", data=DATA)
        after = datetime.now(UTC)
        assert envelope.time.tzinfo is not None
        assert envelope.time.utcoffset() == timedelta(0)
        assert before <= envelope.time <= after

    def test_gives_every_envelope_a_fresh_id(self) -> None:
        first = new_envelope("payment.posted", source="payments", subject="WU-10001", data={})
        second = new_envelope("payment.posted", source="payments", subject="WU-10001", data={})
        assert first.id != second.id

    def test_fills_the_cloudevents_attributes(self) -> None:
        envelope = new_envelope("payment.posted", source="payments", subject="WU-10001", data=DATA)
        assert envelope.type == "payment.posted"
        assert envelope.source == "payments"
        assert envelope.subject == "WU-10001"
        assert envelope.specversion == "1.0"
        assert envelope.datacontenttype == "application/json"

    def test_round_trips_through_to_bytes_and_decode_envelope(self) -> None:
        envelope = new_envelope("payment.posted", source="payments", subject="WU-10001", data=DATA)
        decoded = decode_envelope(envelope.to_bytes(), {})
        assert decoded == envelope
        assert decoded.time.utcoffset() == timedelta(0)

    def test_dumps_a_pydantic_payload_in_json_mode_so_money_stays_a_string(self) -> None:
        command = PaymentRecordRequested(
            account_number="WU-10001",
            payment_type=PaymentType.BILL,
            item_reference="INV-2025-001234",
            channel="Walk-in",
            method="Cash",
            amount=Decimal("145.50"),
            payment_date=datetime(2025, 4, 18).date(),
            cash_received=Decimal("150.00"),
        )
        envelope = new_envelope("payment.record_requested", source="billing", subject="WU-10001", data=command)
        assert envelope.data["amount"] == "145.50"
        assert envelope.data["cash_received"] == "150.00"
        assert envelope.data["payment_type"] == "bill"
        assert envelope.data["payment_date"] == "2025-04-18"
        decoded = decode_envelope(envelope.to_bytes(), {})
        assert PaymentRecordRequested.model_validate(decoded.data) == command

    def test_to_bytes_is_structured_mode_json(self) -> None:
        envelope = new_envelope("payment.posted", source="payments", subject="WU-10001", data=DATA)
        body = json.loads(envelope.to_bytes())
        assert body["id"] == str(envelope.id)
        assert body["subject"] == "WU-10001"
        assert body["data"] == DATA

    def test_an_envelope_cannot_be_built_with_a_naive_time(self) -> None:
        with pytest.raises(ValidationError):
            Envelope(
                id=uuid.uuid4(),
                type="payment.posted",
                time=datetime(2025, 4, 18, 10, 15),
                source="payments",
                subject="WU-10001",
                data={},
            )


class TestMoneyInEvents:
    def test_rejects_a_json_float_amount(self) -> None:
        with pytest.raises(ValidationError, match="float"):
            Money.model_validate({"amount": 1.5, "currency": "USD"})

    def test_rejects_a_float_amount_parsed_from_json_text(self) -> None:
        with pytest.raises(ValidationError, match="float"):
            Money.model_validate_json('{"amount": 145.50, "currency": "USD"}')

    def test_accepts_a_decimal_string(self) -> None:
        money = Money.model_validate({"amount": "145.50", "currency": "USD"})
        assert money.amount == Decimal("145.50")
        assert isinstance(money.amount, Decimal)

    def test_currency_defaults_to_usd(self) -> None:
        assert Money.model_validate({"amount": "1.00"}).currency == "USD"

    @pytest.mark.parametrize("currency", ["US", "USDX", ""])
    def test_rejects_a_currency_that_is_not_three_letters_long(self, currency: str) -> None:
        with pytest.raises(ValidationError):
            Money.model_validate({"amount": "1.00", "currency": currency})

    @pytest.mark.parametrize("amount", ["NaN", "Infinity", "abc"])
    def test_rejects_non_finite_or_garbage_amounts(self, amount: str) -> None:
        with pytest.raises(ValidationError):
            Money.model_validate({"amount": amount})

    def test_serialises_the_amount_as_a_string_in_json_mode(self) -> None:
        money = Money(amount=Decimal("145.50"), currency="USD")
        assert money.model_dump(mode="json") == {"amount": "145.50", "currency": "USD"}
        assert json.loads(money.model_dump_json()) == {"amount": "145.50", "currency": "USD"}

    def test_json_serialisation_never_uses_exponent_notation(self) -> None:
        assert Money(amount=Decimal("1E+2")).model_dump(mode="json")["amount"] == "100"
        assert Money(amount=Decimal("0.00000001")).model_dump(mode="json")["amount"] == "0.00000001"

    def test_keeps_a_decimal_in_python_mode(self) -> None:
        assert Money(amount=Decimal("145.50")).model_dump()["amount"] == Decimal("145.50")

    def test_round_trips_through_json(self) -> None:
        money = Money(amount=Decimal("145.50"), currency="USD")
        assert Money.model_validate_json(money.model_dump_json()) == money

    def test_a_float_cash_received_is_rejected_in_a_command(self) -> None:
        with pytest.raises(ValidationError, match="cash_received"):
            PaymentRecordRequested.model_validate(
                {
                    "account_number": "WU-10001",
                    "payment_type": "bill",
                    "item_reference": "INV-2025-001234",
                    "channel": "Walk-in",
                    "method": "Cash",
                    "amount": "145.50",
                    "payment_date": "2025-04-18",
                    "cash_received": 150.0,
                }
            )


class TestPeekingAtTheType:
    """A consumer skips events it does not handle by their peeked type, undecoded: the peek must never be wrong."""

    @given(
        kind=st.from_regex(r"[a-z_]{1,20}\.[a-z_]{1,20}", fullmatch=True),
        data=st.dictionaries(
            st.sampled_from(["type", "id", "note", "payment_type"]),
            st.text(alphabet=st.characters(codec="utf-8"), max_size=30),
            max_size=4,
        ),
    )
    def test_the_type_of_an_envelope_we_wrote_is_read_from_its_first_bytes(
        self, kind: str, data: dict[str, Any]
    ) -> None:
        envelope = new_envelope(kind, source="payments", subject="WU-10001", data=data)
        assert peek_type(envelope.to_bytes(), {}) == kind == decode_envelope(envelope.to_bytes(), {}).type

    def test_binary_mode_is_peeked_from_the_ce_type_header(self) -> None:
        assert peek_type(json.dumps(DATA).encode(), binary_headers()) == "payment.posted"

    @pytest.mark.parametrize(
        "value",
        [
            json.dumps({"data": {"type": "not.this"}, **without(structured(), "data")}).encode(),  # data first
            json.dumps(structured(), indent=1).encode(),  # another writer's spacing
            json.dumps({"type": "payment.posted"}).encode(),  # no id: not ours, decoding says what is wrong
            b"not json",
            b"",
        ],
    )
    def test_anything_else_is_left_to_decoding(self, value: bytes) -> None:
        assert peek_type(value, {}) is None
