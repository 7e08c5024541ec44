"""Settings common to every service, read from the environment with pydantic-settings.

Infrastructure addresses (`DATABASE_URL`, `KAFKA_BOOTSTRAP_SERVERS`, ...) are shared by all services and
have no prefix; what belongs to one service (its HTTP port, say) is read with that service's prefix, e.g.
`PAYMENTS_HTTP_PORT`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# Public (it is in the repository): anyone can mint tokens with it, so only a development run may use it.
DEVELOPMENT_JWT_SECRET = "paydesk-development-only-secret-change-me"


class InsecureSettings(RuntimeError):
    """Settings a service must not start with outside development."""


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class ServiceSettings(BaseSettings):
    """Base for every service's settings; subclasses set `env_prefix` and their own defaults."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    service_name: str = "paydesk"
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8100, ge=1, le=65535)

    database_url: str = Field(
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/paydesk",
        validation_alias=_env("DATABASE_URL"),
        description="SQLAlchemy URL of the Postgres server; each service uses its own schema in it.",
    )
    database_pool_size: int = Field(
        default=10,
        ge=1,
        validation_alias=_env("DATABASE_POOL_SIZE"),
        description="Most database connections a process holds; each is kept once opened (no overflow to reopen).",
    )
    kafka_bootstrap_servers: str = Field(default="127.0.0.1:9092", validation_alias=_env("KAFKA_BOOTSTRAP_SERVERS"))
    kafka_partitions: int = Field(default=6, ge=1, validation_alias=_env("KAFKA_PARTITIONS"))
    kafka_replication_factor: int = Field(default=1, ge=1, validation_alias=_env("KAFKA_REPLICATION_FACTOR"))
    kafka_idempotent_producer: bool = Field(
        default=True,
        validation_alias=_env("KAFKA_IDEMPOTENT_PRODUCER"),
        description="Producers (the outbox relays', acks=all) get a producer id, so a retried send is never written "
        "twice. Apache Kafka supports it; Tansu refuses InitProducerId, so `paydesk run` and the tests turn it off "
        "there. Correctness never depends on it: the consumers' inboxes drop duplicates anyway.",
    )
    # Both were 50 ms and 6 s for Tansu, which answered an empty fetch only when the wait ran out and took half
    # the session timeout to join a group. Measured on Apache Kafka 4.4 (2-core machine, 2026-11-30):
    # - fetch wait: Kafka answers as soon as a record arrives, so the wait adds no latency (bench/kpi.py at 500/s:
    #   p50 48 ms, p99 271 ms at 500 ms; Tansu at 50 ms: p50 53 ms, p99 666 ms); it only decides how often an idle
    #   consumer asks again. 12 idle consumers: 7.3% of a core and 7-18% of the broker's at 50 ms, 3.5% and 3-4%
    #   at 500 ms (Kafka's own default).
    # - session timeout: a group join takes 0.03-0.2 s whatever it is; it only decides how soon a crashed consumer's
    #   partitions move on (a consumer restarted after SIGKILL got them after 6.0 s at 6 s, 10.0 s at 10 s; a clean
    #   stop leaves the group at once). 10 s (aiokafka's default) rides out a loaded machine's event-loop stalls.
    kafka_fetch_max_wait_ms: int = Field(
        default=500,
        ge=1,
        validation_alias=_env("KAFKA_FETCH_MAX_WAIT_MS"),
        description="Longest an idle consumer's fetch waits at the broker. Apache Kafka answers as soon as records "
        "arrive, so this is no latency, only how often idle consumers poll. On Tansu, which answers an empty "
        "fetch only when the wait runs out, it bounds each hop's latency: set 50 there.",
    )
    kafka_session_timeout_ms: int = Field(
        default=10000,
        ge=1000,
        validation_alias=_env("KAFKA_SESSION_TIMEOUT_MS"),
        description="A consumer silent this long leaves its group: after a crash, its partitions wait this long "
        "before another member (or its restarted self) takes them. A clean stop leaves at once.",
    )
    kafka_metadata_max_age_ms: int = Field(
        default=5000,
        ge=100,
        validation_alias=_env("KAFKA_METADATA_MAX_AGE_MS"),
        description="How often clients re-read the cluster's metadata when nothing forces it. A consumer whose "
        "topic vanished (a wiped broker) holds no partition, so nothing forces it: at aiokafka's default (5 min) it "
        "saw the recreated topic only minutes later. One small request per client every 5 s costs nothing.",
    )
    kafka_producer_batch_bytes: int = Field(
        default=512 * 1024,
        ge=1024,
        le=1024 * 1024,
        validation_alias=_env("KAFKA_PRODUCER_BATCH_BYTES"),
        description="Most bytes of one partition's records an outbox relay's producer sends together. aiokafka keeps "
        "one produce request in flight per broker, one batch per partition in it, and a send into a full batch waits "
        "until that request is answered: at 16 KiB (its default) a relay batch of 500 events left in 4-5 requests "
        "one after another, each a wait for the broker's turn on a busy machine; at 512 KiB in one. At most 1 MiB, "
        "Kafka's largest record batch by default.",
    )
    kafka_producer_linger_ms: int = Field(
        default=1,
        ge=0,
        validation_alias=_env("KAFKA_PRODUCER_LINGER_MS"),
        description="How long a relay's producer waits for more records before sending a batch that is not full. "
        "The relay hands over a whole outbox batch at once, so waiting longer gains nothing.",
    )
    consumer_stall_seconds: float = Field(
        default=30.0,
        gt=0,
        validation_alias=_env("PAYDESK_CONSUMER_STALL_SECONDS"),
        description="A consumer that has not heard from the broker (fetch answer, offset commit, applied batch) for "
        "this long while it should have is reported stalled: readiness false, `paydesk_consumer_stalled` 1.",
    )
    jwt_secret: SecretStr = Field(
        default=SecretStr(DEVELOPMENT_JWT_SECRET),
        validation_alias=_env("PAYDESK_JWT_SECRET"),
    )
    cors_origins: str = Field(
        default="http://127.0.0.1:8100,http://localhost:8100",
        validation_alias=_env("PAYDESK_CORS_ORIGINS"),
        description="Comma-separated origins whose pages may call this service's API from a browser with a bearer "
        "token (the console's address); empty for none.",
    )
    development: bool = Field(
        default=False,
        validation_alias=_env("PAYDESK_DEVELOPMENT"),
        description="Allows the well-known development JWT secret; a service refuses to start with it otherwise.",
    )
    max_request_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        validation_alias=_env("PAYDESK_MAX_REQUEST_BODY_BYTES"),
        description="Larger request bodies are refused with 413 before the route reads them.",
    )
    otel_exporter: Literal["none", "console", "otlp", "postgres"] = Field(
        default="postgres",
        validation_alias=_env("PAYDESK_OTEL_EXPORTER"),
        description="Where spans go: `postgres` (the `telemetry.spans` table, read by `paydesk trace`), `otlp` "
        "(OTEL_EXPORTER_OTLP_ENDPOINT, e.g. Jaeger), `console` or `none`.",
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        validation_alias=_env("OTEL_EXPORTER_OTLP_ENDPOINT"),
        description="Base URL of an OTLP/HTTP collector (e.g. Jaeger's :4318) for PAYDESK_OTEL_EXPORTER=otlp.",
    )
    trace_sample_ratio: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        validation_alias=_env("PAYDESK_TRACE_SAMPLE_RATIO"),
        description="Share of new traces recorded and exported (1: all). Decided once, where a trace starts, and "
        "followed by every service it reaches, so a trace is whole or absent; an unrecorded trace still has its id in "
        "the logs, the X-Trace-Id header and the Kafka headers.",
    )
    log_level: str = Field(default="INFO", validation_alias=_env("PAYDESK_LOG_LEVEL"))
    process_role: Literal["all", "api", "workers"] = Field(
        default="all",
        validation_alias=_env("PAYDESK_PROCESS_ROLE"),
        description="What this process of the service runs: `all` (routes, consumers, outbox relay), `api` (the "
        "routes only, on a port it may share with other api processes: SO_REUSEPORT), or `workers` (consumers and "
        "the relay, with health and metrics but no business routes). Each role's process is a `paydesk service`; "
        "`paydesk run` starts the roles its registry entry asks for.",
    )
    # How often the relay looks for rows nobody woke it for. A commit that staged events wakes its own process's
    # relay at once (a route's, a consumer's, a background pass's), so where one process does everything (`all`)
    # the poll only catches rows staged by another process: a second instance, the `paydesk` command. A `workers`
    # process relays what its api processes stage, and nothing wakes it across processes, so it polls often.
    # Polling every 50 ms everywhere cost 27.3% of a core for seven idle services against 15.9% at 1 s
    # (bench/idle_consumers.py), besides Postgres's share.
    outbox_poll_seconds: float | None = Field(default=None, gt=0, validation_alias=_env("PAYDESK_OUTBOX_POLL_SECONDS"))
    outbox_retention_days: int = Field(default=7, ge=1, validation_alias=_env("PAYDESK_OUTBOX_RETENTION_DAYS"))
    # Rows a relay reads, sends and marks per batch: a lockbox file stages thousands at once, and each batch
    # costs a select, a wait for the broker's acknowledgements and an update whatever its size.
    outbox_batch_rows: int = Field(default=2000, gt=0, validation_alias=_env("PAYDESK_OUTBOX_BATCH_ROWS"))
    consumer_max_attempts: int = Field(default=5, ge=1, validation_alias=_env("PAYDESK_CONSUMER_MAX_ATTEMPTS"))
    consumer_max_batch: int = Field(
        default=200,
        ge=1,
        validation_alias=_env("PAYDESK_CONSUMER_MAX_BATCH"),
        description="Most records a consumer applies in one transaction.",
    )
    consumer_batch_wait_ms: int = Field(
        default=500,
        ge=1,
        validation_alias=_env("PAYDESK_CONSUMER_BATCH_WAIT_MS"),
        description="The longest one poll of a consumer waits for records; it returns as soon as one arrives "
        "(`messaging.wait_in_the_poll`), so this is no latency, only how often an idle consumer turns.",
    )

    @property
    def relay_poll_seconds(self) -> float:
        """`outbox_poll_seconds` when set; else 50 ms in a `workers` process and 1 s otherwise."""
        if self.outbox_poll_seconds is not None:
            return self.outbox_poll_seconds
        return 0.05 if self.process_role == "workers" else 1.0

    def check_secrets(self) -> None:
        """Raise `InsecureSettings` if the development JWT secret is used without the development flag."""
        if self.jwt_secret.get_secret_value() == DEVELOPMENT_JWT_SECRET and not self.development:
            raise InsecureSettings(
                f"{self.service_name}: refusing to start with the development JWT secret; set PAYDESK_JWT_SECRET "
                "(e.g. `openssl rand -hex 32`), or PAYDESK_DEVELOPMENT=true on a development machine"
            )

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip().rstrip("/") for origin in self.cors_origins.split(",") if origin.strip()]

    @property
    def schema_name(self) -> str:
        """Each service owns exactly one Postgres schema, named after the service."""
        return self.service_name
