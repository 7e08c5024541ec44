"""Which embedded broker the tests run on: Apache Kafka unless `PAYDESK_TEST_BROKER=tansu`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

from paydesk.embedded import BrokerKind, EmbeddedBroker, EmbeddedTansu, embedded_broker, free_port


def _kind() -> BrokerKind:
    value = os.environ.get("PAYDESK_TEST_BROKER", "kafka").strip().lower()
    if value not in ("kafka", "tansu"):
        raise RuntimeError(f"PAYDESK_TEST_BROKER must be `kafka` or `tansu`, not {value!r}")
    return cast("BrokerKind", value)


TEST_BROKER: BrokerKind = _kind()
# Tansu answers InitProducerId with an error, so producers there are never idempotent.
IDEMPOTENT_PRODUCER = TEST_BROKER == "kafka"
# What the services need on the run's broker (on Tansu: no idempotence, the short fetch wait it needs); set
# explicitly on Kafka too, so a developer's environment cannot turn idempotence off unnoticed.
CLIENT_ENVIRONMENT = (
    {"KAFKA_IDEMPOTENT_PRODUCER": "true"} if TEST_BROKER == "kafka" else EmbeddedTansu(port=0).client_environment()
)


def new_broker(workdir: Path, name: str) -> EmbeddedBroker:
    """A broker of the run's kind on a free port, its data (Kafka) and log in `workdir`; not started yet."""
    port = free_port()
    return embedded_broker(
        TEST_BROKER,
        port=port,
        log_file=workdir / f"kafka-{name}-{port}.log",
        data_dir=workdir / f"kafka-{name}-{port}",
    )
