"""Payments' pure rules (`services/payments/domain.py`), one test class per rule group, in the module's order:
numbering, amounts (analysis, allocation, cash change), settings, statuses, balance, the payments list."""

from __future__ import annotations

import random
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import reduce

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from services.payments.domain import (
    DEFAULT_CHANNEL,
    DEFAULT_FORMATS,
    GATEWAY_STATUS,
    MAX_PAGE,
    NUMBER_KINDS,
    SORTS,
    Allocation,
    Analysis,
    NumberFormat,
    Outcome,
    PaymentQuery,
    PaymentSettings,
    Verification,
    allocate,
    allocate_in_order,
    change_given,
    change_number_formats,
    check_cancellable,
    check_choices,
    check_number_format,
    check_number_format_change,
    check_verifiable,
    current_balance,
    moves_forward,
    online_status,
    processing_time,
    settlement_moves_forward,
)
from shared.contracts import PaymentStatus
from shared.errors import Rejected

# The gateway order, lowest first, written out here rather than read from the module under test.
GATEWAY_ORDER = [
    PaymentStatus.PENDING,
    PaymentStatus.FAILED,
    PaymentStatus.POSTED,
    PaymentStatus.DISPUTED,
    PaymentStatus.REFUNDED,
]
SETTLEMENT_ORDER = ["N/A", "In Progress", "Success", "Failed", "Settled"]
START = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def _fmt(prefix: str = "R-", *, with_year: bool = False, padding: int = 4, start: int = 5001) -> NumberFormat:
    return NumberFormat(prefix=prefix, with_year=with_year, padding=padding, start=start)


class TestNumberFormat:
    def test_first_payment_id_in_2025_is_pay_2025_004521(self) -> None:
        assert DEFAULT_FORMATS["payment_id"].render(1, 2025) == "PAY-2025-004521"

    def test_first_transaction_id_in_2025_is_txn_2025_008934(self) -> None:
        assert DEFAULT_FORMATS["transaction_id"].render(1, 2025) == "TXN-2025-008934"

    def test_first_receipt_number_is_r_5001(self) -> None:
        assert DEFAULT_FORMATS["receipt_number"].render(1, 2025) == "R-5001"

    def test_second_receipt_number_is_r_5002(self) -> None:
        assert DEFAULT_FORMATS["receipt_number"].render(2, 2025) == "R-5002"

    def test_second_payment_id_follows_the_first(self) -> None:
        assert DEFAULT_FORMATS["payment_id"].render(2, 2025) == "PAY-2025-004522"

    def test_receipt_number_does_not_carry_the_year(self) -> None:
        assert DEFAULT_FORMATS["receipt_number"].render(1, 2026) == "R-5001"

    def test_payment_id_carries_the_given_year(self) -> None:
        assert DEFAULT_FORMATS["payment_id"].render(1, 2026) == "PAY-2026-004521"

    def test_default_formats_cover_the_three_document_numbers(self) -> None:
        assert set(DEFAULT_FORMATS) == {"payment_id", "transaction_id", "receipt_number"}

    def test_pads_with_zeros_to_the_configured_width(self) -> None:
        assert NumberFormat(prefix="CN-", with_year=False, padding=5, start=1).render(1, 2025) == "CN-00001"

    def test_a_number_wider_than_the_padding_is_not_truncated(self) -> None:
        assert NumberFormat(prefix="R-", with_year=False, padding=4, start=9999).render(2, 2025) == "R-10000"

    def test_with_year_puts_the_year_between_prefix_and_number(self) -> None:
        assert NumberFormat(prefix="X-", with_year=True, padding=3, start=7).render(1, 1999) == "X-1999-007"

    @given(st.integers(min_value=1, max_value=10**6), st.integers(min_value=2000, max_value=2100))
    def test_consecutive_sequence_values_give_consecutive_receipt_numbers(self, sequence: int, year: int) -> None:
        fmt = DEFAULT_FORMATS["receipt_number"]
        first = int(fmt.render(sequence, year).removeprefix("R-"))
        second = int(fmt.render(sequence + 1, year).removeprefix("R-"))
        assert first == 5000 + sequence
        assert second == first + 1


class TestAnalysis:
    def test_exact_payment_has_zero_difference_and_nothing_overpaid(self) -> None:
        analysis = Analysis(due=Decimal("145.50"), paid=Decimal("145.50"))
        assert analysis.outcome is Outcome.EXACT
        assert analysis.difference == Decimal("0")
        assert analysis.overpaid == Decimal("0")

    def test_over_payment_has_positive_difference_equal_to_overpaid(self) -> None:
        analysis = Analysis(due=Decimal("145.50"), paid=Decimal("150.00"))
        assert analysis.outcome is Outcome.OVER
        assert analysis.difference == Decimal("4.50")
        assert analysis.overpaid == Decimal("4.50")

    def test_under_payment_has_negative_difference_and_nothing_overpaid(self) -> None:
        analysis = Analysis(due=Decimal("145.50"), paid=Decimal("100.00"))
        assert analysis.outcome is Outcome.UNDER
        assert analysis.difference == Decimal("-45.50")
        assert analysis.overpaid == Decimal("0")

    def test_exact_ignores_trailing_zeros(self) -> None:
        assert Analysis(due=Decimal("145.5"), paid=Decimal("145.50")).outcome is Outcome.EXACT

    def test_one_cent_over_is_over(self) -> None:
        assert Analysis(due=Decimal("145.50"), paid=Decimal("145.51")).outcome is Outcome.OVER

    def test_one_cent_under_is_under(self) -> None:
        assert Analysis(due=Decimal("145.50"), paid=Decimal("145.49")).outcome is Outcome.UNDER

    def test_outcome_values_are_the_event_words(self) -> None:
        assert [o.value for o in Outcome] == ["exact", "over", "under"]


