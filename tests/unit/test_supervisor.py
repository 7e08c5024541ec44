"""The supervisor's pure parts: the restart backoff and the stop order taken from the registry."""

from __future__ import annotations

import pytest

from paydesk.launcher import process_stop_order, service_processes
from paydesk.registry import INTAKE, START_ORDER
from paydesk.supervisor import Backoff, Supervisor, stop_order


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


def test_payments_runs_as_api_processes_on_its_port_and_one_workers_process_on_another() -> None:
    assert [(p.name, p.role, p.port) for p in service_processes("payments", {})] == [("payments", "all", 8102)]
    processes = service_processes("payments", {"PAYMENTS_API_PROCESSES": "1"})
    assert [(p.name, p.role, p.port) for p in processes] == [
        ("payments", "api", 8102),
        ("payments-workers", "workers", 8112),
    ]
    assert processes[-1].environment() == {"PAYDESK_PROCESS_ROLE": "workers", "PAYMENTS_HTTP_PORT": "8112"}
    env = {"PAYMENTS_HTTP_PORT": "9000", "PAYMENTS_API_PROCESSES": "3", "PAYMENTS_WORKERS_HTTP_PORT": "9001"}
    assert [(p.name, p.port) for p in service_processes("payments", env)] == [
        ("payments", 9000),
        ("payments-api-2", 9000),
        ("payments-api-3", 9000),
        ("payments-workers", 9001),
    ]
    alone = service_processes("payments", {"PAYMENTS_API_PROCESSES": "0"})
    assert [(p.name, p.role, p.port) for p in alone] == [("payments", "all", 8102)]
    assert [(p.name, p.role) for p in service_processes("receipts", {})] == [("receipts", "all")]


def test_a_split_service_stops_its_api_processes_before_its_workers_in_the_intake_order() -> None:
    order = process_stop_order(START_ORDER, INTAKE, {"PAYMENTS_API_PROCESSES": "2"})
    assert order[:5] == ["gateway_bridge", "payments", "payments-api-2", "payments-workers", "console"]
    assert order[5:] == stop_order(START_ORDER, INTAKE)[3:]


def test_an_intake_service_missing_from_the_start_order_is_refused() -> None:
    with pytest.raises(ValueError, match="ledger"):
        stop_order(["kpi", "payments"], ["ledger"])


class FakeServer:
    """A server that dies when told and whose restarts fail `refusals` times first."""

    def __init__(self, refusals: int = 0) -> None:
        self.running = True
        self.refusals = refusals
        self.starts = 0

    def alive(self) -> bool:
        return self.running

    def restart(self) -> None:
        self.starts += 1
        if self.refusals:
            self.refusals -= 1
            raise RuntimeError("port still taken")
        self.running = True


def test_a_watched_server_that_dies_is_started_again_after_the_backoff_with_a_line_each_step() -> None:
    now = [100.0]
    lines: list[str] = []
    supervisor = Supervisor(say=lines.append, clock=lambda: now[0])
    server = FakeServer(refusals=1)
    supervisor.watch("kafka", alive=server.alive, restart=server.restart)
    supervisor.check()
    assert lines == [] and server.starts == 0

    server.running = False
    supervisor.check()
    assert lines == ["kafka is not running; restarting in 1s (failure 1 in a row)"]
    now[0] += 0.5
    supervisor.check()
    assert server.starts == 0, "not before the backoff has run out"
    now[0] += 0.5
    supervisor.check()  # the first try fails: tried again after the next, longer delay
    assert server.starts == 1 and not server.running
    assert lines[-1] == "kafka did not start (RuntimeError('port still taken')); restarting in 2s (failure 2 in a row)"
    now[0] += 2
    supervisor.check()
    assert server.running and server.starts == 2
    assert lines[-2:] == ["starting kafka again", "kafka is running again"]
    assert supervisor.watched["kafka"].restarts == 1


def test_a_stopping_runner_restarts_no_watched_server() -> None:
    supervisor = Supervisor(say=lambda line: None, clock=lambda: 0.0)
    server = FakeServer()
    supervisor.watch("postgres", alive=server.alive, restart=server.restart)
    supervisor.stop([])
    server.running = False
    supervisor.check()
    assert supervisor.watched["postgres"].restart_at is None and server.starts == 0
