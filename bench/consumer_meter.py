"""What a consumer bench measures besides wall time, all of it independent of how busy the machine is: this
process's CPU seconds, the CPU seconds of the Postgres backends serving it, and the SQL statements it ran."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine


def _postgres_cpu(data_dir: Path) -> float:
    """CPU seconds (user + system) of the postmaster's children still running: our pooled connections' backends."""
    postmaster = psutil.Process(int((data_dir / "postmaster.pid").read_text().split()[0]))
    total = 0.0
    for child in postmaster.children():
        try:
            times = child.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


@dataclass
class ConsumerMeter:
    """Wall time, CPU (ours and Postgres's) and statements between `start()` and `stop()`."""

    engine: AsyncEngine
    data_dir: Path
    statements: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    postgres_cpu: float = 0.0
    _marks: tuple[float, float, float] = field(default=(0.0, 0.0, 0.0))

    def _count(self, *args: Any) -> None:
        self.statements += 1

    def start(self) -> None:
        self.statements = 0
        event.listen(self.engine.sync_engine, "before_cursor_execute", self._count)
        self._marks = (time.perf_counter(), time.process_time(), _postgres_cpu(self.data_dir))

    def stop(self) -> None:
        # Postgres first: its backends stay connected in the pool, so their CPU so far is theirs for this run.
        pg = _postgres_cpu(self.data_dir)
        self.wall = time.perf_counter() - self._marks[0]
        self.cpu = time.process_time() - self._marks[1]
        self.postgres_cpu = pg - self._marks[2]
        event.remove(self.engine.sync_engine, "before_cursor_execute", self._count)

    def report(self, what: str, count: int) -> str:
        return (
            f"applied     {count:,} {what} in {self.wall:.2f} s: {count / self.wall:,.1f} events/s\n"
            f"cpu/event   {1000 * self.cpu / count:.2f} ms consumer + {1000 * self.postgres_cpu / count:.2f} ms "
            f"postgres = {1000 * (self.cpu + self.postgres_cpu) / count:.2f} ms "
            f"({count / max(self.cpu + self.postgres_cpu, 1e-9):,.0f} events per CPU-second)\n"
            f"statements  {self.statements:,}: {self.statements / count:.2f} per event"
        )