class TestAllocate:
    def test_amount_below_outstanding_is_applied_in_full(self) -> None:
        assert allocate(Decimal("145.50"), Decimal("100.00"), Decimal("0")) == Allocation(
            applied=Decimal("100.00"), outstanding_after=Decimal("45.50")
        )

    def test_exact_amount_settles_the_item(self) -> None:
        result = allocate(Decimal("145.50"), Decimal("145.50"), Decimal("10"))
        assert result.applied == Decimal("145.50")
        assert result.outstanding_after == Decimal("0")

    def test_overpayment_within_threshold_applies_only_the_outstanding(self) -> None:
        result = allocate(Decimal("145.50"), Decimal("150.00"), Decimal("10.00"))
        assert result.applied == Decimal("145.50")
        assert result.outstanding_after == Decimal("0")

    def test_accepts_exactly_outstanding_plus_threshold(self) -> None:
        result = allocate(Decimal("145.50"), Decimal("155.50"), Decimal("10.00"))
        assert result.applied == Decimal("145.50")
        assert result.outstanding_after == Decimal("0")

    def test_rejects_one_cent_above_outstanding_plus_threshold(self) -> None:
        with pytest.raises(Rejected) as caught:
            allocate(Decimal("145.50"), Decimal("155.51"), Decimal("10.00"))
        assert caught.value.field == "amount"
        assert caught.value.code == "amount_exceeds_outstanding"

    def test_with_zero_threshold_rejects_any_overpayment(self) -> None:
        with pytest.raises(Rejected) as caught:
            allocate(Decimal("145.50"), Decimal("145.51"), Decimal("0"))
        assert caught.value.field == "amount"

    @pytest.mark.parametrize("amount", ["0", "0.00", "-0.01", "-145.50"])
    def test_rejects_an_amount_that_is_not_positive(self, amount: str) -> None:
        with pytest.raises(Rejected) as caught:
            allocate(Decimal("145.50"), Decimal(amount), Decimal("10"))
        assert caught.value.field == "amount"
        assert caught.value.code == "amount_not_positive"
        assert caught.value.status == 422

    def test_on_a_settled_item_only_the_threshold_may_be_paid(self) -> None:
        result = allocate(Decimal("0"), Decimal("5.00"), Decimal("5.00"))
        assert result.applied == Decimal("0")
        assert result.outstanding_after == Decimal("0")
        with pytest.raises(Rejected):
            allocate(Decimal("0"), Decimal("5.01"), Decimal("5.00"))

    @given(
        outstanding=st.decimals(min_value=0, max_value=10**7, places=2, allow_nan=False, allow_infinity=False),
        threshold=st.decimals(min_value=0, max_value=10**4, places=2, allow_nan=False, allow_infinity=False),
        data=st.data(),
    )
    def test_applied_plus_outstanding_after_equals_outstanding_and_both_are_non_negative(
        self, outstanding: Decimal, threshold: Decimal, data: st.DataObject
    ) -> None:
        limit = outstanding + threshold
        assume(limit > 0)
        # Any amount in (0, outstanding + threshold], on a cent grid.
        cents = data.draw(st.integers(min_value=1, max_value=int(limit * 100)), label="amount in cents")
        amount = Decimal(cents) / 100
        assert Decimal("0") < amount <= limit

        result = allocate(outstanding, amount, threshold)

        assert result.applied + result.outstanding_after == outstanding
        assert result.applied >= 0
        assert result.outstanding_after >= 0
        assert result.applied == min(amount, outstanding)

    @given(
        outstanding=st.decimals(min_value=0, max_value=10**7, places=2, allow_nan=False, allow_infinity=False),
        threshold=st.decimals(min_value=0, max_value=10**4, places=2, allow_nan=False, allow_infinity=False),
        excess=st.decimals(min_value="0.01", max_value=10**6, places=2, allow_nan=False, allow_infinity=False),
    )
    def test_any_amount_above_outstanding_plus_threshold_is_rejected(
        self, outstanding: Decimal, threshold: Decimal, excess: Decimal
    ) -> None:
        with pytest.raises(Rejected) as caught:
            allocate(outstanding, outstanding + threshold + excess, threshold)
        assert caught.value.field == "amount"


class TestChangeGiven:
    def test_non_cash_payment_has_no_change(self) -> None:
        assert change_given(Decimal("145.50"), None) is None

    def test_seed_cash_sample_gives_4_50_change(self) -> None:
        assert change_given(Decimal("145.50"), Decimal("150.00")) == Decimal("4.50")

    def test_exact_cash_gives_zero_change(self) -> None:
        assert change_given(Decimal("145.50"), Decimal("145.50")) == Decimal("0")

    def test_rejects_cash_received_below_the_amount(self) -> None:
        with pytest.raises(Rejected) as caught:
            change_given(Decimal("145.50"), Decimal("145.49"))
        assert caught.value.field == "cash_received"
        assert caught.value.code == "cash_received_too_low"


