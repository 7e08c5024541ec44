"""KPI period rules."""

from __future__ import annotations

from datetime import date

import pytest

from services.kpi.domain import month_bounds
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
