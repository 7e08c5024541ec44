"""Reconciliation's pure rules: till variance, splits, exception ageing, the daily summary."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.reconciliation import domain, matching
from shared.errors import Rejected

D = Decimal


class TestTillClose:
    def test_cash_in_the_till_is_received_minus_change(self) -> None:
        assert domain.expected_cash_of(D("145.50"), D("200.00"), D("54.50")) == D("145.50")
        assert domain.expected_cash_of(D("20.00"), None, None) == D("20.00")

    def test_a_shortage_beyond_the_threshold_needs_an_exception(self) -> None:
        till = domain.TillCount(D("300.00"), D("50.00"), D("290.00"), D("50.00"))
        assert till.variance == D("-10.00")
        assert till.needs_exception(D("5.00")) and not till.needs_exception(D("10.00"))


class TestSplit:
    def test_parts_must_add_up_to_the_line(self) -> None:
        domain.check_split(D("75.00"), [domain.Split(D("70.00")), domain.Split(D("5.00"), fee=True)])
        with pytest.raises(Rejected) as refused:
            domain.check_split(D("75.00"), [domain.Split(D("70.00")), domain.Split(D("4.00"))])
        assert refused.value.code == "split_does_not_add_up"

    def test_a_part_of_the_other_sign_is_refused(self) -> None:
        with pytest.raises(Rejected) as refused:
            domain.check_split(D("75.00"), [domain.Split(D("80.00")), domain.Split(D("-5.00"))])
        assert refused.value.code == "split_part_sign"


def test_exceptions_age_into_buckets() -> None:
    now = datetime(2025, 4, 30, tzinfo=UTC)
    ages = [domain.age_bucket(now - timedelta(days=d), now) for d in (0, 1, 2, 7, 8, 30, 31)]
    assert ages == ["0-1d", "0-1d", "2-7d", "2-7d", "8-30d", "8-30d", ">30d"]


def test_the_matched_share_of_an_empty_day_is_complete() -> None:
    assert domain.Summary(0, 0, D(0)).matched_percent == D(100)
    assert domain.Summary(3, 2, D("5.00")).matched_percent == D("66.7")


class TestPastWindow:
    def test_the_last_day_of_the_window_is_still_inside_it(self) -> None:
        origin = datetime(2025, 4, 1, tzinfo=UTC).date()
        assert not domain.past_window(origin, 1, origin + timedelta(days=1))
        assert domain.past_window(origin, 1, origin + timedelta(days=2))
        assert not domain.past_window(origin, 0, origin) and domain.past_window(origin, 0, origin + timedelta(days=1))

    @given(
        origin=st.dates(min_value=date(2020, 1, 1), max_value=date(2030, 1, 1)),
        window=st.integers(min_value=0, max_value=30),
        offset=st.integers(min_value=-5, max_value=40),
    )
    def test_the_scheduler_and_the_matching_engine_agree_on_missing(
        self, origin: date, window: int, offset: int
    ) -> None:
        today = origin + timedelta(days=offset)
        item = matching.ExpectedItem("pay:P1", D("10.00"), "USD", origin, window)
        engine = matching.reconcile([], [item], today=today).items["pay:P1"]
        assert domain.past_window(origin, window, today) is (engine is matching.ItemOutcome.MISSING)