class TestPaymentSettings:
    def test_default_channels_are_the_five_seed_channels_in_order(self) -> None:
        assert PaymentSettings().channels == ("Walk-in", "Phone", "Mobile Field Collection", "Online", "Enterprise")

    def test_default_methods_are_the_five_seed_methods_in_order(self) -> None:
        assert PaymentSettings().payment_methods == ("Cash", "Credit Card", "Debit Card", "Cheque", "Bank Transfer")

    def test_default_overpayment_threshold_is_1000(self) -> None:
        assert PaymentSettings().overpayment_threshold == Decimal("1000.00")

    def test_default_settings_have_no_custom_number_formats(self) -> None:
        assert PaymentSettings().number_formats is None

    def test_walk_in_is_the_default_channel(self) -> None:
        assert DEFAULT_CHANNEL == "Walk-in"
        assert PaymentSettings().default_channel == "Walk-in"

    def test_walk_in_is_the_default_channel_even_when_not_listed_first(self) -> None:
        assert PaymentSettings(channels=("Phone", "Online", "Walk-in")).default_channel == "Walk-in"

    def test_without_walk_in_the_first_channel_is_the_default(self) -> None:
        assert PaymentSettings(channels=("Phone", "Online")).default_channel == "Phone"

    def test_a_single_channel_is_the_default(self) -> None:
        assert PaymentSettings(channels=("Enterprise",)).default_channel == "Enterprise"

    @pytest.mark.parametrize("kind", NUMBER_KINDS)
    def test_without_custom_formats_each_kind_uses_the_default_format(self, kind: str) -> None:
        assert PaymentSettings().format_for(kind) == DEFAULT_FORMATS[kind]

    @pytest.mark.parametrize("kind", NUMBER_KINDS)
    def test_an_empty_custom_format_table_falls_back_to_the_defaults(self, kind: str) -> None:
        assert PaymentSettings(number_formats={}).format_for(kind) == DEFAULT_FORMATS[kind]

    def test_a_custom_format_replaces_the_default_for_its_kind(self) -> None:
        custom = _fmt("RC-", padding=6, start=1)
        settings = PaymentSettings(number_formats={"receipt_number": custom})
        assert settings.format_for("receipt_number") == custom
        assert settings.format_for("receipt_number").render(1, 2025) == "RC-000001"

    def test_kinds_missing_from_the_custom_formats_keep_their_default(self) -> None:
        settings = PaymentSettings(number_formats={"receipt_number": _fmt("RC-", start=1)})
        assert settings.format_for("payment_id") == DEFAULT_FORMATS["payment_id"]
        assert settings.format_for("transaction_id") == DEFAULT_FORMATS["transaction_id"]

    def test_a_known_channel_and_method_pass_the_check(self) -> None:
        PaymentSettings().check(channel="Walk-in", method="Cash")  # raises Rejected if refused

    @pytest.mark.parametrize("channel", ["Walk-in", "Phone", "Mobile Field Collection", "Online", "Enterprise"])
    @pytest.mark.parametrize("method", ["Cash", "Credit Card", "Debit Card", "Cheque", "Bank Transfer"])
    def test_every_default_channel_and_method_combination_is_accepted(self, channel: str, method: str) -> None:
        PaymentSettings().check(channel=channel, method=method)

    @pytest.mark.parametrize("channel", ["Carrier Pigeon", "", "walk-in", "Walk-in "])
    def test_an_unknown_channel_is_rejected_on_the_channel_field(self, channel: str) -> None:
        with pytest.raises(Rejected) as caught:
            PaymentSettings().check(channel=channel, method="Cash")
        assert caught.value.field == "channel"
        assert caught.value.code == "unknown_channel"
        assert caught.value.status == 422

    @pytest.mark.parametrize("method", ["Bitcoin", "", "cash", "Cash "])
    def test_an_unknown_method_is_rejected_on_the_method_field(self, method: str) -> None:
        with pytest.raises(Rejected) as caught:
            PaymentSettings().check(channel="Walk-in", method=method)
        assert caught.value.field == "method"
        assert caught.value.code == "unknown_method"

    def test_the_channel_rejection_lists_the_allowed_channels(self) -> None:
        with pytest.raises(Rejected) as caught:
            PaymentSettings(channels=("Phone", "Online")).check(channel="Walk-in", method="Cash")
        assert "Phone, Online" in caught.value.detail

    def test_the_method_rejection_lists_the_allowed_methods(self) -> None:
        with pytest.raises(Rejected) as caught:
            PaymentSettings(payment_methods=("Cash", "Cheque")).check(channel="Walk-in", method="Bitcoin")
        assert "Cash, Cheque" in caught.value.detail

    def test_with_both_unknown_the_channel_is_reported(self) -> None:
        with pytest.raises(Rejected) as caught:
            PaymentSettings().check(channel="Carrier Pigeon", method="Bitcoin")
        assert caught.value.field == "channel"

    def test_a_channel_removed_by_the_admin_is_rejected(self) -> None:
        with pytest.raises(Rejected) as caught:
            PaymentSettings(channels=("Phone",)).check(channel="Walk-in", method="Cash")
        assert caught.value.field == "channel"

    def test_a_channel_and_method_added_by_the_admin_are_accepted(self) -> None:
        settings = PaymentSettings(channels=("Kiosk",), payment_methods=("Voucher",))
        settings.check(channel="Kiosk", method="Voucher")
        with pytest.raises(Rejected):
            settings.check(channel="Kiosk", method="Cash")


class TestCheckChoices:
    def test_an_empty_list_is_rejected(self) -> None:
        with pytest.raises(Rejected) as caught:
            check_choices([], "channels")
        assert caught.value.code == "empty_list"
        assert caught.value.field == "channels"

    @pytest.mark.parametrize("values", [[""], ["   "], ["Cash", ""], ["Cash", " \t\n"], ["", "Cash"]])
    def test_a_blank_entry_is_rejected(self, values: list[str]) -> None:
        with pytest.raises(Rejected) as caught:
            check_choices(values, "payment_methods")
        assert caught.value.code == "blank_entry"
        assert caught.value.field == "payment_methods"

    @pytest.mark.parametrize(
        "values",
        [
            ["Cash", "Cash"],
            ["Cash", "cash"],
            ["Cash", "CASH"],
            ["Cash", " Cash "],
            ["Walk-in", "Phone", "walk-IN"],
            ["Straße", "STRASSE"],
        ],
    )
    def test_a_duplicate_ignoring_case_and_surrounding_spaces_is_rejected(self, values: list[str]) -> None:
        with pytest.raises(Rejected) as caught:
            check_choices(values, "channels")
        assert caught.value.code == "duplicate_entry"
        assert caught.value.field == "channels"

    def test_entries_are_stripped_and_kept_in_order(self) -> None:
        assert check_choices(["  Cheque", "Cash  ", "\tBank Transfer\n"], "payment_methods") == (
            "Cheque",
            "Cash",
            "Bank Transfer",
        )

    def test_inner_spaces_are_kept(self) -> None:
        assert check_choices(["Mobile  Field Collection"], "channels") == ("Mobile  Field Collection",)

    def test_similar_but_different_entries_are_not_duplicates(self) -> None:
        assert check_choices(["Card", "Cards", "Credit Card"], "payment_methods") == ("Card", "Cards", "Credit Card")

    @given(st.lists(st.text(min_size=1).map(str.strip).filter(bool), min_size=1, unique_by=str.casefold))
    def test_distinct_non_blank_stripped_entries_are_returned_unchanged(self, values: list[str]) -> None:
        assert check_choices(values, "channels") == tuple(values)

    @given(
        st.lists(st.text(min_size=1).map(str.strip).filter(bool), min_size=1, unique_by=str.casefold),
        st.data(),
    )
    def test_repeating_any_entry_with_padding_is_rejected(self, values: list[str], data: st.DataObject) -> None:
        repeated = data.draw(st.sampled_from(values), label="repeated")
        with pytest.raises(Rejected) as caught:
            check_choices([*values, f"  {repeated} "], "channels")
        assert caught.value.code == "duplicate_entry"


