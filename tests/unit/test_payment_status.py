"""Payment statuses: one enum with the wire strings, one "counts as collected" rule."""

from __future__ import annotations

import pytest

from shared.contracts import PaymentStatus, counts_as_collected


class TestPaymentStatus:
    def test_the_wire_strings_are_the_ones_every_service_already_uses(self) -> None:
        assert [s.value for s in PaymentStatus] == [
            "Pending",
            "Failed",
            "Posted",
            "Disputed",
            "Refunded",
            "Cancelled",
            "Charged back",
        ]

    def test_a_status_compares_equal_to_its_wire_string(self) -> None:
        assert PaymentStatus("Posted") is PaymentStatus.POSTED
        assert str(PaymentStatus.POSTED) == "Posted"


class TestCountsAsCollected:
    """INVARIANT: money counts as collected only while the utility holds it or its return is merely possible."""

    @pytest.mark.parametrize(
        ("status", "collected"),
        [
            (PaymentStatus.PENDING, False),
            (PaymentStatus.FAILED, False),
            (PaymentStatus.POSTED, True),
            (PaymentStatus.DISPUTED, True),
            (PaymentStatus.REFUNDED, False),
            (PaymentStatus.CANCELLED, False),
            (PaymentStatus.CHARGED_BACK, False),
        ],
    )
    def test_each_status(self, status: PaymentStatus, collected: bool) -> None:
        assert counts_as_collected(status) is collected

    @pytest.mark.parametrize("status", ["Posted", "Disputed"])
    def test_plain_strings_from_events_and_rows_follow_the_same_rule(self, status: str) -> None:
        assert counts_as_collected(status) is True

    @pytest.mark.parametrize("status", ["posted", "", "Settled"])
    def test_an_unknown_or_misspelt_status_is_not_collected(self, status: str) -> None:
        assert counts_as_collected(status) is False
