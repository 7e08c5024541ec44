"""What every service process is made of: HTTP app, broker, consumers, outbox relay, health and metrics.

A service's `app.py` builds one `Service` from its settings, its tables, its consumers and its routes;
nothing connects until the HTTP app's lifespan starts it. `PAYDESK_PROCESS_ROLE` says which of those this process
runs: all of them (the default), the routes only (`api`: the counters' requests never wait behind a consumer's
batch or the relay on the same event loop), or the consumers and the relay only (`workers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import yaml
from aiokafka import AIOKafkaProducer
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from faststream.specification import AsyncAPI
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, Histogram, generate_latest
from sqlalchemy import MetaData, Table, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.contracts.envelope import Envelope
from shared.db import create_engine, is_infrastructure_down, session_factory
from shared.errors import Rejected
from shared.inbox import inbox_table
from shared.kafka_clients import outbox_producer
from shared.limits import BodySizeLimit, RefuseNulCharacters
from shared.messaging import ConsumerHealth, EventConsumer, Subscription, create_broker, provision_topics
from shared.openapi import document_problems
from shared.outbox import OUTBOX_TABLE, OutboxRelay, fetch_cluster_id, outbox_tables, wake_relay_after_commit
from shared.settings import ServiceSettings
from shared.telemetry import configure_logging, configure_tracing, current_trace_id, tag_path_params

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
# How long a client is asked to wait when the database or broker is unreachable.
RETRY_AFTER_SECONDS = 5
# One log line per kind of infrastructure failure in this window, not a stack trace per request.
UNAVAILABLE_LOG_EVERY_SECONDS = 30.0


CONSUMER_STALLED = Gauge(
    "paydesk_consumer_stalled", "1 while the consumer group cannot make progress", ["service", "consumer"]
)
CONSUMER_SILENCE = Gauge(
    "paydesk_consumer_seconds_since_progress",
    "Seconds since the consumer last heard from the broker (fetch answer, commit) or applied a batch",
    ["service", "consumer"],
)
# How often a service looks at its consumers when nobody asks (for the log line on a stall and on recovery).
CONSUMER_WATCH_SECONDS = 5.0
EVENT_LOOP_LAG = Histogram(
    "paydesk_event_loop_lag_seconds",
    "How late a 100 ms timer fires on the process's event loop: time the loop spent on other work without yielding, "
    "plus time the process waited for a CPU",
    ["service", "role"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
LAG_TICK_SECONDS = 0.1


class UnavailableLog:
    """Logs the first infrastructure failure of each kind, then at most one line per kind per window."""

    def __init__(self, every: float = UNAVAILABLE_LOG_EVERY_SECONDS) -> None:
        self.every = every
        self.last: dict[str, float] = {}
        self.suppressed: dict[str, int] = {}

    def failed(self, exc: BaseException) -> None:
        kind = type(exc).__name__
        now = time.monotonic()
        if now - self.last.get(kind, -self.every) < self.every:
            self.suppressed[kind] = self.suppressed.get(kind, 0) + 1
            return
        self.last[kind] = now
        log.error(
            "infrastructure unavailable; answering 503",
            extra={"kind": kind, "reason": str(exc)[:300], "suppressed_since_last": self.suppressed.pop(kind, 0)},
        )


def problem(status: int, code: str, detail: str, **extra: Any) -> JSONResponse:
    """An RFC 9457 problem details response with a stable `code`."""
    body = {
        "type": f"https://paydesk.dev/problems/{code}",
        "title": code.replace("_", " "),
        "status": status,
        "code": code,
        "detail": detail,
        "trace_id": current_trace_id(),
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


class TraceIdHeader:
    """Adds `X-Trace-Id` to every response: a caller (or an on-call engineer) finds the whole trace in one step.

    Plain ASGI rather than `@app.middleware("http")`, which costs a task and a stream copy per request.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_trace_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                tag_path_params(scope.get("path_params") or {})
                trace_id = current_trace_id()
                if trace_id:
                    MutableHeaders(scope=message).append("X-Trace-Id", trace_id)
            await send(message)

        await self.app(scope, receive, send_with_trace_id)


class PlumbingTables:
    """The tables every service has in its own schema besides its business ones: inbox, outbox, relay state."""

    def __init__(self, metadata: MetaData) -> None:
        self.inbox: Table = inbox_table(metadata)
        self.outbox, self.relay_state = outbox_tables(metadata)


# Allocations between two collections of the young generation (CPython's default is 700).
YOUNG_COLLECTION_EVERY = 10_000