class TestCheckNumberFormat:
    @pytest.mark.parametrize("kind", NUMBER_KINDS)
    def test_the_default_formats_are_valid(self, kind: str) -> None:
        assert check_number_format(kind, DEFAULT_FORMATS[kind]) == DEFAULT_FORMATS[kind]

    @pytest.mark.parametrize("kind", ["credit_note", "", "Payment_ID", "receipt"])
    def test_an_unknown_kind_is_rejected_on_that_kind(self, kind: str) -> None:
        with pytest.raises(Rejected) as caught:
            check_number_format(kind, _fmt())
        assert caught.value.code == "unknown_number_format"
        assert caught.value.field == kind

    @pytest.mark.parametrize("kind", NUMBER_KINDS)
    def test_an_empty_prefix_is_rejected(self, kind: str) -> None:
        with pytest.raises(Rejected) as caught:
            check_number_format(kind, _fmt(""))
        assert caught.value.code == "invalid_prefix"
        assert caught.value.field == f"{kind}.prefix"

    def test_a_prefix_of_one_character_is_accepted(self) -> None:
        assert check_number_format("receipt_number", _fmt("R")).prefix == "R"

    def test_a_prefix_of_ten_characters_is_accepted(self) -> None:
        assert check_number_format("receipt_number", _fmt("A" * 10)).prefix == "A" * 10

    def test_a_prefix_of_eleven_characters_is_rejected(self) -> None:
        with pytest.raises(Rejected) as caught:
            check_number_format("receipt_number", _fmt("A" * 11))
        assert caught.value.field == "receipt_number.prefix"

    @pytest.mark.parametrize("padding", [1, 6, 12])
    def test_padding_from_1_to_12_is_accepted(self, padding: int) -> None:
        assert check_number_format("payment_id", _fmt(padding=padding)).padding == padding

    @pytest.mark.parametrize("padding", [-1, 0, 13, 100])
    def test_padding_outside_1_to_12_is_rejected(self, padding: int) -> None:
        with pytest.raises(Rejected) as caught:
            check_number_format("payment_id", _fmt(padding=padding))
        assert caught.value.code == "invalid_padding"
        assert caught.value.field == "payment_id.padding"

    def test_start_1_is_accepted(self) -> None:
        assert check_number_format("transaction_id", _fmt(start=1)).start == 1

    @pytest.mark.parametrize("kind", NUMBER_KINDS)
    @pytest.mark.parametrize("start", [0, -1, -5001])
    def test_start_below_1_is_rejected(self, kind: str, start: int) -> None:
        with pytest.raises(Rejected) as caught:
            check_number_format(kind, _fmt(start=start))
        assert caught.value.code == "invalid_start"
        assert caught.value.field == f"{kind}.start"

    def test_the_format_is_returned_unchanged(self) -> None:
        fmt = _fmt("CN-", with_year=True, padding=5, start=42)
        assert check_number_format("receipt_number", fmt) is fmt


