"""`paydesk run`: the whole system on one machine, embedded Postgres and Kafka unless given by URL.

It supervises (`paydesk.supervisor`): every child runs in its own session (Postgres too: `pg_ctl` detaches the
postmaster), so a Ctrl-C reaches the runner alone; a service, or the embedded broker, that dies is restarted
with backoff; and the runner stops only on SIGINT/SIGTERM, in order: intake (`INTAKE`), the pure consumers, the
broker, Postgres.

The broker is Apache Kafka (data in `.paydesk/kafka`, kept across restarts) where Java 17+ and its jars are
here, else Tansu, which keeps messages in memory only. Stop order matters for the latter: intake first
(gateway bridge, payments), each service draining its outbox as it stops, the pure consumers last, then the
broker, then Postgres. Whatever a consumer had not read yet is still in the producers' outboxes (kept for
the retention period) and is replayed to the next broker incarnation; inboxes make that harmless.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from aiokafka import AIOKafkaProducer

from paydesk.embedded import EmbeddedBroker, EmbeddedKafka, EmbeddedPostgres, EmbeddedTansu, kafka_unavailable
from paydesk.migrations import upgrade
from paydesk.registry import DEFAULT_PORTS, INTAKE, REGISTRY, START_ORDER
from paydesk.sample_data import generate_accounts, seed_sample
from paydesk.supervisor import Supervisor, stop_order
from shared.contracts import CONTENT_TYPE, Topic
from shared.messaging import provision_topics
from shared.settings import ServiceSettings


async def publish_reference_data(bootstrap_servers: str, generated_accounts: int = 0) -> int:
    """Publish the seed's sample consumer, and `generated_accounts` more, to `billing.receivables.v1`."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", linger_ms=5)
    await producer.start()
    count = 0
    try:
        pending = []
        for envelope in [*seed_sample(), *generate_accounts(generated_accounts)]:
            pending.append(
                await producer.send(
                    Topic.BILLING_RECEIVABLES,
                    value=envelope.to_bytes(),
                    key=envelope.subject.encode(),
                    headers=[("content-type", CONTENT_TYPE.encode())],
                )
            )
            count += 1
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return count


def _port(name: str) -> int:
    return int(os.environ.get(f"{name.upper()}_HTTP_PORT", DEFAULT_PORTS[name]))


@dataclass(frozen=True, slots=True)
class ServiceProcess:
    """One process `paydesk run` supervises: a service in a role (`PAYDESK_PROCESS_ROLE`) on a port."""

    name: str  # the supervisor's name for it, and its log file's
    service: str
    role: str
    port: int

    def environment(self) -> dict[str, str]:
        return {"PAYDESK_PROCESS_ROLE": self.role, f"{self.service.upper()}_HTTP_PORT": str(self.port)}


def service_processes(name: str, env: Mapping[str, str] | None = None) -> list[ServiceProcess]:
    """The processes of one service: itself alone, or its api processes (one port) and its workers process."""
    env = os.environ if env is None else env
    entry = REGISTRY[name]
    prefix = name.upper()
    port = int(env.get(f"{prefix}_HTTP_PORT", entry.port))
    api = int(env.get(f"{prefix}_API_PROCESSES", entry.api_processes))
    if api < 1:
        return [ServiceProcess(name, name, "all", port)]
    workers_port = int(env.get(f"{prefix}_WORKERS_HTTP_PORT", entry.workers_port or port + 10))
    return [
        *(ServiceProcess(name if n == 1 else f"{name}-api-{n}", name, "api", port) for n in range(1, api + 1)),
        ServiceProcess(f"{name}-workers", name, "workers", workers_port),
    ]


def process_stop_order(
    start_order: Sequence[str], intake: Sequence[str], env: Mapping[str, str] | None = None
) -> list[str]:
    """`stop_order` over processes: a service's api processes first, then its workers (draining its outbox)."""
    return [process.name for name in stop_order(start_order, intake) for process in service_processes(name, env)]


class StopRequested(Exception):
    """SIGINT/SIGTERM arrived while the system was still starting."""


def wait_ready(names: list[str], timeout: float = 90.0, on_wait: Callable[[], None] | None = None) -> None:
    """Wait until every process of each service answers ready (a service's api processes share one address)."""
    deadline = time.monotonic() + timeout
    ports = {process.port: process.name for name in names for process in reversed(service_processes(name))}
    for port, name in ports.items():
        url = f"http://127.0.0.1:{port}/health/ready"
        while True:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} was not ready at {url} within {timeout}s")
            if on_wait is not None:
                on_wait()
            time.sleep(0.2)


def supervise_services(supervisor: Supervisor, env: dict[str, str], log_dir: Path) -> None:
    """Start every process of every service (`service_processes`), each restarted on its own when it dies."""
    names = []
    for name in START_ORDER:
        for process in service_processes(name, env):
            supervisor.add(
                process.name,
                [sys.executable, "-m", "paydesk.cli", "service", name],
                env=env | process.environment(),
                log_file=log_dir / f"{process.name}.log",
            )
            names.append(process.name)
    supervisor.start(names)


