"""Items held by a collections arrangement, in payments' pure rules: what each covered item still owes as the
arrangement receives money or loses it back, and the refusal of a payment naming a held item."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from services.payments.domain import HoldKind, give_back_in_reverse, held_item, take_off_in_order

D = Decimal
amounts = st.decimals(min_value=D("0.01"), max_value=D("100000"), places=2)


class TestTakeOffInOrder:
    def test_the_earliest_item_is_paid_first(self) -> None:
        assert take_off_in_order([D("120.00"), D("180.00")], D("100.00")) == [D("20.00"), D("180.00")]
        assert take_off_in_order([D("120.00"), D("180.00")], D("150.00")) == [D("0.00"), D("150.00")]

    def test_more_than_owed_leaves_nothing_and_nothing_negative(self) -> None:
        assert take_off_in_order([D("10.00"), D("5.00")], D("99.00")) == [D("0.00"), D("0.00")]

    def test_nothing_received_changes_nothing(self) -> None:
        assert take_off_in_order([D("10.00")], D("0")) == [D("10.00")]
        assert take_off_in_order([D("10.00")], D("-5.00")) == [D("10.00")]

    @given(st.lists(amounts, max_size=8), amounts)
    def test_what_comes_off_is_what_was_received_up_to_what_was_owed(self, owed: list[Decimal], got: Decimal) -> None:
        """INVARIANT: never below zero, never more taken off than received or owed, earlier items first."""
        left = take_off_in_order(owed, got)
        assert all(D(0) <= after <= before for before, after in zip(owed, left, strict=True))
        assert sum(owed, D(0)) - sum(left, D(0)) == min(got, sum(owed, D(0)))
        paid_down = [before - after for before, after in zip(owed, left, strict=True)]
        # An item is touched only once every earlier one is cleared.
        for index, share in enumerate(paid_down):
            if share > 0:
                assert all(x == 0 for x in left[:index])


class TestGiveBackInReverse:
    def test_the_latest_item_paid_down_owes_again_first(self) -> None:
        assert give_back_in_reverse([D("0.00"), D("150.00")], [D("120.00"), D("180.00")], D("30.00")) == [
            D("0.00"),
            D("180.00"),
        ]
        assert give_back_in_reverse([D("0.00"), D("150.00")], [D("120.00"), D("180.00")], D("80.00")) == [
            D("50.00"),
            D("180.00"),
        ]

    @given(st.lists(amounts, min_size=1, max_size=8), amounts, amounts)
    def test_taking_off_then_giving_back_the_same_restores_what_was_owed(
        self, owed: list[Decimal], got: Decimal, extra: Decimal
    ) -> None:
        """INVARIANT: a reversed payment undoes exactly what it did, and nothing owes more than when taken over."""
        taken = take_off_in_order(owed, got)
        received = sum(owed, D(0)) - sum(taken, D(0))
        assert give_back_in_reverse(taken, owed, received) == owed
        assert give_back_in_reverse(taken, owed, received + extra) == owed


class TestHeldItem:
    def test_a_covered_bill_names_the_field_and_the_arrangement(self) -> None:
        refusal = held_item("bill", "INV-1", HoldKind.COVERED, "PA-2025-000001")
        assert (refusal.code, refusal.field) == ("item_held_by_arrangement", "item_reference")
        assert "PA-2025-000001" in refusal.detail and "INV-1" in refusal.detail

    def test_a_withdrawn_installment_says_so(self) -> None:
        refusal = held_item("installment", "PA-2025-000001/2", HoldKind.WITHDRAWN, "PA-2025-000001")
        assert "withdrawn" in refusal.detail
        assert refusal.field == "item_reference"

    def test_only_a_released_hold_lets_payments_through(self) -> None:
        assert [k for k in HoldKind if not k.holds] == [HoldKind.RELEASED]