class TestCheckNumberFormatChange:
    def test_moving_start_forward_is_allowed(self) -> None:
        new = _fmt(start=6000)
        assert check_number_format_change("receipt_number", _fmt(start=5001), new) is new

    def test_keeping_the_same_start_is_allowed(self) -> None:
        assert check_number_format_change("receipt_number", _fmt(), _fmt()) == _fmt()

    @pytest.mark.parametrize("kind", NUMBER_KINDS)
    def test_start_may_not_move_back_with_the_same_prefix_and_year_setting(self, kind: str) -> None:
        with pytest.raises(Rejected) as caught:
            check_number_format_change(kind, _fmt(start=5001), _fmt(start=5000))
        assert caught.value.code == "start_moves_back"
        assert caught.value.field == f"{kind}.start"
        assert "5001" in caught.value.detail

    def test_start_may_not_move_back_even_when_only_the_padding_changes(self) -> None:
        with pytest.raises(Rejected) as caught:
            check_number_format_change("receipt_number", _fmt(padding=4, start=5001), _fmt(padding=8, start=1))
        assert caught.value.field == "receipt_number.start"

    def test_start_may_not_move_back_with_the_year_kept(self) -> None:
        with pytest.raises(Rejected) as caught:
            check_number_format_change(
                "payment_id", _fmt("PAY-", with_year=True, start=4521), _fmt("PAY-", with_year=True, start=1)
            )
        assert caught.value.field == "payment_id.start"

    def test_start_may_move_back_with_a_new_prefix(self) -> None:
        new = _fmt("RC-", start=1)
        assert check_number_format_change("receipt_number", _fmt("R-", start=5001), new) is new

    def test_start_may_move_back_when_the_year_setting_changes(self) -> None:
        new = _fmt(with_year=True, start=1)
        assert check_number_format_change("receipt_number", _fmt(with_year=False, start=5001), new) is new

    def test_the_new_format_itself_must_be_valid(self) -> None:
        with pytest.raises(Rejected) as caught:
            check_number_format_change("receipt_number", _fmt(), _fmt(padding=0, start=9999))
        assert caught.value.field == "receipt_number.padding"

    def test_a_new_start_below_1_is_invalid_before_it_is_a_move_back(self) -> None:
        with pytest.raises(Rejected) as caught:
            check_number_format_change("receipt_number", _fmt(start=5001), _fmt(start=0))
        assert caught.value.code == "invalid_start"

    def test_an_unknown_kind_is_rejected_even_when_start_moves_forward(self) -> None:
        with pytest.raises(Rejected) as caught:
            check_number_format_change("credit_note", _fmt(start=1), _fmt(start=2))
        assert caught.value.code == "unknown_number_format"

    @given(
        old_start=st.integers(min_value=1, max_value=10**9),
        new_start=st.integers(min_value=1, max_value=10**9),
        with_year=st.booleans(),
    )
    def test_with_the_same_prefix_a_change_is_accepted_exactly_when_start_does_not_decrease(
        self, old_start: int, new_start: int, with_year: bool
    ) -> None:
        old = _fmt(with_year=with_year, start=old_start)
        new = _fmt(with_year=with_year, start=new_start)
        if new_start >= old_start:
            assert check_number_format_change("receipt_number", old, new) is new
        else:
            with pytest.raises(Rejected) as caught:
                check_number_format_change("receipt_number", old, new)
            assert caught.value.field == "receipt_number.start"


class TestChangeNumberFormats:
    def test_kinds_not_requested_keep_their_current_format(self) -> None:
        formats = change_number_formats(PaymentSettings(), {"receipt_number": _fmt("RC-", start=1)})
        assert formats == {**DEFAULT_FORMATS, "receipt_number": _fmt("RC-", start=1)}

    def test_an_empty_request_changes_nothing(self) -> None:
        assert change_number_formats(PaymentSettings(), {}) == DEFAULT_FORMATS

    def test_each_requested_kind_is_checked_against_its_current_format(self) -> None:
        current = PaymentSettings(number_formats={"receipt_number": _fmt(start=6000)})
        with pytest.raises(Rejected) as caught:
            change_number_formats(current, {"receipt_number": _fmt(start=5001)})
        assert caught.value.code == "start_moves_back"
        assert caught.value.field == "receipt_number.start"

    def test_an_unknown_kind_is_rejected_on_that_kind(self) -> None:
        with pytest.raises(Rejected) as caught:
            change_number_formats(PaymentSettings(), {"credit_note": _fmt()})
        assert caught.value.code == "unknown_number_format"
        assert caught.value.field == "credit_note"


class TestOnlineStatus:
    @pytest.mark.parametrize(
        ("word", "status"),
        [
            ("processing", PaymentStatus.PENDING),
            ("failed", PaymentStatus.FAILED),
            ("succeeded", PaymentStatus.POSTED),
            ("partially_refunded", PaymentStatus.POSTED),
            ("disputed", PaymentStatus.DISPUTED),
            ("refunded", PaymentStatus.REFUNDED),
        ],
    )
    def test_each_stripe_word_maps_to_its_status(self, word: str, status: PaymentStatus) -> None:
        assert online_status(word) is status

    def test_the_gateway_has_exactly_six_words(self) -> None:
        words = {"processing", "failed", "succeeded", "partially_refunded", "disputed", "refunded"}
        assert set(GATEWAY_STATUS) == words

    def test_no_gateway_word_maps_to_cancelled(self) -> None:
        assert PaymentStatus.CANCELLED not in GATEWAY_STATUS.values()

    @pytest.mark.parametrize("word", ["Succeeded", "canceled", "requires_action", "", "posted", " succeeded"])
    def test_an_unknown_gateway_word_is_rejected_on_gateway_status(self, word: str) -> None:
        with pytest.raises(Rejected) as caught:
            online_status(word)
        assert caught.value.code == "unknown_gateway_status"
        assert caught.value.field == "gateway_status"
        assert repr(word) in caught.value.detail


