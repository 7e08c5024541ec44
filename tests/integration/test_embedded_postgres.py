"""The embedded PostgreSQL takes its tuning from `PAYDESK_POSTGRES_*`: applied on the first start of a data
directory (a restart), kept on the next start without another, and changed when a setting changes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from paydesk.embedded import EmbeddedPostgres, EmbeddedPostgresSettings


async def _shown(url: str) -> tuple[str, str, int]:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return (
            await conn.fetchval("SHOW max_connections"),
            await conn.fetchval("SHOW shared_buffers"),
            await conn.fetchval("SELECT pg_backend_pid()"),
        )
    finally:
        await conn.close()


def _postmaster(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().split()[0])


def test_the_server_runs_with_the_configured_connections_and_buffers_and_restarts_only_when_they_change(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "pgdata"
    postgres = EmbeddedPostgres(data_dir, settings=EmbeddedPostgresSettings(max_connections=210))
    try:
        url = postgres.start()
        assert asyncio.run(_shown(url))[:2] == ("210", "128MB")
        postmaster = _postmaster(data_dir)
        assert postgres._server.get_pid() == postmaster, "the wheel stops the restarted server at exit, not the old"

        again = EmbeddedPostgres(data_dir, settings=EmbeddedPostgresSettings(max_connections=210))
        assert again.start() == url and _postmaster(data_dir) == postmaster, "the same settings: no restart"

        changed = EmbeddedPostgres(
            data_dir, settings=EmbeddedPostgresSettings(max_connections=220, shared_buffers="32MB")
        )
        changed.start()
        assert asyncio.run(_shown(url))[:2] == ("220", "32MB")
    finally:
        postgres.stop()
    assert not (data_dir / "postmaster.pid").exists(), "stopped at the end"
