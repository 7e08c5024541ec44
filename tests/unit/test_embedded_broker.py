"""Choosing and configuring the embedded broker, without starting one."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from paydesk import embedded, launcher
from paydesk.embedded import (
    EmbeddedKafka,
    EmbeddedKafkaSettings,
    EmbeddedPostgresSettings,
    EmbeddedTansu,
    kafka_unavailable,
    new_cluster_id,
)


def test_a_cluster_id_is_16_random_bytes_in_base64url_as_kafka_writes_it() -> None:
    ids = {new_cluster_id() for _ in range(50)}
    assert len(ids) == 50
    for cluster_id in ids:
        assert len(cluster_id) == 22 and "=" not in cluster_id
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_without_java_kafka_is_unavailable_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert kafka_unavailable() == "no `java` found (Apache Kafka needs Java 17+)"


def test_an_old_java_or_missing_jars_make_kafka_unavailable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(embedded, "_java", lambda: "/opt/java/bin/java")
    monkeypatch.setattr(embedded, "java_version", lambda _: 11)
    assert "needs Java 17+" in str(kafka_unavailable(EmbeddedKafkaSettings(lib_dir=tmp_path)))
    monkeypatch.setattr(embedded, "java_version", lambda _: 17)
    assert "make kafka" in str(kafka_unavailable(EmbeddedKafkaSettings(lib_dir=tmp_path)))
    (tmp_path / "kafka_2.13-4.4.0.jar").touch()
    assert kafka_unavailable(EmbeddedKafkaSettings(lib_dir=tmp_path)) is None


def test_run_falls_back_to_tansu_in_one_line_when_kafka_cannot_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(launcher, "kafka_unavailable", lambda: "no `java` found (Apache Kafka needs Java 17+)")
    broker = launcher.choose_broker(tmp_path, 9092, tmp_path)
    assert isinstance(broker, EmbeddedTansu)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "no `java` found" in out and "falling back to Tansu" in out


def test_run_uses_kafka_with_its_data_under_the_data_dir_when_it_can(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(launcher, "kafka_unavailable", lambda: None)
    broker = launcher.choose_broker(tmp_path, 9092, tmp_path)
    assert isinstance(broker, EmbeddedKafka)
    assert broker.data_dir == tmp_path / "kafka" and broker.durable and broker.idempotent_producers


def test_on_tansu_the_services_get_no_idempotence_and_the_short_fetch_wait() -> None:
    assert EmbeddedTansu(port=0).client_environment() == {
        "KAFKA_IDEMPOTENT_PRODUCER": "false",
        "KAFKA_FETCH_MAX_WAIT_MS": "50",
        "KAFKA_SESSION_TIMEOUT_MS": "6000",
    }
    assert EmbeddedKafka(port=0, data_dir=Path("/nonexistent")).client_environment() == {}


def test_a_cluster_id_never_starts_with_a_dash_the_storage_tool_would_take_for_an_option() -> None:
    assert not any(new_cluster_id().startswith("-") for _ in range(2000))


def test_postgres_settings_compare_in_the_units_the_server_counts_them_in(monkeypatch: pytest.MonkeyPatch) -> None:
    assert embedded.in_units_of("128MB", "8kB") == "16384"
    assert embedded.in_units_of("1GB", "kB") == "1048576"
    assert embedded.in_units_of("200", None) == "200"
    monkeypatch.setenv("PAYDESK_POSTGRES_MAX_CONNECTIONS", "300")
    monkeypatch.setenv("PAYDESK_POSTGRES_SHARED_BUFFERS", "256MB")
    assert EmbeddedPostgresSettings().server_settings() == {"max_connections": "300", "shared_buffers": "256MB"}
    monkeypatch.delenv("PAYDESK_POSTGRES_MAX_CONNECTIONS")
    assert EmbeddedPostgresSettings().max_connections == 200, "more than the default 100: nine services' pools"


def test_the_broker_takes_its_whole_heap_at_start_and_a_formatting_run_does_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(embedded, "_java", lambda: "/opt/java/bin/java")
    broker = EmbeddedKafka(port=0, data_dir=Path("/nonexistent"), settings=EmbeddedKafkaSettings(heap="384m"))
    command = broker._java_command("kafka.Kafka", "server.properties", broker=True)
    assert command[:4] == ["/opt/java/bin/java", "-Xms384m", "-Xmx384m", "-XX:+AlwaysPreTouch"]
    tool = broker._java_command("kafka.tools.StorageTool", "format")
    assert "-Xmx384m" in tool and not any(arg.startswith("-Xms") or "PreTouch" in arg for arg in tool)
    monkeypatch.setenv("PAYDESK_KAFKA_PRE_TOUCH", "false")
    untouched = EmbeddedKafka(port=0, data_dir=Path("/nonexistent"))._java_command("kafka.Kafka", broker=True)
    assert untouched[1:3] == ["-Xms256m", "-Xmx256m"] and "-XX:+AlwaysPreTouch" not in untouched


def test_options_for_the_brokers_jvm_come_after_paydesks_own_and_only_on_the_broker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(embedded, "_java", lambda: "/opt/java/bin/java")
    monkeypatch.setenv("PAYDESK_KAFKA_JVM_OPTIONS", " -XX:TieredStopAtLevel=1   -Xss2m ")
    broker = EmbeddedKafka(port=0, data_dir=Path("/nonexistent"))
    command = broker._java_command("kafka.Kafka", "server.properties", broker=True)
    assert command.index("-XX:+UseSerialGC") < command.index("-Xss2m") < command.index("-cp"), (
        "after Paydesk's own options, so one given again here wins"
    )
    assert "-XX:TieredStopAtLevel=1" in command and "" not in command
    tool = broker._java_command("kafka.tools.StorageTool", "format")
    assert "-XX:TieredStopAtLevel=1" not in tool and "-Xss2m" not in tool