class TestMovesForward:
    def test_a_late_processing_never_overwrites_succeeded(self) -> None:
        assert moves_forward(online_status("succeeded"), online_status("processing")) is False

    def test_a_failure_after_success_is_ignored(self) -> None:
        assert moves_forward(PaymentStatus.POSTED, PaymentStatus.FAILED) is False

    def test_a_success_after_a_failure_posts_the_payment(self) -> None:
        assert moves_forward(PaymentStatus.FAILED, PaymentStatus.POSTED) is True

    def test_a_refund_follows_a_dispute(self) -> None:
        assert moves_forward(PaymentStatus.DISPUTED, PaymentStatus.REFUNDED) is True

    def test_nothing_follows_a_refund(self) -> None:
        assert not any(moves_forward(PaymentStatus.REFUNDED, s) for s in GATEWAY_ORDER)

    @pytest.mark.parametrize("status", GATEWAY_ORDER)
    def test_the_same_status_again_does_not_move(self, status: PaymentStatus) -> None:
        assert moves_forward(status, status) is False

    @pytest.mark.parametrize("current", range(len(GATEWAY_ORDER)))
    @pytest.mark.parametrize("incoming", range(len(GATEWAY_ORDER)))
    def test_pending_failed_posted_disputed_refunded_is_the_order(self, current: int, incoming: int) -> None:
        assert moves_forward(GATEWAY_ORDER[current], GATEWAY_ORDER[incoming]) is (incoming > current)

    @pytest.mark.parametrize("incoming", [*GATEWAY_ORDER, PaymentStatus.CANCELLED])
    def test_nothing_moves_a_cancelled_payment(self, incoming: PaymentStatus) -> None:
        assert moves_forward(PaymentStatus.CANCELLED, incoming) is False

    @given(st.lists(st.sampled_from(sorted(GATEWAY_STATUS)), min_size=1))
    def test_folding_any_sequence_of_gateway_words_ends_in_the_highest_ranked_one(self, words: list[str]) -> None:
        statuses = [online_status(w) for w in words]
        final = reduce(lambda cur, new: new if moves_forward(cur, new) else cur, statuses[1:], statuses[0])
        assert final is max(statuses, key=GATEWAY_ORDER.index)

    @given(st.lists(st.sampled_from(sorted(GATEWAY_STATUS)), min_size=1), st.randoms(use_true_random=False))
    def test_the_final_status_does_not_depend_on_arrival_order(self, words: list[str], rnd: random.Random) -> None:
        shuffled = list(words)
        rnd.shuffle(shuffled)

        def fold(seq: list[str]) -> PaymentStatus:
            return reduce(
                lambda cur, w: s if moves_forward(cur, s := online_status(w)) else cur, seq, PaymentStatus.PENDING
            )

        assert fold(words) is fold(shuffled)

    @given(st.lists(st.sampled_from(GATEWAY_ORDER)))
    def test_a_cancelled_payment_stays_cancelled_whatever_arrives(self, incoming: list[PaymentStatus]) -> None:
        final = reduce(lambda cur, new: new if moves_forward(cur, new) else cur, incoming, PaymentStatus.CANCELLED)
        assert final is PaymentStatus.CANCELLED

    def test_every_status_is_covered(self) -> None:
        # Charged back is reached only through a lost dispute (services/payments/disputes.py), never by rank.
        assert set(PaymentStatus) == {*GATEWAY_ORDER, PaymentStatus.CANCELLED, PaymentStatus.CHARGED_BACK}


class TestSettlementMovesForward:
    @pytest.mark.parametrize("current", range(len(SETTLEMENT_ORDER)))
    @pytest.mark.parametrize("incoming", range(len(SETTLEMENT_ORDER)))
    def test_na_in_progress_success_failed_settled_is_the_order(self, current: int, incoming: int) -> None:
        assert settlement_moves_forward(SETTLEMENT_ORDER[current], SETTLEMENT_ORDER[incoming]) is (incoming > current)

    @pytest.mark.parametrize("incoming", ["In Progress", "Failed", "Success"])
    def test_none_is_treated_as_na(self, incoming: str) -> None:
        assert settlement_moves_forward(None, incoming) is True

    def test_na_does_not_move_none(self) -> None:
        assert settlement_moves_forward(None, "N/A") is False

    def test_a_late_in_progress_never_overwrites_success(self) -> None:
        assert settlement_moves_forward("Success", "In Progress") is False

    def test_a_payout_that_fails_after_it_was_paid_is_failed(self) -> None:
        assert settlement_moves_forward("Success", "Failed") is True

    def test_a_late_paid_never_overwrites_a_failed_payout(self) -> None:
        assert settlement_moves_forward("Failed", "Success") is False

    @pytest.mark.parametrize("current", [None, *SETTLEMENT_ORDER])
    def test_an_unknown_settlement_word_never_moves_forward(self, current: str | None) -> None:
        assert settlement_moves_forward(current, "Cleared") is False

    @given(st.lists(st.sampled_from(SETTLEMENT_ORDER)))
    def test_once_settled_a_payment_never_moves_backwards(self, later: list[str]) -> None:
        words = ["In Progress", "Settled", *later]
        final = reduce(lambda cur, new: new if settlement_moves_forward(cur, new) else cur, words, "N/A")
        assert final == "Settled"


class TestProcessingTime:
    def test_a_counter_payment_is_immediate(self) -> None:
        assert processing_time(online=False, started_at=START, settled_at=None, now=START) == "Immediate"

    def test_a_counter_payment_is_immediate_even_with_a_settlement_date(self) -> None:
        later = START + timedelta(days=3)
        assert processing_time(online=False, started_at=START, settled_at=later, now=later) == "Immediate"

    def test_two_days_and_seven_point_two_hours_is_2_3_days(self) -> None:
        settled = START + timedelta(days=2, hours=7.2)
        assert processing_time(online=True, started_at=START, settled_at=settled, now=START) == "2.3 days"

    def test_exactly_one_day_is_1_0_days(self) -> None:
        settled = START + timedelta(days=1)
        assert processing_time(online=True, started_at=START, settled_at=settled, now=START) == "1.0 days"

    def test_settled_at_the_start_is_0_0_days(self) -> None:
        assert processing_time(online=True, started_at=START, settled_at=START, now=START) == "0.0 days"

    def test_while_unsettled_the_time_runs_until_now(self) -> None:
        now = START + timedelta(days=4, hours=12)
        assert processing_time(online=True, started_at=START, settled_at=None, now=now) == "4.5 days"

    def test_once_settled_now_no_longer_matters(self) -> None:
        settled = START + timedelta(days=1, hours=12)
        now = START + timedelta(days=30)
        assert processing_time(online=True, started_at=START, settled_at=settled, now=now) == "1.5 days"

    def test_a_settlement_before_the_start_is_0_0_days_not_negative(self) -> None:
        settled = START - timedelta(days=2)
        assert processing_time(online=True, started_at=START, settled_at=settled, now=START) == "0.0 days"

    def test_a_clock_behind_the_start_is_0_0_days_not_negative(self) -> None:
        now = START - timedelta(seconds=1)
        assert processing_time(online=True, started_at=START, settled_at=None, now=now) == "0.0 days"

    def test_rounds_to_one_decimal(self) -> None:
        settled = START + timedelta(days=2, hours=6.5)  # 2.2708 days
        assert processing_time(online=True, started_at=START, settled_at=settled, now=START) == "2.3 days"

    @given(st.timedeltas(min_value=timedelta(days=-400), max_value=timedelta(days=400)), st.booleans())
    def test_online_time_is_never_negative_has_one_decimal_and_is_within_half_a_tenth(
        self, elapsed: timedelta, settled: bool
    ) -> None:
        end = START + elapsed
        text = processing_time(
            online=True, started_at=START, settled_at=end if settled else None, now=end if not settled else START
        )
        match = re.fullmatch(r"(\d+\.\d) days", text)
        assert match is not None, text
        shown = Decimal(match.group(1))
        actual = max(Decimal(elapsed.total_seconds()) / Decimal(86400), Decimal(0))
        assert shown >= 0
        assert abs(shown - actual) <= Decimal("0.05")


