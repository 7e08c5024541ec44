"""The pure helpers of the end-to-end benchmark (bench/e2e.py): percentiles, rates, buckets, the table, CPU per
payment and the paced run's memory verdict."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.e2e_paced import paced_report
from bench.e2e_report import (
    Memory,
    Rollup,
    Sample,
    ceiling,
    cpu_per_payment,
    cpu_rows,
    cpu_used,
    memory_over_run,
    memory_rows,
    number,
    per_second,
    percentile,
    percentiles,
    proportional_memory,
    rate,
    rollup_of,
    shared_once_memory,
    table,
)


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


class TestMemoryOverAPacedRun:
    def test_the_baseline_is_the_first_sample_after_warm_up_and_the_end_the_last_before_the_load_stopped(self) -> None:
        samples = [(0.0, 80.0), (30.0, 95.0), (60.0, 100.0), (300.0, 112.0), (600.0, 104.0), (601.0, 200.0)]
        found = memory_over_run("payments", samples, warm_at=60.0, end_at=600.0)
        assert found == Memory("payments", warm=100.0, end=104.0, most=112.0)
        assert found is not None and round(found.growth, 3) == 0.12 and not found.flat  # 12% above, at 300 s

    def test_growth_of_at_most_ten_percent_is_flat_and_shrinking_is_fine(self) -> None:
        assert Memory("kpi", warm=100.0, end=110.0, most=110.0).flat
        assert not Memory("kpi", warm=100.0, end=100.0, most=110.5).flat
        assert Memory("kpi", warm=100.0, end=60.0, most=100.0).flat

    def test_no_sample_between_warm_up_and_the_end_gives_no_figure(self) -> None:
        assert memory_over_run("kpi", [(10.0, 50.0)], warm_at=60.0, end_at=600.0) is None
        assert memory_over_run("kpi", [], warm_at=0.0, end_at=1.0) is None

    def test_rows_give_each_process_its_figures_and_verdict_and_none_to_the_benchmark(self) -> None:
        rows = memory_rows(
            [Memory("bench", 100.0, 300.0, 300.0), Memory("receipts", 128.0, 160.0, 170.0)], not_judged=["bench"]
        )
        assert rows == [
            ["bench", "100", "300", "300", "+200.0%", "-"],
            ["receipts", "128", "160", "170", "+32.8%", "no"],
        ]

    @given(st.lists(st.floats(min_value=1, max_value=1e5), min_size=1, max_size=50))
    def test_the_verdict_is_that_no_sample_rose_ten_percent_above_the_baseline(self, rss: list[float]) -> None:
        found = memory_over_run("p", [(float(t), value) for t, value in enumerate(rss)], warm_at=0.0, end_at=1e9)
        assert found is not None
        assert (found.warm, found.end) == (rss[0], rss[-1])
        assert found.flat == all(value <= rss[0] * 1.1 for value in rss)


def test_the_paced_report_judges_every_process_but_the_benchmark_and_says_whether_the_pace_was_kept() -> None:
    every_30s = [float(t) for t in range(0, 601, 30)]
    samples = {
        "bench": [Sample(t, 1.0, 100.0 + t, 0.0, 100.0 + t) for t in every_30s],  # grows: it keeps every payment
        "payments": [Sample(t, 5.0, 120.0 + (t % 60) / 10, 0.0, 120.0 + (t % 60) / 10) for t in every_30s],
        "receipts": [Sample(t, 5.0, 128.0 + t / 10, 0.0, 128.0 + t / 10) for t in every_30s],
    }
    phase = {"rate": 50.0, "late_sends": 3, "late_ms": {"p99": 12.5}}
    lines, memory = paced_report({"lockbox": phase}, samples, origin=0.0, warmup=60.0, load_ended=600.0)
    assert lines[0] == "lockbox at 50/s: 3 sends more than 1 s late (p99 12.5 ms behind their moment)"
    assert memory["payments"]["flat"] and not memory["receipts"]["flat"]
    assert (memory["receipts"]["memory_warm_mib"], memory["receipts"]["memory_end_mib"]) == (134.0, 188.0)
    assert "| bench " in "\n".join(lines) and lines[-2] == "Memory flat within 10% in every process: no"
    del samples["receipts"]
    assert paced_report({"lockbox": phase}, samples, 0.0, 60.0, 600.0)[0][-2].endswith(": yes")


class TestCpuPerPayment:
    def test_cpu_between_two_moments_is_read_off_the_running_total_linearly_between_samples(self) -> None:
        samples = [(100.0, 10.0), (101.0, 10.5), (102.0, 11.5), (103.0, 11.5)]
        assert cpu_used(samples, 101.0, 103.0) == 1.0
        assert cpu_used(samples, 100.5, 101.5) == 0.25 + 0.5  # half of each second's 0.5 and 1.0
        assert cpu_used(samples, 90.0, 200.0) == 1.5  # flat before the first sample and after the last
        assert cpu_used([], 0.0, 1.0) is None

    def test_each_process_gets_its_milliseconds_per_payment_and_nothing_without_payments(self) -> None:
        samples = {
            "payments": [(0.0, 0.0), (10.0, 4.0)],  # 4 CPU seconds over the phase
            "postgres": [(0.0, 2.0), (10.0, 5.0)],  # 3
            "broker": [(0.0, 1.0), (10.0, 1.5)],  # 0.5
        }
        assert cpu_per_payment(samples, 0.0, 10.0, 500) == {"payments": 8.0, "postgres": 6.0, "broker": 1.0}
        assert cpu_per_payment(samples, 0.0, 10.0, 0) == {}

    def test_the_ceiling_is_the_cores_milliseconds_over_the_milliseconds_one_payment_costs(self) -> None:
        assert ceiling(2, 20.0) == 100.0
        assert ceiling(2, 0.0) is None

    def test_the_table_totals_each_phase_with_and_without_the_benchmark_and_gives_the_ceilings(self) -> None:
        per_phase = {
            "http": {"payments": 8.0, "postgres": 6.0, "bench": 6.0},
            "lockbox": {"payments": 3.0, "postgres": 2.0, "bench": 5.0},
        }
        rows, totals = cpu_rows(per_phase, cores=2)
        assert totals["http"] == {
            "total_ms": 20.0,
            "system_ms": 14.0,
            "ceiling_per_second": 100.0,
            "system_ceiling_per_second": pytest.approx(142.857, abs=1e-3),
        }
        assert totals["lockbox"]["ceiling_per_second"] == 200.0
        assert totals["lockbox"]["system_ceiling_per_second"] == 400.0
        assert rows[:3] == [["bench", "6.0", "5.0"], ["payments", "8.0", "3.0"], ["postgres", "6.0", "2.0"]]
        assert rows[3:] == [
            ["total", "20.0", "10.0"],
            ["total without bench", "14.0", "5.0"],
            ["ceiling on 2 cores (payments/s)", "100.0", "200.0"],
            ["ceiling without bench (payments/s)", "142.9", "400.0"],
        ]


SMAPS_ROLLUP = """55d0c0a4c000-7ffd6b955000 ---p 00000000 00:00 0                          [rollup]
Rss:               40960 kB
Pss:               12288 kB
Pss_Shmem:          8192 kB
Shared_Clean:      20480 kB
Shared_Dirty:      16384 kB
Private_Clean:      1024 kB
Private_Dirty:      3072 kB
Private_Hugetlb:       0 kB
"""


class TestMemoryThatCountsSharedPagesOnce:
    def test_a_rollup_gives_rss_pss_and_the_private_pages_as_uss_in_mib(self) -> None:
        assert rollup_of(SMAPS_ROLLUP) == Rollup(rss=40.0, pss=12.0, uss=4.0, shmem=8.0)
        assert rollup_of("") == Rollup(0.0, 0.0, 0.0, 0.0)

    def test_a_service_with_its_children_is_the_sum_of_their_pss(self) -> None:
        assert proportional_memory([Rollup(120.0, 90.0, 80.0), Rollup(60.0, 40.0, 35.0)]) == 130.0

    def test_postgres_is_its_private_pages_plus_the_shared_buffers_once_however_many_backends_touched_them(
        self,
    ) -> None:
        # Four backends, each 5 MiB of its own, each mapping the same 100 MiB of shared buffers (PSS 25 each).
        backends = [Rollup(rss=105.0, pss=30.0, uss=5.0)] * 4
        private, shared = shared_once_memory(backends)
        assert (private, shared) == (20.0, 100.0)
        assert sum(b.rss for b in backends) == 420.0, "what summed RSS said: the buffers four times over"

    def test_a_new_backend_touching_the_same_buffers_adds_only_its_own_pages(self) -> None:
        before = sum(shared_once_memory([Rollup(105.0, 35.0, 5.0)] * 3))  # 3 backends share 90 MiB: 30 each
        after = sum(shared_once_memory([Rollup(95.0, 27.5, 5.0)] * 4))  # a fourth maps the same 90 MiB
        assert (before, after) == (105.0, 110.0)


def test_the_paced_verdict_judges_postgres_by_its_shared_once_memory_not_its_summed_rss() -> None:
    every_30s = [float(t) for t in range(0, 601, 30)]
    # More backends touch the buffers over time: summed RSS climbs 40%, the memory counted once stays put.
    samples = {
        "postgres": [
            Sample(t, 3.0, 500.0 + t / 3, 0.0, 300.0, 128.0, 90.0 + t / 60, 10 + int(t) // 60) for t in every_30s
        ]
    }
    lines, memory = paced_report({}, samples, origin=0.0, warmup=60.0, load_ended=600.0)
    assert memory["postgres"]["flat"] and lines[-2].endswith(": yes")
    text = "\n".join(lines)
    assert "Postgres at the end of the load: 172 MiB private (its processes' USS) + 128 MiB shared once" in text
    assert "shared memory (shared buffers, bounded by shared_buffers) 90 -> 100 MiB and processes 10 -> 20" in text
