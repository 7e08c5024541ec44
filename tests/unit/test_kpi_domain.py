"""KPI rules: periods, the header KPIs, period-over-period change, local days and alert crossings."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.kpi.domain import (
    AlertRule,
    Comparison,
    Metric,
    ReconciliationDay,
    average_days,
    collection_rate,
    days_to_collect,
    exception_age_bucket,
    hour_window,
    hour_window_label,
    local_day,
    month_bounds,
    percent_change,
    previous_period,
    should_raise,
    statement_line_count,
    validate_rule,
)
from shared.contracts import counts_as_collected
from shared.errors import Rejected


class TestMonthBounds:
    def test_april_2025_runs_from_the_first_of_april_to_the_first_of_may(self) -> None:
        assert month_bounds("2025-04") == (date(2025, 4, 1), date(2025, 5, 1))

    def test_december_rolls_over_into_january_of_the_next_year(self) -> None:
        assert month_bounds("2025-12") == (date(2025, 12, 1), date(2026, 1, 1))

    def test_january_starts_the_year(self) -> None:
        assert month_bounds("2025-01") == (date(2025, 1, 1), date(2025, 2, 1))

    def test_february_of_a_leap_year_ends_on_the_first_of_march(self) -> None:
        assert month_bounds("2024-02") == (date(2024, 2, 1), date(2024, 3, 1))

    @pytest.mark.parametrize("month", range(1, 13))
    def test_every_month_ends_where_the_next_one_starts(self, month: int) -> None:
        start, end = month_bounds(f"2025-{month:02d}")
        assert start == date(2025, month, 1)
        assert end > start
        assert end.day == 1
        assert (end - start).days in {28, 29, 30, 31}

    @pytest.mark.parametrize(
        "period",
        [
            "2025-13",
            "2025-00",
            "2025-4",
            "25-04",
            "abc",
            "",
            "2025/04",
            "2025-04-01",
            " 2025-04",
            "2025-04 ",
            "2025-04\n",
            "0000-01",
            "9999-12",
        ],
    )
    def test_a_bad_period_is_rejected_naming_the_period_field(self, period: str) -> None:
        with pytest.raises(Rejected) as caught:
            month_bounds(period)
        assert caught.value.field == "period"
        assert caught.value.code == "invalid_period"
        assert caught.value.status == 422


class TestPreviousPeriod:
    def test_the_month_before_april_is_march(self) -> None:
        assert previous_period("2025-04") == "2025-03"

    def test_january_compares_with_december_of_the_year_before(self) -> None:
        assert previous_period("2025-01") == "2024-12"

    def test_a_bad_period_is_rejected(self) -> None:
        with pytest.raises(Rejected):
            previous_period("2025-13")


class TestCollectionRate:
    def test_the_sample_data_collects_68_31_percent_of_april(self) -> None:
        assert collection_rate(Decimal("145.50"), Decimal("213.00")) == Decimal("68.31")

    def test_nothing_due_means_no_rate_rather_than_a_division_by_zero(self) -> None:
        assert collection_rate(Decimal("10.00"), Decimal("0.00")) is None

    def test_collecting_more_than_was_due_goes_above_100(self) -> None:
        assert collection_rate(Decimal("300.00"), Decimal("200.00")) == Decimal("150.00")

    def test_half_a_hundredth_rounds_to_even(self) -> None:
        # 1 / 800 x 100 = 0.125 exactly -> 0.12; 3 / 800 x 100 = 0.375 -> 0.38 (banker's rounding, as for money)
        assert collection_rate(Decimal("1"), Decimal("800")) == Decimal("0.12")
        assert collection_rate(Decimal("3"), Decimal("800")) == Decimal("0.38")

    @given(
        st.decimals(min_value=0, max_value=10**9, places=2, allow_nan=False),
        st.decimals(min_value=Decimal("0.01"), max_value=10**9, places=2, allow_nan=False),
    )
    def test_the_rate_is_within_half_a_hundredth_of_the_exact_ratio(self, collected: Decimal, due: Decimal) -> None:
        rate = collection_rate(collected, due)
        assert rate is not None
        assert rate.as_tuple().exponent == -2
        assert abs(rate - collected / due * 100) <= Decimal("0.005")


class TestAverageCollectionTime:
    def test_the_sample_payment_took_20_days_from_bill_to_payment(self) -> None:
        assert days_to_collect(date(2025, 3, 31), date(2025, 4, 20)) == 20
        assert average_days(20, 1) == Decimal("20.00")

    def test_a_payment_without_an_issue_date_is_not_timed(self) -> None:
        assert days_to_collect(None, date(2025, 4, 20)) is None

    def test_a_payment_dated_before_its_bill_counts_as_same_day(self) -> None:
        assert days_to_collect(date(2025, 4, 20), date(2025, 4, 18)) == 0

    def test_no_timed_payments_means_no_average(self) -> None:
        assert average_days(0, 0) is None

    def test_the_mean_is_exact_to_two_decimals(self) -> None:
        assert average_days(10, 3) == Decimal("3.33")


class TestPercentChange:
    def test_growth_is_positive(self) -> None:
        assert percent_change(Decimal("150.00"), Decimal("100.00")) == Decimal("50.00")

    def test_a_fall_is_negative(self) -> None:
        assert percent_change(Decimal("0.00"), Decimal("145.50")) == Decimal("-100.00")

    def test_there_is_no_change_from_nothing(self) -> None:
        assert percent_change(Decimal("10.00"), Decimal("0.00")) is None
        assert percent_change(Decimal("10.00"), None) is None
        assert percent_change(None, Decimal("10.00")) is None


class TestLocalDay:
    def test_late_evening_in_chicago_is_still_that_day_there_but_the_next_in_utc(self) -> None:
        moment = datetime(2025, 4, 21, 3, 30, tzinfo=UTC)
        assert local_day(moment, ZoneInfo("America/Chicago")) == date(2025, 4, 20)
        assert local_day(moment, ZoneInfo("UTC")) == date(2025, 4, 21)

    def test_hour_windows_are_utc_hours_with_an_iso_interval_label(self) -> None:
        moment = datetime(2025, 4, 20, 5, 59, 59, tzinfo=ZoneInfo("America/Chicago"))
        window = hour_window(moment)
        assert window == datetime(2025, 4, 20, 10, 0, tzinfo=UTC)
        assert hour_window_label(window) == "2025-04-20T10:00Z/PT1H"


class TestCollectedStatus:
    """KPI counts with the one rule in shared.contracts (Disputed counts too: see tests/unit/test_payment_status.py)."""

    @pytest.mark.parametrize(
        ("status", "collected"),
        [("Posted", True), ("Refunded", False), ("Failed", False), ("Cancelled", False), ("Pending", False)],
    )
    def test_posted_money_is_collected_and_refunded_failed_cancelled_or_pending_is_not(
        self, status: str, collected: bool
    ) -> None:
        assert counts_as_collected(status) is collected

    def test_a_disputed_payment_stays_collected_until_it_is_refunded(self) -> None:
        assert counts_as_collected("Disputed") is True
        assert counts_as_collected("Refunded") is False


class TestAlerts:
    def rule(self, metric: Metric, comparison: Comparison, threshold: str) -> AlertRule:
        return AlertRule("AL-1", metric, comparison, Decimal(threshold))

    def test_a_rate_below_the_threshold_breaches_a_below_rule(self) -> None:
        rule = self.rule(Metric.COLLECTION_RATE, Comparison.BELOW, "90")
        assert rule.breached_by(Decimal("89.99"))
        assert not rule.breached_by(Decimal("90.00"))
        assert not rule.breached_by(None), "no rate (nothing due) is not a breach"

    def test_a_count_above_the_threshold_breaches_an_above_rule(self) -> None:
        rule = self.rule(Metric.FAILED_ONLINE_PAYMENTS_PER_HOUR, Comparison.ABOVE, "2")
        assert not rule.breached_by(Decimal(2))
        assert rule.breached_by(Decimal(3))

    def test_an_alert_is_raised_only_on_the_way_into_breach(self) -> None:
        assert should_raise(was_breached=False, breached_now=True)
        assert not should_raise(was_breached=True, breached_now=True)
        assert not should_raise(was_breached=True, breached_now=False)
        assert not should_raise(was_breached=False, breached_now=False)

    def test_a_series_of_values_raises_once_per_crossing(self) -> None:
        rule = self.rule(Metric.COLLECTION_RATE, Comparison.BELOW, "90")
        breached, raised = False, 0
        for value in ["95", "80", "70", "60", "92", "91", "85", "85"]:
            now = rule.breached_by(Decimal(value))
            raised += should_raise(breached, now)
            breached = now
        assert raised == 2

    @pytest.mark.parametrize(
        ("metric", "threshold"),
        [
            (Metric.COLLECTION_RATE, "100.01"),
            (Metric.COLLECTION_RATE, "-1"),
            (Metric.FAILED_ONLINE_PAYMENTS_PER_HOUR, "2.5"),
            (Metric.PENDING_VERIFICATIONS, "-3"),
        ],
    )
    def test_thresholds_that_mean_nothing_are_rejected_naming_the_field(self, metric: Metric, threshold: str) -> None:
        with pytest.raises(Rejected) as caught:
            validate_rule(metric, Comparison.ABOVE, Decimal(threshold))
        assert caught.value.field == "threshold"

    def test_sensible_thresholds_are_accepted(self) -> None:
        validate_rule(Metric.COLLECTION_RATE, Comparison.BELOW, Decimal("90"))
        validate_rule(Metric.FAILED_ONLINE_PAYMENTS_PER_HOUR, Comparison.ABOVE, Decimal("10"))


class TestReconciliationSummary:
    """The daily reconciliation summary's rules (services/kpi/domain.py, fed by reconciliation's events)."""

    def test_pushed_lines_and_split_parts_are_not_statement_lines(self) -> None:
        assert statement_line_count(["STM-1-00001", "STM-1-00002"]) == 2
        assert statement_line_count(["PL-abc", "STM-1-00003/1", "STM-1-00003/2"]) == 0

    @pytest.mark.parametrize(
        ("days", "bucket"),
        [(0, "0-1d"), (1, "0-1d"), (2, "2-7d"), (7, "2-7d"), (8, "8-30d"), (30, "8-30d"), (31, ">30d")],
    )
    def test_exceptions_age_in_the_queue_s_buckets(self, days: int, bucket: str) -> None:
        raised = datetime(2025, 4, 1, 9, tzinfo=UTC)
        assert exception_age_bucket(raised, raised + timedelta(days=days, hours=3)) == bucket

    @given(lines=st.integers(min_value=0, max_value=10**6), data=st.data())
    def test_matched_percent_is_between_0_and_100_and_100_when_nothing_is_left(self, lines: int, data: Any) -> None:
        reconciled = data.draw(st.integers(min_value=0, max_value=lines))
        found = ReconciliationDay(date(2025, 4, 1), "USD", lines, reconciled, Decimal("10.00"), Decimal("4.00"), {})
        assert Decimal(0) <= found.matched_percent <= Decimal(100)
        if reconciled == lines:
            assert found.matched_percent == Decimal("100.0")
        elif reconciled == 0:
            assert found.matched_percent == Decimal("0.0")
        one_more = ReconciliationDay(date(2025, 4, 1), "USD", lines + 1, reconciled, Decimal(0), Decimal(0), {})
        assert one_more.matched_percent <= found.matched_percent  # a new unmatched line never raises the share
        assert found.amount_unreconciled == Decimal("6.00")