def settle_the_heap() -> None:
    """Move what start-up made (modules, tables, compiled models, clients) out of the garbage collector's reach, and
    collect the young generation less often.

    Those objects live as long as the process, yet every full collection walked them all again: with a consumer
    allocating per event, GC passes were a visible share of a side consumer's CPU. Garbage is collected first, so
    only live objects are frozen; what is made after this is collected as before, but after 10,000 allocations
    rather than 700: more of a batch's objects have died by reference count by then, and the older generations,
    whose collections follow every tenth younger one, run fourteen times less often. In a `bench/e2e.py` run (4,000
    accounts, 30 s of tellers, 3,000 lockbox commands) the nine services spent 4.6% of their CPU collecting before
    and 3.3% after, start-up's own collections included; full collections (21-40 ms each) after start-up went from
    0-18 per service to none (docs/throughput.md, session 13). Not before start-up: imports ran slower at 10,000."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, *gc.get_threshold()[1:])


class Service:
    def __init__(self, settings: ServiceSettings, tables: PlumbingTables, *, title: str) -> None:
        self.settings = settings
        self.role = settings.process_role
        self.tables = tables
        self.engine = create_engine(settings.database_url, pool_size=settings.database_pool_size)
        self.sessions: async_sessionmaker[AsyncSession] = session_factory(
            self.engine, info={OUTBOX_TABLE: tables.outbox}
        )
        self.broker = create_broker(settings)
        self.relay = OutboxRelay(
            service=settings.service_name,
            engine=self.engine,
            outbox=self.tables.outbox,
            relay_state=self.tables.relay_state,
            new_producer=self._new_producer,
            provision_topics=self._provision_topics,
            poll_seconds=settings.relay_poll_seconds,
            retention=timedelta(days=settings.outbox_retention_days),
            batch_size=settings.outbox_batch_rows,
        )
        # The unit of work wakes the relay: after any commit that staged an event, in a route or a consumer.
        wake_relay_after_commit(self.sessions, self.relay)
        self.event_consumers: list[EventConsumer] = []
        self._relay_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._lag_task: asyncio.Task[None] | None = None
        self._stalled: dict[str, str] = {}
        self.http = self._build_http(title)

    # --- wiring used by each service's app.py ---

    def subscribe(self, *subscriptions: Subscription) -> None:
        """Bind event consumers: one consumer group per subscription, exactly once, with the DLQ. An api process
        binds none: its service's workers process consumes (and reports the consumers' health)."""
        if not self.runs_workers:
            return
        for subscription in subscriptions:
            consumer = EventConsumer(
                service=self.settings.service_name,
                name=subscription.name,
                topic=subscription.topic,
                handlers=subscription.handlers,
                session_factory=self.sessions,
                inbox=self.tables.inbox,
                max_attempts=self.settings.consumer_max_attempts,
                max_batch=subscription.max_batch or self.settings.consumer_max_batch,
                batch_wait_ms=self.settings.consumer_batch_wait_ms,
                fetch_max_wait_ms=self.settings.kafka_fetch_max_wait_ms,
                session_timeout_ms=self.settings.kafka_session_timeout_ms,
                on_rejected=subscription.on_rejected,
                batch_handler=subscription.batch_handler,
            )
            consumer.register(self.broker)
            self.event_consumers.append(consumer)

    def publishes(self, topic: str, event_types: list[str]) -> None:
        """Declare what this service publishes (through its outbox), for the generated AsyncAPI document."""
        self.broker.publisher(
            topic,
            title=f"{self.settings.service_name} -> {topic}",
            description=f"Event types: {', '.join(event_types)}. Payloads: shared/contracts/events.py.",
            schema=Envelope,
        )

    def asyncapi_yaml(self) -> str:
        """The AsyncAPI 3 document of this service's topics, generated from the code."""
        spec = AsyncAPI(self.broker, title=self.http.title, version="1.0.0").to_specification()
        # Subscribers come out in no fixed order; sorted keys make the committed document reproducible.
        return yaml.safe_dump(yaml.safe_load(spec.to_yaml()), sort_keys=True, allow_unicode=True)

    @property
    def runs_workers(self) -> bool:
        """Whether this process consumes events and relays the outbox (an `api` process only stages rows)."""
        return self.role != "api"

    def include(self, router: APIRouter) -> None:
        """The service's business routes; a `workers` process serves health and metrics only."""
        if self.role != "workers":
            self.http.include_router(router)

    # --- lifecycle ---

    async def start(self) -> None:
        self.settings.check_secrets()
        settings = self.settings
        configure_tracing(
            settings.service_name,
            settings.otel_exporter,
            settings.database_url,
            settings.otel_exporter_otlp_endpoint,
            sample_ratio=settings.trace_sample_ratio,
        )
        # An api process keeps the producer too: its readiness says whether the broker answers.
        await self.relay.renew_producer()
        if self.runs_workers:
            # In an api process the rows its requests stage wait for the workers' relay (it polls the outbox).
            self._relay_task = asyncio.create_task(self.relay.run(), name=f"{settings.service_name}-outbox-relay")
            await self.broker.start()
            self._watch_task = asyncio.create_task(
                self._watch_consumers(), name=f"{settings.service_name}-consumer-watch"
            )
        self._lag_task = asyncio.create_task(self._sample_loop_lag(), name=f"{settings.service_name}-loop-lag")
        settle_the_heap()
        log.info(
            "service started",
            extra={"service": settings.service_name, "port": settings.http_port, "role": self.role},
        )

    async def _new_producer(self) -> AIOKafkaProducer:
        """A started producer for the outbox relay (aiokafka binds it to the running loop: never made in __init__)."""
        producer = outbox_producer(self.settings)
        try:
            await producer.start()
        except BaseException:
            # The relay tries again every second while the broker is away: close each failed one.
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        return producer

    async def _provision_topics(self) -> None:
        await provision_topics(
            self.settings.kafka_bootstrap_servers,
            partitions=self.settings.kafka_partitions,
            replication_factor=self.settings.kafka_replication_factor,
        )

    @property
    def producer(self) -> AIOKafkaProducer | None:
        """The outbox relay's producer (the relay replaces it when the broker is a new cluster)."""
        return self.relay.producer

    async def stop(self) -> None:
        """Stop consumers first, then drain the outbox, then the producer: nothing staged is left behind."""
        for task in (self._watch_task, self._lag_task):
            if task is not None:
                task.cancel()
        if self.runs_workers:
            await self.broker.stop()
        self.relay.stop()
        if self._relay_task is not None:
            try:
                await asyncio.wait_for(self._relay_task, timeout=15)
            except TimeoutError:
                log.warning("outbox relay did not drain in time; rows stay in Postgres for the next start")
        if self.producer is not None:
            await self.producer.stop()
        await self.engine.dispose()

    async def ready(self) -> dict[str, str]:
        checks: dict[str, str] = {}
        try:
            async with self.engine.connect() as conn:
                await asyncio.wait_for(conn.execute(text("SELECT 1")), timeout=2)
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unreachable: {type(exc).__name__}"
        try:
            assert self.producer is not None, "service not started"
            await asyncio.wait_for(fetch_cluster_id(self.producer), timeout=2)
            checks["broker"] = "ok"
        except Exception as exc:
            checks["broker"] = f"unreachable: {type(exc).__name__}"
        if self.event_consumers:
            stalled = [f"{h.consumer}: {h.stalled}" for h in self.consumer_health() if h.stalled]
            checks["consumers"] = "ok" if not stalled else "stalled: " + "; ".join(stalled)
        return checks

    def consumer_health(self) -> list[ConsumerHealth]:
        """Each consumer's progress, also set on the gauges; a stall and its end are logged once each."""
        service = self.settings.service_name
        result = []
        for consumer in self.event_consumers:
            health = consumer.health(self.settings.consumer_stall_seconds)
            CONSUMER_SILENCE.labels(service, consumer.name).set(round(health.seconds_since_progress, 1))
            CONSUMER_STALLED.labels(service, consumer.name).set(1 if health.stalled else 0)
            if health.stalled and consumer.name not in self._stalled:
                log.error("consumer stalled", extra={"consumer": health.consumer, "reason": health.stalled})
            elif not health.stalled and consumer.name in self._stalled:
                log.warning("consumer making progress again", extra={"consumer": health.consumer})
            if health.stalled:
                self._stalled[consumer.name] = health.stalled
            else:
                self._stalled.pop(consumer.name, None)
            result.append(health)
        return result

    async def _watch_consumers(self) -> None:
        while True:
            await asyncio.sleep(CONSUMER_WATCH_SECONDS)
            self.consumer_health()

    async def _sample_loop_lag(self) -> None:
        """Where a request's time goes that no span shows: the loop busy with something else (a consumer's
        batch, the relay, span export) or the process waiting for a core."""
        lag = EVENT_LOOP_LAG.labels(self.settings.service_name, self.role)
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(LAG_TICK_SECONDS)
            lag.observe(max(0.0, loop.time() - started - LAG_TICK_SECONDS))

    # --- HTTP ---

    def _build_http(self, title: str) -> FastAPI:
        @asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            await self.start()
            try:
                yield
            finally:
                await self.stop()

        app = FastAPI(title=title, lifespan=lifespan)
        app.state.jwt_secret = self.settings.jwt_secret.get_secret_value()
        app.state.service = self
        document_problems(app)

        @app.get("/health/live", tags=["health"])
        async def live() -> dict[str, str]:
            return {"status": "ok"}

        @app.get("/health/ready", tags=["health"])
        async def ready() -> JSONResponse:
            checks = await self.ready()
            healthy = all(v == "ok" for v in checks.values())
            return JSONResponse(
                {"status": "ok" if healthy else "unavailable", "checks": checks}, status_code=200 if healthy else 503
            )

        @app.get(
            "/metrics",
            tags=["health"],
            response_class=Response,
            responses={200: {"description": "Prometheus text format", "content": {CONTENT_TYPE_LATEST: {}}}},
        )
        async def metrics() -> Response:
            self.consumer_health()
            return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

        @app.exception_handler(Rejected)
        async def on_rejected(_: Request, exc: Rejected) -> JSONResponse:
            extra = {"field": exc.field} if exc.field else {}
            return problem(exc.status, exc.code, exc.detail, **extra)

        @app.exception_handler(RequestValidationError)
        async def on_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
            errors = [
                {"field": ".".join(str(p) for p in e["loc"] if p != "body"), "message": e["msg"]} for e in exc.errors()
            ]
            detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
            return problem(422, "validation_failed", detail, errors=errors)

        unavailable = UnavailableLog()

        async def on_infrastructure_error(_: Request, exc: Exception) -> JSONResponse:
            if not is_infrastructure_down(exc):
                raise exc  # a bug, not an outage: the server logs it with its trace and answers 500
            unavailable.failed(exc)
            response = problem(
                503, "service_unavailable", "the database or broker is unreachable; retry later", retryable=True
            )
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
            return response

        # Specific classes, not Exception: those are handled inside the app, so nothing logs a stack per request.
        for infrastructure_error in (DBAPIError, PoolTimeout, OSError):
            app.add_exception_handler(infrastructure_error, on_infrastructure_error)

        @app.exception_handler(HTTPException)
        async def on_http(_: Request, exc: HTTPException) -> JSONResponse:
            codes = {
                401: "unauthenticated",
                403: "forbidden",
                404: "not_found",
                409: "conflict",
                413: "payload_too_large",
            }
            response = problem(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail))
            for key, value in (exc.headers or {}).items():
                response.headers[key] = value
            return response

        app.add_middleware(BodySizeLimit, limit=self.settings.max_request_body_bytes)
        app.add_middleware(RefuseNulCharacters)
        app.add_middleware(TraceIdHeader)
        if self.settings.cors_origin_list:
            # The console's pages call the APIs from the browser with the user's bearer token: no cookies, so no
            # credentials mode; preflights are answered here, before any route or auth check.
            app.add_middleware(
                CORSMiddleware,
                allow_origins=self.settings.cors_origin_list,
                allow_methods=["GET", "POST", "PUT", "DELETE"],
                allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
                expose_headers=["Content-Disposition", "X-Trace-Id", "Retry-After"],
                max_age=600,
            )
        # Added last so it is outermost: the span exists before any other middleware or route runs.
        app.add_middleware(OpenTelemetryMiddleware, exclude_spans=["receive", "send"])
        return app


def shared_listener(host: str, port: int) -> socket.socket:
    """A listening address several processes bind at once (SO_REUSEPORT): the kernel spreads new connections
    over them, so each api process of a service answers its share of the counters on the service's one port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind((host, port))
    listener.set_inheritable(True)
    return listener


def run_http(service_factory: Callable[[], Service], settings: ServiceSettings) -> None:
    """Run one service as a process: JSON logs, then uvicorn serving its HTTP app until SIGINT/SIGTERM.

    An `api` process shares its port with the service's other api processes; any other role binds it alone."""
    import uvicorn

    configure_logging(settings.service_name, settings.log_level)
    service = service_factory()
    config = uvicorn.Config(
        service.http, host=settings.http_host, port=settings.http_port, log_config=None, timeout_graceful_shutdown=10
    )
    server = uvicorn.Server(config)
    if settings.process_role == "api":
        server.run(sockets=[shared_listener(settings.http_host, settings.http_port)])
    else:
        server.run()
    if not server.started:
        sys.exit(3)  # uvicorn's own exit code for a failed start-up