class TestCheckCancellable:
    @pytest.mark.parametrize("status", [PaymentStatus.POSTED, PaymentStatus.PENDING, "Posted", "Pending"])
    def test_posted_and_pending_payments_may_be_cancelled(self, status: str) -> None:
        check_cancellable(status, "entered on the wrong account")  # raises Rejected if refused

    @pytest.mark.parametrize(
        "status", [PaymentStatus.FAILED, PaymentStatus.DISPUTED, PaymentStatus.REFUNDED, PaymentStatus.CANCELLED]
    )
    def test_other_payments_may_not_be_cancelled(self, status: PaymentStatus) -> None:
        with pytest.raises(Rejected) as caught:
            check_cancellable(status, "entered on the wrong account")
        assert caught.value.code == "not_cancellable"
        assert caught.value.field == "status"
        assert str(status) in caught.value.detail

    @pytest.mark.parametrize("reason", ["", " ", "\t\n  "])
    def test_a_cancellation_needs_a_reason(self, reason: str) -> None:
        with pytest.raises(Rejected) as caught:
            check_cancellable(PaymentStatus.POSTED, reason)
        assert caught.value.code == "reason_required"
        assert caught.value.field == "reason"

    def test_a_cancelled_payment_is_refused_before_its_missing_reason(self) -> None:
        with pytest.raises(Rejected) as caught:
            check_cancellable(PaymentStatus.CANCELLED, "")
        assert caught.value.field == "status"


class TestCheckVerifiable:
    @pytest.mark.parametrize("status", [PaymentStatus.POSTED, PaymentStatus.DISPUTED])
    def test_an_unverified_posted_or_disputed_online_payment_may_be_verified(self, status: PaymentStatus) -> None:
        check_verifiable(True, Verification.PENDING, status)  # raises Rejected if refused

    def test_a_counter_payment_is_not_verified(self) -> None:
        with pytest.raises(Rejected) as caught:
            check_verifiable(False, Verification.PENDING, PaymentStatus.POSTED)
        assert caught.value.code == "not_online"
        assert caught.value.field == "payment_id"

    def test_a_counter_payment_is_refused_before_anything_else(self) -> None:
        with pytest.raises(Rejected) as caught:
            check_verifiable(False, Verification.VERIFIED, PaymentStatus.PENDING)
        assert caught.value.code == "not_online"

    @pytest.mark.parametrize("verification", [Verification.VERIFIED, "Verified"])
    def test_an_already_verified_payment_is_not_verified_again(self, verification: str) -> None:
        with pytest.raises(Rejected) as caught:
            check_verifiable(True, verification, PaymentStatus.POSTED)
        assert caught.value.code == "already_verified"
        assert caught.value.field == "verification"

    @pytest.mark.parametrize(
        "status", [PaymentStatus.PENDING, PaymentStatus.FAILED, PaymentStatus.REFUNDED, PaymentStatus.CANCELLED]
    )
    def test_a_payment_that_is_not_posted_is_not_verified(self, status: PaymentStatus) -> None:
        with pytest.raises(Rejected) as caught:
            check_verifiable(True, Verification.PENDING, status)
        assert caught.value.code == "not_posted"
        assert caught.value.field == "status"
        assert str(status) in caught.value.detail


class TestCurrentBalance:
    def test_the_balance_is_the_reported_one_less_what_was_collected_since(self) -> None:
        assert current_balance(Decimal("245.75"), Decimal("100.00"), Decimal("999")) == Decimal("145.75")

    def test_with_nothing_collected_since_the_balance_is_the_reported_one(self) -> None:
        assert current_balance(Decimal("245.75"), Decimal("0"), Decimal("999")) == Decimal("245.75")

    def test_without_a_report_the_balance_is_the_open_items(self) -> None:
        assert current_balance(None, Decimal("100.00"), Decimal("312.40")) == Decimal("312.40")

    def test_a_reported_zero_is_a_report_not_a_missing_one(self) -> None:
        assert current_balance(Decimal("0"), Decimal("0"), Decimal("312.40")) == Decimal("0")

    def test_collecting_more_than_reported_gives_a_credit_balance(self) -> None:
        assert current_balance(Decimal("100.00"), Decimal("150.00"), Decimal("0")) == Decimal("-50.00")

    @given(
        st.decimals(min_value=-(10**7), max_value=10**7, places=2),
        st.decimals(min_value=0, max_value=10**7, places=2),
        st.decimals(min_value=0, max_value=10**7, places=2),
    )
    def test_with_a_report_open_items_do_not_matter(
        self, reported: Decimal, collected: Decimal, open_: Decimal
    ) -> None:
        assert current_balance(reported, collected, open_) == reported - collected
        assert current_balance(reported, collected, open_ + 1) == current_balance(reported, collected, open_)