def choose_broker(root: Path, port: int, log_dir: Path, wanted: str = "auto") -> EmbeddedBroker:
    """Apache Kafka with its data under `root`, or Tansu where Kafka cannot run here (saying why, in one line)."""
    if wanted not in ("auto", "kafka", "tansu"):
        raise SystemExit(f"PAYDESK_BROKER must be auto, kafka or tansu, not {wanted!r}")
    if wanted == "tansu":
        return EmbeddedTansu(port=port, log_file=log_dir / "kafka.log")
    reason = kafka_unavailable()
    if reason is None:
        return EmbeddedKafka(port=port, log_file=log_dir / "kafka.log", data_dir=root / "kafka")
    if wanted == "kafka":
        raise SystemExit(f"PAYDESK_BROKER=kafka but {reason}")
    print(f"kafka       {reason}: falling back to Tansu (memory only, no idempotent producer)", flush=True)
    return EmbeddedTansu(port=port, log_file=log_dir / "kafka.log")


def run_system(*, data_dir: str, sample_data: bool) -> None:
    root = Path(data_dir).resolve()
    log_dir = root / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    postgres: EmbeddedPostgres | None = None
    kafka: EmbeddedBroker | None = None
    supervisor = Supervisor()
    supervisor.install_signal_handlers()

    def during_start_up() -> None:
        if supervisor.stop_requested:
            raise StopRequested
        supervisor.check()

    try:
        if "DATABASE_URL" not in env:
            postgres = EmbeddedPostgres(root / "pgdata")
            env["DATABASE_URL"] = postgres.start()
            print(f"postgres    embedded, data in {root / 'pgdata'}", flush=True)
        if "KAFKA_BOOTSTRAP_SERVERS" not in env:
            port = int(env.get("PAYDESK_KAFKA_PORT", "9092"))
            kafka = choose_broker(root, port, log_dir, env.get("PAYDESK_BROKER", "auto").strip().lower())
            env["KAFKA_BOOTSTRAP_SERVERS"] = kafka.start()
            # A broker that dies is started again on the same address (Kafka: on its data, the same cluster).
            supervisor.watch("kafka", alive=kafka.alive, restart=kafka.start)
            if isinstance(kafka, EmbeddedKafka):
                print(
                    f"kafka       embedded Apache Kafka on {env['KAFKA_BOOTSTRAP_SERVERS']}, "
                    f"data in {root / 'kafka'} (cluster {kafka.cluster_id})",
                    flush=True,
                )
            else:
                print(f"kafka       embedded Tansu on {env['KAFKA_BOOTSTRAP_SERVERS']} (memory only)", flush=True)
            for key, value in kafka.client_environment().items():  # Tansu's: no idempotence, short fetch wait
                env.setdefault(key, value)
            if not kafka.idempotent_producers:
                env["KAFKA_IDEMPOTENT_PRODUCER"] = "false"  # even if asked for: Tansu refuses InitProducerId
        # The console's pages call every service from the browser: allow its origin, wherever it listens.
        console = f"{_port('console')}"
        env.setdefault("PAYDESK_CORS_ORIGINS", f"http://127.0.0.1:{console},http://localhost:{console}")
        os.environ.update(env)
        settings = ServiceSettings()
        asyncio.run(
            provision_topics(
                settings.kafka_bootstrap_servers,
                partitions=settings.kafka_partitions,
                replication_factor=settings.kafka_replication_factor,
            )
        )
        for name in START_ORDER:
            upgrade(name, settings.database_url)
        supervise_services(supervisor, env, log_dir)
        wait_ready(START_ORDER, on_wait=during_start_up)
        if sample_data:
            count = asyncio.run(publish_reference_data(settings.kafka_bootstrap_servers))
            print(f"sample data {count} billing events published (consumer WU-10001, John Doe)", flush=True)
        for name in reversed(START_ORDER):
            print(f"{name:<15} http://127.0.0.1:{_port(name)}  (logs: {log_dir / (name + '.log')})", flush=True)
        print(
            f"Console: http://127.0.0.1:{_port('console')}/  (development sign-ins jane, rick, bill, admin, john; "
            "password paydesk)",
            flush=True,
        )
        print("Paydesk is running. Ctrl-C stops everything in order; a service that dies is restarted.", flush=True)
        supervisor.serve()
    except StopRequested:
        print("stop requested while starting", flush=True)
    finally:
        print("stopping services...", flush=True)
        supervisor.stop(process_stop_order(START_ORDER, INTAKE, env))
        if kafka is not None:
            print("stopping kafka", flush=True)
            kafka.stop()
            print("stopped kafka", flush=True)
        if postgres is not None:
            print("stopping postgres", flush=True)
            postgres.stop()
            print("stopped postgres", flush=True)
        print("stopped.", flush=True)
