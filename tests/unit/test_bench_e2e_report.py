"""The pure helpers of the end-to-end benchmark (bench/e2e.py): percentiles, rates, buckets and the table."""

from __future__ import annotations

import pytest

from bench.e2e_report import number, per_second, percentile, percentiles, rate, table


def test_percentile_is_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([3.0, 1.0, 2.0], 0) == 1.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_percentiles_of_nothing_are_none() -> None:
    assert percentiles([]) == {"p50": None, "p95": None, "p99": None, "max": None}
    assert percentiles([5.0, 1.0]) == {"p50": 1.0, "p95": 5.0, "p99": 5.0, "max": 5.0}


def test_rate_and_buckets() -> None:
    assert rate(100, 10.0, 20.0) == 10.0
    assert rate(0, 10.0, 20.0) is None
    assert rate(5, 10.0, 10.0) is None
    assert rate(5, 10.0, None) is None
    assert per_second([100.2, 100.9, 102.5, 99.0], origin=100.0) == [2, 0, 1]


def test_table_pads_columns_and_aligns_figures_right() -> None:
    text = table(["stage", "per second"], [["posted", number(1234.56)], ["receipt", number(None)]])
    assert text.splitlines() == [
        "| stage   | per second |",
        "|---------|-----------:|",
        "| posted  |    1,234.6 |",
        "| receipt |          - |",
    ]
    assert number(12000) == "12,000"
