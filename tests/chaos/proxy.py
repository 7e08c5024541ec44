"""A small TCP proxy in front of PostgreSQL that can drop every connection or delay every byte, on demand.

Hand-written on asyncio on purpose: the usual tool (toxiproxy) is a separate binary or a Docker image, and a
fresh machine with only Python, Java and Maven has neither. It listens on loopback TCP and forwards to the
embedded server's Unix socket (which listens on no TCP port at all), so the services that connect through it
see a real network path that the harness can cut or slow down.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass(eq=False)
class FaultyProxy:
    """`127.0.0.1:<port>` -> `upstream_socket`. `drop_for(s)` closes every connection and refuses new ones
    for `s` seconds; `delay_for(s, ms)` holds every chunk for `ms` milliseconds for `s` seconds."""

    upstream_socket: str
    port: int = 0
    delay_ms: float = 0.0
    refusing: bool = False
    connections: int = 0
    _server: asyncio.Server | None = field(default=None, init=False, repr=False)
    _pipes: set[asyncio.Task[None]] = field(default_factory=set, init=False, repr=False)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set, init=False, repr=False)

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self._cut_all()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def drop_for(self, seconds: float) -> None:
        self.refusing = True
        self._cut_all()
        try:
            await asyncio.sleep(seconds)
        finally:
            self.refusing = False

    async def delay_for(self, seconds: float, delay_ms: float) -> None:
        self.delay_ms = delay_ms
        try:
            await asyncio.sleep(seconds)
        finally:
            self.delay_ms = 0.0

    def _cut_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()  # a reset, as a dead network path would look, not a polite close
        self._writers.clear()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            client_writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_unix_connection(self.upstream_socket)
        except OSError:
            client_writer.transport.abort()  # Postgres is restarting: the client sees the same as without us
            return
        self.connections += 1
        self._writers.update((client_writer, upstream_writer))
        pipes = [
            asyncio.create_task(self._pipe(client_reader, upstream_writer)),
            asyncio.create_task(self._pipe(upstream_reader, client_writer)),
        ]
        self._pipes.update(pipes)
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        for task in pipes:
            task.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)
        self._pipes.difference_update(pipes)
        for writer in (client_writer, upstream_writer):
            self._writers.discard(writer)
            writer.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while chunk := await reader.read(65536):
                if self.delay_ms:
                    await asyncio.sleep(self.delay_ms / 1000)
                writer.write(chunk)
                await writer.drain()