class TestPaymentQuery:
    def test_defaults_are_newest_first_50_per_page(self) -> None:
        query = PaymentQuery()
        assert query.sort == "-date"
        assert query.limit == 50
        assert query.descending is True
        assert query.cursor is None

    def test_a_range_within_one_day_is_accepted(self) -> None:
        query = PaymentQuery(date_from=date(2025, 3, 1), date_to=date(2025, 3, 1))
        assert query.date_from == query.date_to

    def test_an_ordered_range_is_accepted(self) -> None:
        assert PaymentQuery(date_from=date(2025, 1, 1), date_to=date(2025, 12, 31)).date_to == date(2025, 12, 31)

    def test_a_range_ending_before_it_starts_is_rejected_on_date_from(self) -> None:
        with pytest.raises(Rejected) as caught:
            PaymentQuery(date_from=date(2025, 3, 2), date_to=date(2025, 3, 1))
        assert caught.value.code == "invalid_date_range"
        assert caught.value.field == "date_from"

    def test_an_open_ended_range_is_accepted_either_way(self) -> None:
        assert PaymentQuery(date_from=date(2099, 1, 1)).date_to is None
        assert PaymentQuery(date_to=date(1999, 1, 1)).date_from is None

    @pytest.mark.parametrize(
        ("sort", "descending"), [("date", False), ("-date", True), ("amount", False), ("-amount", True)]
    )
    def test_each_sort_is_accepted_and_a_leading_minus_means_descending(self, sort: str, descending: bool) -> None:
        assert PaymentQuery(sort=sort).descending is descending

    def test_the_sorts_are_date_and_amount_both_ways(self) -> None:
        assert set(SORTS) == {"date", "-date", "amount", "-amount"}

    @pytest.mark.parametrize("sort", ["", "Date", "recorded_at", "--date", "+date", "date ", "status"])
    def test_an_unknown_sort_is_rejected(self, sort: str) -> None:
        with pytest.raises(Rejected) as caught:
            PaymentQuery(sort=sort)
        assert caught.value.code == "invalid_sort"
        assert caught.value.field == "sort"

    @pytest.mark.parametrize("limit", [1, 2, MAX_PAGE - 1, MAX_PAGE])
    def test_a_limit_from_1_to_max_page_is_accepted(self, limit: int) -> None:
        assert PaymentQuery(limit=limit).limit == limit

    @pytest.mark.parametrize("limit", [-1, 0, MAX_PAGE + 1, 10_000])
    def test_a_limit_outside_1_to_max_page_is_rejected(self, limit: int) -> None:
        with pytest.raises(Rejected) as caught:
            PaymentQuery(limit=limit)
        assert caught.value.code == "invalid_limit"
        assert caught.value.field == "limit"

    @pytest.mark.parametrize("status", [s.value for s in PaymentStatus])
    def test_every_status_value_is_a_valid_filter(self, status: str) -> None:
        assert PaymentQuery(status=status).status == status

    @pytest.mark.parametrize("status", ["pending", "POSTED", "Paid", "", "succeeded", "Posted "])
    def test_a_status_filter_must_be_a_status_value(self, status: str) -> None:
        with pytest.raises(Rejected) as caught:
            PaymentQuery(status=status)
        assert caught.value.code == "invalid_status"
        assert caught.value.field == "status"

    def test_no_status_filter_is_accepted(self) -> None:
        assert PaymentQuery(status=None).status is None

    def test_a_cursor_is_carried(self) -> None:
        assert PaymentQuery(cursor="WyIyMDI1LTAzLTAxIl0").cursor == "WyIyMDI1LTAzLTAxIl0"


# --- a batch of payments allocated at once (commands from other systems) ---

money = st.decimals(min_value="0.01", max_value=10**5, places=2, allow_nan=False, allow_infinity=False)


class TestAllocateInOrder:
    @given(
        outstanding=st.lists(st.decimals(min_value=0, max_value=10**5, places=2), min_size=1, max_size=3),
        payments=st.lists(st.tuples(st.integers(min_value=0, max_value=2), money), max_size=12),
        threshold=st.decimals(min_value=0, max_value=10**3, places=2),
    )
    def test_a_batch_allocates_exactly_as_the_same_payments_one_after_another(
        self, outstanding: list[Decimal], payments: list[tuple[int, Decimal]], threshold: Decimal
    ) -> None:
        """INVARIANT: batching changes nothing: each payment sees what the ones before it left on its item."""
        items = {("bill", f"INV-{n}"): amount for n, amount in enumerate(outstanding)}
        wanted = [(("bill", f"INV-{n % len(outstanding)}"), amount) for n, amount in payments]
        left = dict(items)
        expected: list[tuple[Decimal, Allocation]] = []
        refused = False
        for item, amount in wanted:
            try:
                allocation = allocate(left[item], amount, threshold)
            except Rejected:
                refused = True
                break
            expected.append((left[item], allocation))
            left[item] = allocation.outstanding_after
        if refused:
            with pytest.raises(Rejected):
                allocate_in_order(items, wanted, threshold)
            return
        result = allocate_in_order(items, wanted, threshold)
        assert result == expected
        for item, before in items.items():
            applied = sum(
                (a.applied for (key, _), (_, a) in zip(wanted, result, strict=True) if key == item), Decimal(0)
            )
            assert 0 <= applied <= before, "never more allocated to an item than it owed"

    def test_two_payments_for_one_bill_see_one_another(self) -> None:
        bill = ("bill", "INV-1")
        result = allocate_in_order(
            {bill: Decimal("145.50")}, [(bill, Decimal("100")), (bill, Decimal("60"))], Decimal(100)
        )
        assert result == [
            (Decimal("145.50"), Allocation(applied=Decimal("100"), outstanding_after=Decimal("45.50"))),
            (Decimal("45.50"), Allocation(applied=Decimal("45.50"), outstanding_after=Decimal("0.00"))),
        ]

    def test_a_payment_beyond_what_is_left_after_the_earlier_ones_is_refused(self) -> None:
        bill = ("bill", "INV-1")
        with pytest.raises(Rejected) as refused:
            allocate_in_order({bill: Decimal("100")}, [(bill, Decimal("100")), (bill, Decimal("11"))], Decimal(10))
        assert refused.value.field == "amount"
