"""The chaos harness's schedules come from the seed alone: a failing seed replays the same inputs and faults."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.chaos.faults import DEFAULT_KINDS, KINDS, VARIANTS, malformed_record, plan_faults
from tests.chaos.workload import PAYMENT_KINDS, plan_inputs

TARGETS = ["payments#1", "payments#2", "kpi#1", "kpi#2"]


@given(st.integers(min_value=0, max_value=10**9))
def test_the_same_seed_gives_the_same_schedule(seed: int) -> None:
    assert plan_inputs(seed, seconds=60, payments=300, accounts=50) == plan_inputs(
        seed, seconds=60, payments=300, accounts=50
    )
    assert plan_faults(seed, kinds=KINDS, seconds=60, per_minute=6, targets=TARGETS) == plan_faults(
        seed, kinds=KINDS, seconds=60, per_minute=6, targets=TARGETS
    )


def test_another_seed_gives_another_schedule() -> None:
    assert plan_inputs(1, seconds=60, payments=300, accounts=50) != plan_inputs(
        2, seconds=60, payments=300, accounts=50
    )
    assert plan_faults(1, kinds=KINDS, seconds=60, per_minute=6, targets=TARGETS) != plan_faults(
        2, kinds=KINDS, seconds=60, per_minute=6, targets=TARGETS
    )


@given(st.integers(min_value=0, max_value=10**9), st.floats(min_value=30, max_value=900))
def test_faults_land_inside_the_window_and_every_selected_kind_appears(seed: int, seconds: float) -> None:
    faults = plan_faults(seed, kinds=DEFAULT_KINDS, seconds=seconds, per_minute=6, targets=TARGETS)
    assert {f.kind for f in faults} == set(DEFAULT_KINDS)
    assert all(0 <= f.at <= seconds for f in faults)
    assert len(faults) >= round(6 * seconds / 60)
    assert all(f.target in TARGETS for f in faults if f.kind in ("kill_instance", "pause_instance"))


def test_ten_minutes_bring_at_least_fifty_faults_and_the_asked_volume() -> None:
    faults = plan_faults(7, kinds=DEFAULT_KINDS, seconds=600, per_minute=6, targets=TARGETS)
    inputs = plan_inputs(7, seconds=600, payments=20_000, accounts=2_000)
    assert len(faults) >= 50
    assert sum(1 for i in inputs if i.kind in PAYMENT_KINDS) == 20_000
    assert {i.kind for i in inputs} == {"counter", "command", "webhook", "credit_note", "cancel"}
    keys = [i.key for i in inputs]
    assert len(keys) == len(set(keys))


def test_only_selected_kinds_are_planned() -> None:
    faults = plan_faults(3, kinds=("kill_instance", "malformed"), seconds=120, per_minute=10, targets=TARGETS)
    assert {f.kind for f in faults} == {"kill_instance", "malformed"}


def test_an_unknown_kind_is_refused_with_its_name() -> None:
    try:
        plan_faults(3, kinds=("kill_everything",), seconds=60, per_minute=6, targets=TARGETS)
    except ValueError as exc:
        assert "kill_everything" in str(exc)
    else:
        raise AssertionError("an unknown fault kind was accepted")


def test_every_malformed_variant_is_marked_and_the_oversized_one_is_large() -> None:
    for variant in VARIANTS:
        record = malformed_record("m-1", "payments.commands.v1", variant)
        assert ("x-chaos-malformed", b"m-1") in record.headers
    assert len(malformed_record("m-2", "payments.commands.v1", "oversized").value) > 500_000
