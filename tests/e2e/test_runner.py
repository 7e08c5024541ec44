"""`paydesk run` itself, as a user starts it: embedded Postgres and broker, every service as a process.

Ctrl-C at the terminal is SIGINT to the runner's whole process group; it must reach the runner only, which
stops intake, then the pure consumers, then the broker, then Postgres, and leaves nothing running. A service
killed meanwhile is started again and the system keeps running."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from paydesk.embedded import free_port
from paydesk.launcher import process_stop_order, service_processes
from paydesk.registry import INTAKE, START_ORDER
from tests.support.brokers import TEST_BROKER

pytestmark = [pytest.mark.e2e]
T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]


def wait_for(check: Callable[[], T | None], *, within: float = 300.0) -> T:
    """Poll until `check` is truthy; a bound for a busy machine, not a budget."""
    deadline = time.monotonic() + within
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"condition not met within {within}s; last value: {last!r}")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line names `text` (the broker's and Postgres's name their data dirs)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


class Run:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.output = root / "runner.out"
        self.ports = {name: free_port() for name in START_ORDER}
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")}
        env.update({f"{name.upper()}_HTTP_PORT": str(port) for name, port in self.ports.items()})
        env.update({f"{name.upper()}_WORKERS_HTTP_PORT": str(free_port()) for name in START_ORDER})
        # Not the default: payments split into api and workers, so the split's start, restart and stop order are proven.
        env["PAYMENTS_API_PROCESSES"] = "1"
        self.env = env
        # Every process the runner supervises: payments runs as api processes and a workers process.
        self.processes = [process.name for name in START_ORDER for process in service_processes(name, env)]
        env.update({"PAYDESK_KAFKA_PORT": str(free_port()), "PAYDESK_BROKER": TEST_BROKER})
        env.update({"PAYDESK_OTEL_EXPORTER": "none", "PYTHONPATH": str(ROOT)})
        with self.output.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "paydesk.cli", "run", "--data-dir", str(root / "data"), "--no-sample-data"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
                start_new_session=True,  # stands for the terminal's process group
            )

    def text(self) -> str:
        return self.output.read_text()

    def started(self) -> dict[str, list[int]]:
        pids: dict[str, list[int]] = {}
        for name, pid in re.findall(r"^started (\S+) \(pid (\d+)\)$", self.text(), re.M):
            pids.setdefault(name, []).append(int(pid))
        return pids

    def ready(self, name: str) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.ports[name]}/health/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def postmaster(self) -> int:
        return int((self.root / "data" / "pgdata" / "postmaster.pid").read_text().split()[0])


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    run = Run(tmp_path)
    yield run
    if run.process.poll() is None:  # the test failed midway: leave nothing behind
        os.killpg(run.process.pid, signal.SIGTERM)
        try:
            run.process.wait(120)
        except subprocess.TimeoutExpired:
            run.process.kill()
    for pid in [*[p for pids in run.started().values() for p in pids], *processes_mentioning(str(tmp_path))]:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_ctrl_c_stops_the_running_system_in_order_and_a_dead_service_is_restarted(run: Run) -> None:
    def running() -> bool:
        assert run.process.poll() is None, run.text()[-5000:]
        return "Paydesk is running." in run.text()

    wait_for(running)
    runner_group = os.getpgid(run.process.pid)
    postmaster = run.postmaster()
    broker = [pid for pid in processes_mentioning(str(run.root / "data" / "kafka")) if pid != postmaster]
    assert broker, "the broker's process names its data directory"
    services = {name: pids[0] for name, pids in run.started().items()}
    assert sorted(services) == sorted(run.processes)
    assert {"payments", "payments-workers"} <= set(services)
    for pid in [*services.values(), *broker, postmaster]:
        assert os.getpgid(pid) != runner_group, f"{pid} shares the terminal's process group"

    os.kill(services["receipts"], signal.SIGKILL)
    restarted = wait_for(lambda: [p for p in run.started()["receipts"][1:] if p != services["receipts"]])
    assert re.search(r"^receipts exited with code -9; restarting in 1s", run.text(), re.M)
    wait_for(lambda: run.ready("receipts"))
    assert run.process.poll() is None and alive(restarted[0])

    os.killpg(run.process.pid, signal.SIGINT)  # Ctrl-C
    assert run.process.wait(300) == 0, run.text()[-5000:]
    text = run.text()
    stopped = re.findall(r"^stopped (\S+)", text, re.M)
    assert stopped == [*process_stop_order(START_ORDER, INTAKE, run.env), "kafka", "postgres"], text[-5000:]
    codes = re.findall(r"^stopped \S+ \(exit code (-?\d+)\)$", text, re.M)
    # Each stopped by its SIGTERM (uvicorn shuts down, then re-raises it: -15), none by the Ctrl-C (-2).
    assert len(codes) == len(run.processes) and set(codes) <= {"0", "-15"}, text[-5000:]
    for name in run.processes:
        assert "Application shutdown complete." in (run.root / "data" / "logs" / f"{name}.log").read_text()
    every_pid = [*[p for pids in run.started().values() for p in pids], *broker, postmaster]
    wait_for(lambda: not any(alive(pid) for pid in every_pid), within=60)
    assert processes_mentioning(str(run.root)) == []
