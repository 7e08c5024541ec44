"""A small process supervisor for `paydesk run`: children in their own sessions, restarts with backoff, ordered stop.

Every child is started with `start_new_session=True`, so a Ctrl-C at the terminal reaches the runner alone;
the runner then stops the children one by one in the order it is given (SIGTERM to the child's process group,
SIGKILL after `stop_timeout`). A child that exits while the runner is not stopping is started again after an
exponential backoff (1 s, 2 s, 4 s ... capped at 30 s), which resets once the child has stayed up for
`stable_after` seconds. The pure parts (`Backoff`, `stop_order`) are unit-tested; the rest in
`tests/integration/test_supervisor.py` with real processes.

What the runner starts itself rather than as a child (the embedded broker and Postgres, which keep their own
process handles) is `watch`ed: when it is found not running it is started again, with the same backoff and a log
line. Such a restart blocks the supervising loop until the server answers (seconds); children that die meanwhile
are noticed right after.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before the n-th consecutive restart: `initial * factor**(n-1)`, never more than `cap`."""

    initial: float = 1.0
    factor: float = 2.0
    cap: float = 30.0

    def delay(self, failures: int) -> float:
        if failures < 1:
            return 0.0
        return min(self.cap, self.initial * self.factor ** min(failures - 1, 64))


def stop_order(start_order: Sequence[str], intake: Sequence[str]) -> list[str]:
    """Intake first (in the order given), then everything else in reverse start order."""
    unknown = [name for name in intake if name not in start_order]
    if unknown:
        raise ValueError(f"intake services not in the start order: {unknown}")
    return [*intake, *(name for name in reversed(start_order) if name not in intake)]


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str] | None = None
    log_file: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None
    restarts: int = 0


@dataclass
class Watched:
    """A server the runner started itself: how to tell it runs, how to start it again."""

    name: str
    alive: Callable[[], bool]
    restart: Callable[[], object]
    up_since: float = 0.0
    failures: int = 0
    restart_at: float | None = None
    restarts: int = 0


def _default_say(line: str) -> None:
    print(line, flush=True)


@dataclass
class Supervisor:
    say: Callable[[str], None] = _default_say
    backoff: Backoff = field(default_factory=Backoff)
    stable_after: float = 30.0
    stop_timeout: float = 30.0
    clock: Callable[[], float] = time.monotonic
    children: dict[str, Child] = field(default_factory=dict)
    watched: dict[str, Watched] = field(default_factory=dict)
    stop_requested: bool = False
    _stopping: bool = field(default=False, init=False)

    def add(
        self, name: str, argv: list[str], *, env: dict[str, str] | None = None, log_file: Path | None = None
    ) -> None:
        if name in self.children:
            raise ValueError(f"{name} is supervised already")
        self.children[name] = Child(name, argv, env, log_file)

    def watch(self, name: str, *, alive: Callable[[], bool], restart: Callable[[], object]) -> None:
        """Restart `name` (with backoff) whenever `alive()` says it is not running; `restart()` blocks until it is."""
        if name in self.watched or name in self.children:
            raise ValueError(f"{name} is supervised already")
        self.watched[name] = Watched(name, alive, restart, up_since=self.clock())

    def start(self, names: Iterable[str] | None = None) -> None:
        for name in names if names is not None else list(self.children):
            self._spawn(self.children[name])

    def _spawn(self, child: Child) -> None:
        output: IO[bytes] | int | None = None
        if child.log_file is not None:
            output = open(child.log_file, "ab")  # noqa: SIM115 - the child keeps its own copy
        try:
            child.process = subprocess.Popen(
                child.argv,
                env=child.env,
                stdout=output,
                stderr=subprocess.STDOUT if output is not None else None,
                start_new_session=True,  # its own process group: a Ctrl-C at the terminal reaches the runner only
            )
        finally:
            if output is not None and not isinstance(output, int):
                output.close()
        child.started_at = self.clock()
        child.restart_at = None
        self.say(f"started {child.name} (pid {child.process.pid})")

    def request_stop(self, *_: object) -> None:
        self.stop_requested = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGTERM, self.request_stop)

    def check(self) -> None:
        """One pass: notice children that exited and start those whose backoff has run out."""
        if self._stopping:
            return
        now = self.clock()
        for child in self.children.values():
            process = child.process
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.restarts += 1
                    self._spawn(child)
                continue
            if process is None or process.poll() is None:
                continue
            if now - child.started_at >= self.stable_after:
                child.failures = 0  # it had been up long enough: this is a new run of bad luck
            child.failures += 1
            delay = self.backoff.delay(child.failures)
            child.restart_at = now + delay
            self.say(
                f"{child.name} exited with code {process.returncode}; restarting in {delay:g}s "
                f"(failure {child.failures} in a row)"
            )
        for server in self.watched.values():
            self._check_watched(server, now)

    def _check_watched(self, server: Watched, now: float) -> None:
        if server.restart_at is None:
            if server.alive():
                return
            if now - server.up_since >= self.stable_after:
                server.failures = 0
            self._retry_later(server, now, "is not running")
            return
        if now < server.restart_at:
            return
        self.say(f"starting {server.name} again")
        try:
            server.restart()
        except Exception as exc:  # it did not come up: said, and tried again later, never the end of the runner
            self._retry_later(server, self.clock(), f"did not start ({exc!r:.200})")
            return
        server.restart_at = None
        server.restarts += 1
        server.up_since = self.clock()
        self.say(f"{server.name} is running again")

    def _retry_later(self, server: Watched, now: float, why: str) -> None:
        server.failures += 1
        delay = self.backoff.delay(server.failures)
        server.restart_at = now + delay
        self.say(f"{server.name} {why}; restarting in {delay:g}s (failure {server.failures} in a row)")

    def serve(self, interval: float = 0.2) -> None:
        """Supervise until SIGINT/SIGTERM (`request_stop`); does not stop the children."""
        while not self.stop_requested:
            self.check()
            time.sleep(interval)

    def stop(self, order: Sequence[str]) -> None:
        """Stop every child, those in `order` first and one at a time, then any others."""
        self._stopping = True
        rest = [name for name in self.children if name not in order]
        for name in [*[n for n in order if n in self.children], *rest]:
            child = self.children[name]
            process = child.process
            if process is None or process.poll() is not None:
                continue
            self.say(f"stopping {name}")
            _signal_group(process, signal.SIGTERM)
            try:
                process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.say(f"{name} did not stop within {self.stop_timeout:g}s; killing it")
                _signal_group(process, signal.SIGKILL)
                process.wait()
            else:
                _signal_group(process, signal.SIGKILL)  # anything it left behind in its group
            self.say(f"stopped {name} (exit code {process.returncode})")

    def pids(self) -> dict[str, int]:
        return {
            name: child.process.pid
            for name, child in self.children.items()
            if child.process is not None and child.process.poll() is None
        }


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        if process.poll() is None:
            process.send_signal(sig)
