"""Service settings read from the environment."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sqlalchemy.pool import QueuePool

from services.payments.settings import PaymentsSettings
from shared.db import create_engine
from shared.settings import ServiceSettings

SHARED_VARIABLES = [
    "DATABASE_URL",
    "DATABASE_POOL_SIZE",
    "KAFKA_BOOTSTRAP_SERVERS",
    "KAFKA_PARTITIONS",
    "KAFKA_REPLICATION_FACTOR",
    "KAFKA_IDEMPOTENT_PRODUCER",
    "PAYDESK_JWT_SECRET",
    "PAYDESK_OTEL_EXPORTER",
    "PAYDESK_LOG_LEVEL",
    "PAYDESK_OUTBOX_POLL_SECONDS",
    "PAYDESK_PROCESS_ROLE",
    "HTTP_PORT",
    "HTTP_HOST",
    "SERVICE_NAME",
    "PAYMENTS_HTTP_PORT",
    "PAYMENTS_HTTP_HOST",
    "PAYMENTS_SERVICE_NAME",
]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test from an environment with none of the settings' variables set."""
    for name in SHARED_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


class TestServiceSettings:
    def test_defaults_without_environment(self) -> None:
        settings = ServiceSettings()
        assert settings.database_url == "postgresql+asyncpg://postgres@127.0.0.1:5432/paydesk"
        assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
        assert settings.kafka_partitions == 6

    def test_reads_database_url(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://u:p@db.example:5433/x")
        assert ServiceSettings().database_url == "postgresql+asyncpg://u:p@db.example:5433/x"

    def test_reads_kafka_bootstrap_servers(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker-1:9092,broker-2:9092")
        assert ServiceSettings().kafka_bootstrap_servers == "broker-1:9092,broker-2:9092"

    def test_reads_kafka_partitions_as_an_integer(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("KAFKA_PARTITIONS", "12")
        assert ServiceSettings().kafka_partitions == 12

    def test_reads_boolean_and_secret_settings(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("KAFKA_IDEMPOTENT_PRODUCER", "true")
        monkeypatch.setenv("PAYDESK_JWT_SECRET", "from-the-environment")
        settings = ServiceSettings()
        assert settings.kafka_idempotent_producer is True
        assert settings.jwt_secret.get_secret_value() == "from-the-environment"
        assert "from-the-environment" not in repr(settings)

    @pytest.mark.parametrize("value", ["0", "-1", "abc", "1.5"])
    def test_a_bad_kafka_partitions_value_is_rejected_naming_the_field(
        self, monkeypatch: pytest.MonkeyPatch, value: str
    ) -> None:
        monkeypatch.setenv("KAFKA_PARTITIONS", value)
        with pytest.raises(ValidationError) as caught:
            ServiceSettings()
        assert "kafka_partitions" in str(caught.value).lower()

    def test_an_unknown_otel_exporter_is_rejected_naming_the_field(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PAYDESK_OTEL_EXPORTER", "zipkin")
        with pytest.raises(ValidationError) as caught:
            ServiceSettings()
        assert "paydesk_otel_exporter" in str(caught.value).lower()

    def test_the_relay_polls_seldom_where_its_own_commits_wake_it(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # One process doing everything, or an api process: every commit that stages wakes the relay in-process.
        assert (ServiceSettings().relay_poll_seconds, ServiceSettings(process_role="api").relay_poll_seconds) == (1, 1)
        # A workers process relays what its api processes stage, which nothing wakes it for.
        monkeypatch.setenv("PAYDESK_PROCESS_ROLE", "workers")
        assert ServiceSettings().relay_poll_seconds == 0.05
        monkeypatch.setenv("PAYDESK_OUTBOX_POLL_SECONDS", "0.3")
        assert ServiceSettings().relay_poll_seconds == 0.3

    def test_a_non_positive_outbox_poll_interval_is_rejected(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PAYDESK_OUTBOX_POLL_SECONDS", "0")
        with pytest.raises(ValidationError):
            ServiceSettings()

    def test_schema_name_is_the_service_name(self) -> None:
        assert ServiceSettings().schema_name == "paydesk"


class TestPaymentsSettings:
    def test_defaults_to_the_payments_service_and_port(self) -> None:
        settings = PaymentsSettings()
        assert settings.service_name == "payments"
        assert settings.schema_name == "payments"
        assert settings.http_port == 8102

    def test_reads_its_http_port_with_the_payments_prefix(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PAYMENTS_HTTP_PORT", "9102")
        assert PaymentsSettings().http_port == 9102

    def test_ignores_an_unprefixed_http_port(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("HTTP_PORT", "9999")
        assert PaymentsSettings().http_port == 8102

    def test_reads_shared_infrastructure_without_a_prefix(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://u@db.example/x")
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker:9092")
        monkeypatch.setenv("KAFKA_PARTITIONS", "3")
        settings = PaymentsSettings()
        assert settings.database_url == "postgresql+asyncpg://u@db.example/x"
        assert settings.kafka_bootstrap_servers == "broker:9092"
        assert settings.kafka_partitions == 3

    @pytest.mark.parametrize("value", ["0", "65536", "http"])
    def test_a_bad_http_port_is_rejected_naming_the_field(self, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
        monkeypatch.setenv("PAYMENTS_HTTP_PORT", value)
        with pytest.raises(ValidationError) as caught:
            PaymentsSettings()
        assert "http_port" in str(caught.value)


def test_a_service_keeps_every_database_connection_it_opens_up_to_its_pool_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An overflow connection is closed when it comes back to a full pool: under steady load that was a new backend
    # and every prepared statement again, several times a second. Nothing is connected here: the pool is only built.
    monkeypatch.setenv("DATABASE_POOL_SIZE", "7")
    settings = ServiceSettings()
    assert settings.database_pool_size == 7
    pool = create_engine(
        "postgresql://paydesk@127.0.0.1:1/paydesk", pool_size=settings.database_pool_size
    ).sync_engine.pool
    assert isinstance(pool, QueuePool)
    assert pool.size() == 7 and pool._max_overflow == 0
    assert ServiceSettings.model_fields["database_pool_size"].default == 10  # the most it held before: 5 + 5 overflow
