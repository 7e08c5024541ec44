"""The supervisor's pure parts: the restart backoff and the stop order taken from the registry."""

from __future__ import annotations

import pytest

from paydesk.registry import INTAKE, START_ORDER
from paydesk.supervisor import Backoff, stop_order


def test_the_backoff_doubles_from_one_second_and_is_capped_at_thirty() -> None:
    backoff = Backoff()
    assert [backoff.delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 30, 30, 30]
    assert backoff.delay(10_000) == 30  # no overflow however long a service keeps dying
    assert backoff.delay(0) == 0


def test_a_custom_backoff_keeps_its_cap() -> None:
    assert [Backoff(initial=0.5, factor=3, cap=5).delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.5, 4.5, 5]


def test_the_runner_stops_intake_first_then_the_pure_consumers_in_reverse_start_order() -> None:
    order = stop_order(START_ORDER, INTAKE)
    assert order[:3] == ["gateway_bridge", "payments", "console"]
    assert sorted(order) == sorted(START_ORDER) and len(order) == len(set(order))
    consumers = [name for name in START_ORDER if name not in INTAKE]
    assert order[3:] == list(reversed(consumers))
    assert order[-1] == "kpi"  # started first, stopped last: it listens until everything upstream has drained


def test_an_intake_service_missing_from_the_start_order_is_refused() -> None:
    with pytest.raises(ValueError, match="ledger"):
        stop_order(["kpi", "payments"], ["ledger"])
