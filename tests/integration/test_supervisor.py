"""`paydesk.supervisor` with real processes: Ctrl-C (SIGINT to the runner's process group) reaches the runner
only, which stops its children in order and leaves none running; a child that dies is started again."""

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

import pytest

from paydesk.supervisor import Backoff, Supervisor

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("supervised_sleepers.py")
NAMES = ["kpi", "receipts", "payments", "gateway_bridge"]
INTAKE = ["gateway_bridge", "payments"]


def wait_for(check: Callable[[], T | None], *, within: float = 120.0) -> T:
    """Poll until `check` is truthy; the bound is generous, a passing check returns at once."""
    deadline = time.monotonic() + within
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {within}s; last value: {last!r}")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


class Runner:
    def __init__(self, output: Path) -> None:
        self.output = output
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with output.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, str(RUNNER), *NAMES, "--intake", *INTAKE],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # the runner's group stands for the terminal's: SIGINT goes to all of it
            )

    def text(self) -> str:
        return self.output.read_text()

    def started(self) -> dict[str, list[int]]:
        pids: dict[str, list[int]] = {}
        for name, pid in re.findall(r"^started (\w+) \(pid (\d+)\)$", self.text(), re.M):
            pids.setdefault(name, []).append(int(pid))
        return pids

    def ctrl_c(self) -> None:
        os.killpg(self.process.pid, signal.SIGINT)

    def wait(self) -> int:
        return self.process.wait(120)


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[Runner]:
    runner = Runner(tmp_path / "runner.out")
    yield runner
    if runner.process.poll() is None:
        runner.process.kill()
        runner.process.wait()
    for pids in runner.started().values():
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_ctrl_c_reaches_only_the_runner_which_stops_children_in_order_and_leaves_none(runner: Runner) -> None:
    wait_for(lambda: "running" in runner.text() and len(runner.started()) == len(NAMES))
    pids = {name: found[0] for name, found in runner.started().items()}
    for pid in pids.values():
        assert os.getpgid(pid) != os.getpgid(runner.process.pid)  # its own session, out of the terminal's group

    runner.ctrl_c()
    assert runner.wait() == 0
    text = runner.text()
    stopped = re.findall(r"^stopped (\w+) \(exit code (-?\d+)\)$", text, re.M)
    assert [name for name, _ in stopped] == ["gateway_bridge", "payments", "receipts", "kpi"]
    assert all(code == "0" for _, code in stopped), text  # each stopped by SIGTERM, none hit by the Ctrl-C
    assert "KeyboardInterrupt" not in text
    for name in NAMES:
        assert f"{name} got SIGTERM" in text
    assert text.rstrip().endswith("stopped.")
    wait_for(lambda: not any(alive(pid) for pid in pids.values()))


def test_a_child_that_dies_is_restarted_with_backoff_and_the_runner_keeps_going(runner: Runner) -> None:
    wait_for(lambda: "running" in runner.text() and len(runner.started()) == len(NAMES))
    first = runner.started()["receipts"][0]
    os.kill(first, signal.SIGKILL)

    restarted = wait_for(lambda: [pids for pids in [runner.started().get("receipts", [])] if len(pids) >= 2])[0]
    assert restarted[1] != first and alive(restarted[1])
    assert re.search(r"^receipts exited with code -9; restarting in 0\.5s \(failure 1 in a row\)$", runner.text(), re.M)
    assert runner.process.poll() is None  # one child's death does not stop the system
    os.kill(restarted[1], signal.SIGKILL)  # again, at once: the next delay doubles
    wait_for(lambda: len(runner.started().get("receipts", [])) >= 3)
    assert re.search(r"^receipts exited with code -9; restarting in 1s \(failure 2 in a row\)$", runner.text(), re.M)

    runner.ctrl_c()
    assert runner.wait() == 0
    every_pid = [pid for pids in runner.started().values() for pid in pids]
    wait_for(lambda: not any(alive(pid) for pid in every_pid))
    assert len(re.findall(r"^stopped \w+ \(exit code 0\)$", runner.text(), re.M)) == len(NAMES)


def test_the_backoff_resets_once_a_child_has_stayed_up_long_enough() -> None:
    now = [0.0]
    lines: list[str] = []
    supervisor = Supervisor(say=lines.append, backoff=Backoff(), stable_after=30.0, clock=lambda: now[0])
    supervisor.add("quick", [sys.executable, "-c", "pass"])  # exits at once, every time
    supervisor.start()
    delays = []
    for advance in (0.0, 0.0, 40.0):  # twice straight after its start, then after 40 s up
        child = supervisor.children["quick"]
        assert child.process is not None
        child.process.wait(60)
        now[0] += advance
        supervisor.check()  # notices the exit
        assert child.restart_at is not None
        delays.append(child.restart_at - now[0])
        now[0] = child.restart_at
        supervisor.check()  # its time has come: started again
        assert child.restart_at is None
    assert delays == [1.0, 2.0, 1.0]
    assert sum(line.startswith("started quick") for line in lines) == 4
    supervisor.stop(["quick"])
