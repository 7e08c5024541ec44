"""Pure payment rules: document numbering, amount analysis, allocation and cash change."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from services.payments.domain import (
    DEFAULT_FORMATS,
    Allocation,
    Analysis,
    NumberFormat,
    Outcome,
    allocate,
    change_given,
)
from shared.errors import Rejected


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
