"""docker-compose.yml and deploy/Dockerfile must describe the system the code actually is.

Compose cannot run here, so these tests read the files and hold them against the code: the services the CLI
knows, their settings classes (ports, env prefixes, aliases), the CLI's commands and the project's packaging.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import shlex
import tomllib
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer.core
import typer.main
import yaml
from pydantic import AliasChoices, TypeAdapter
from sqlalchemy.engine import make_url

from paydesk.cli import app as cli_app
from paydesk.registry import SERVICES
from shared.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
INIT = "init"
APP_CONTAINERS = (INIT, *SERVICES)
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<rest>[^}]*)\}")


@cache
def _compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


def _service(name: str) -> dict[str, Any]:
    services = _compose()["services"]
    assert name in services, f"docker-compose.yml has no service {name!r}"
    service = services[name]
    assert isinstance(service, dict)
    return service


def _argv(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(part) for part in value]


def _environment(name: str) -> dict[str, str | None]:
    environment = _service(name).get("environment", {})
    if isinstance(environment, list):  # the `- NAME=value` form
        pairs = [entry.split("=", 1) for entry in environment]
        return {pair[0]: pair[1] if len(pair) == 2 else None for pair in pairs}
    assert isinstance(environment, dict)
    return environment


def _published_ports(name: str) -> list[tuple[int, int]]:
    """(published, target) of each port mapping, in the short `[ip:]host:container[/proto]` or long form."""
    ports = []
    for entry in _service(name).get("ports", []):
        if isinstance(entry, dict):
            ports.append((int(entry["published"]), int(entry["target"])))
        else:
            *_, published, target = str(entry).split("/")[0].split(":")
            ports.append((int(published), int(target)))
    return ports


def _settings_class(container: str) -> type[ServiceSettings]:
    """The settings class a container's process reads: the service's own, or the CLI's for `init`."""
    if container == INIT:
        return ServiceSettings
    module = importlib.import_module(f"services.{container}.settings")
    classes = [
        value
        for value in vars(module).values()
        if inspect.isclass(value)
        and issubclass(value, ServiceSettings)
        and value is not ServiceSettings
        and value.__module__ == module.__name__
    ]
    assert len(classes) == 1, f"services/{container}/settings.py should define one ServiceSettings subclass"
    return classes[0]


def _env_names(settings_class: type[ServiceSettings]) -> dict[str, str]:
    """Every environment variable name pydantic-settings reads for the class, upper-cased, -> field name."""
    prefix = settings_class.model_config.get("env_prefix", "")
    names = {}
    for field_name, field in settings_class.model_fields.items():
        alias = field.validation_alias or field.alias
        if alias is None:
            names[f"{prefix}{field_name}".upper()] = field_name
        elif isinstance(alias, AliasChoices):
            names.update({choice.upper(): field_name for choice in alias.choices if isinstance(choice, str)})
        elif isinstance(alias, str):
            names[alias.upper()] = field_name
    return names


def _clear_settings_environment(monkeypatch: pytest.MonkeyPatch, settings_class: type[ServiceSettings]) -> None:
    names = _env_names(settings_class)
    for key in list(os.environ):
        if key.upper() in names:
            monkeypatch.delenv(key)


def _interpolate(value: str) -> str:
    """What compose would substitute, with a stand-in for every variable the user must supply."""
    return INTERPOLATION.sub(lambda match: f"test-value-of-{match['name'].lower()}", value)


def _dockerfile_instructions() -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, arguments = stripped.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_service_has_a_compose_service_running_it() -> None:
    for name in SERVICES:
        service = _service(name)
        assert _argv(service.get("command")) == ["service", name], f"{name} must run `paydesk service {name}`"
        assert "entrypoint" not in service, f"{name} must keep the image's `paydesk` entrypoint"


def test_compose_runs_no_application_service_the_code_does_not_know() -> None:
    image = _service(INIT)["image"]
    app_services = {name for name, service in _compose()["services"].items() if service.get("image") == image}
    assert app_services == set(APP_CONTAINERS)


@pytest.mark.parametrize("name", list(SERVICES))
def test_each_service_publishes_the_default_http_port_of_its_settings(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_class = _settings_class(name)
    _clear_settings_environment(monkeypatch, settings_class)
    http_port = settings_class().http_port
    assert _published_ports(name) == [(http_port, http_port)]
    assert not any(key.upper().endswith("HTTP_PORT") for key in _environment(name)), "the default port is used"


@pytest.mark.parametrize("name", list(SERVICES))
def test_each_service_healthcheck_probes_readiness_on_its_own_port(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings_class = _settings_class(name)
    _clear_settings_environment(monkeypatch, settings_class)
    probe = " ".join(_argv(_service(name)["healthcheck"]["test"]))
    assert f"http://127.0.0.1:{settings_class().http_port}/health/ready" in probe
    assert "/health/ready" in (ROOT / "shared" / "service.py").read_text(), "the probed route must exist"


@pytest.mark.parametrize("container", APP_CONTAINERS)
def test_every_environment_variable_on_app_containers_is_a_real_setting(container: str) -> None:
    accepted = _env_names(_settings_class(container))
    unknown = sorted(name for name in _environment(container) if name.upper() not in accepted)
    assert not unknown, f"{container} sets variables no setting reads: {unknown}"


@pytest.mark.parametrize("container", APP_CONTAINERS)
def test_app_container_environment_loads_into_its_settings_as_written(
    container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_class = _settings_class(container)
    _clear_settings_environment(monkeypatch, settings_class)
    environment = _environment(container)
    for key, raw in environment.items():
        assert isinstance(raw, str), f"{container}: compose wants {key} quoted as a string, got {raw!r}"
        monkeypatch.setenv(key, _interpolate(raw))
    settings = settings_class()
    fields = _env_names(settings_class)
    for key, raw in environment.items():
        field_name = fields[key.upper()]
        annotation = settings_class.model_fields[field_name].annotation
        assert annotation is not None
        expected = TypeAdapter(annotation).validate_strings(_interpolate(str(raw)))
        assert getattr(settings, field_name) == expected, f"{container}: {key} did not reach {field_name}"


@pytest.mark.parametrize("name", list(SERVICES))
def test_each_service_listens_on_all_interfaces_inside_its_container(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_class = _settings_class(name)
    _clear_settings_environment(monkeypatch, settings_class)
    for key, raw in _environment(name).items():
        monkeypatch.setenv(key, _interpolate(str(raw)))
    assert settings_class().http_host == "0.0.0.0"


def test_app_containers_share_one_environment_with_the_jwt_secret_left_to_the_user() -> None:
    shared = _compose()["x-paydesk-env"]
    for container in APP_CONTAINERS:
        environment = _environment(container)
        assert {key: environment.get(key) for key in shared} == shared, f"{container} must use x-paydesk-env"
        assert re.fullmatch(r"\$\{PAYDESK_JWT_SECRET:\?[^}]+\}", str(environment["PAYDESK_JWT_SECRET"]))
    assert shared["KAFKA_IDEMPOTENT_PRODUCER"] == "true", "Apache Kafka supports idempotent producers"


def test_app_containers_reach_the_compose_broker_and_database() -> None:
    shared = _compose()["x-paydesk-env"]
    kafka = _environment("kafka")
    advertised = {urlsplit(listener).netloc for listener in str(kafka["KAFKA_ADVERTISED_LISTENERS"]).split(",")}
    assert set(shared["KAFKA_BOOTSTRAP_SERVERS"].split(",")) <= advertised
    postgres = _environment("postgres")
    url = make_url(shared["DATABASE_URL"])
    assert (url.drivername, url.host, url.port) == ("postgresql+asyncpg", "postgres", 5432)
    assert (url.username, url.password, url.database) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
        postgres["POSTGRES_DB"],
    )


def test_init_creates_the_topics_then_migrates_every_service() -> None:
    init = _service(INIT)
    script = " ".join(_argv(init.get("entrypoint")) + _argv(init.get("command")))
    topics, migrate = script.find("paydesk topics"), script.find("paydesk migrate all")
    assert 0 <= topics < migrate, f"init must run `paydesk topics` and then `paydesk migrate all`: {script!r}"
    cli = typer.main.get_command(cli_app)
    assert isinstance(cli, typer.core.TyperGroup)
    assert {"topics", "migrate", "service"} <= set(cli.commands), "init runs commands the CLI has"


def test_services_start_after_init_which_waits_for_healthy_infrastructure() -> None:
    init_depends = _service(INIT)["depends_on"]
    for infrastructure in ("postgres", "kafka"):
        assert init_depends[infrastructure] == {"condition": "service_healthy"}
        assert _service(infrastructure)["healthcheck"]["test"]
    assert _service(INIT).get("restart", "no") == "no"
    for name in SERVICES:
        assert _service(name)["depends_on"][INIT] == {"condition": "service_completed_successfully"}


def _pinned_kafka_version() -> str:
    """The Apache Kafka version `make kafka` fetches from Maven Central for `make run` and the tests."""
    import xml.etree.ElementTree as ET

    namespace = {"m": "http://maven.apache.org/POM/4.0.0"}
    version = ET.parse(ROOT / "paydesk" / "kafka" / "pom.xml").find("m:properties/m:kafka.version", namespace)
    assert version is not None and version.text
    return version.text


def test_infrastructure_uses_the_agreed_images() -> None:
    assert _service("kafka")["image"] == f"apache/kafka:{_pinned_kafka_version()}", "the Kafka of make run and tests"
    assert _pinned_kafka_version().startswith("4."), "Apache Kafka 4.x"
    assert _service("postgres")["image"] == "postgres:17"
    assert "broker" in str(_environment("kafka")["KAFKA_PROCESS_ROLES"])  # KRaft, no ZooKeeper


def test_every_app_container_is_built_from_deploy_dockerfile() -> None:
    images = set()
    for container in APP_CONTAINERS:
        build = _service(container)["build"]
        assert (COMPOSE_FILE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        images.add(_service(container)["image"])
    assert len(images) == 1, "one image, built once, for init and every service"


def test_the_dockerfile_entrypoint_runs_paydesk() -> None:
    entrypoints = [arguments for keyword, arguments in _dockerfile_instructions() if keyword == "ENTRYPOINT"]
    assert len(entrypoints) == 1
    argv = json.loads(entrypoints[0])
    assert Path(argv[0]).name == "paydesk"
    assert "paydesk" in _pyproject()["project"]["scripts"], "the entrypoint is the project's console script"


def test_the_dockerfile_runs_as_a_non_root_user() -> None:
    users = [arguments for keyword, arguments in _dockerfile_instructions() if keyword == "USER"]
    assert users, "the image must not run as root"
    assert users[-1].split(":")[0] not in {"root", "0"}


def test_the_dockerfile_copies_every_package_the_project_ships() -> None:
    copied = " ".join(arguments for keyword, arguments in _dockerfile_instructions() if keyword == "COPY")
    packages = _pyproject()["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    for needed in [*packages, "pyproject.toml", "uv.lock", _pyproject()["project"]["readme"]]:
        assert re.search(rf"(^|\s){re.escape(needed)}/?(\s|$)", copied), f"the image does not copy {needed}"
    runs = " ".join(arguments for keyword, arguments in _dockerfile_instructions() if keyword == "RUN")
    assert "uv sync --frozen --no-dev" in runs


def test_the_dockerfile_installs_the_uv_the_makefile_pins() -> None:
    pin = re.compile(r"uv==([0-9][0-9A-Za-z.]*)")
    makefile_pin = pin.search((ROOT / "Makefile").read_text())
    dockerfile_pin = pin.search(DOCKERFILE.read_text())
    assert makefile_pin is not None
    assert dockerfile_pin is not None
    assert dockerfile_pin.group(1) == makefile_pin.group(1)


def test_jaeger_receives_every_services_spans_over_otlp_and_shows_them_on_its_ui_port() -> None:
    jaeger = _service("jaeger")
    assert str(jaeger["image"]).startswith("jaegertracing/all-in-one:"), "the all-in-one image: collector, store, UI"
    assert (16686, 16686) in _published_ports("jaeger"), "the Jaeger UI is reachable from the host"
    shared = _compose()["x-paydesk-env"]
    assert shared["PAYDESK_OTEL_EXPORTER"] == "otlp"
    assert "otlp" in str(ServiceSettings.model_fields["otel_exporter"].annotation), "a value the settings accept"
    endpoint = urlsplit(shared["OTEL_EXPORTER_OTLP_ENDPOINT"])
    # Port 4318 is OTLP over HTTP, the protocol of the exporter the project installs (proto-http).
    assert (endpoint.scheme, endpoint.hostname, endpoint.port) == ("http", "jaeger", 4318)
    assert "opentelemetry-exporter-otlp-proto-http" in _pyproject()["project"]["dependencies"]
    for name in SERVICES:
        assert "jaeger" in _service(name)["depends_on"], f"{name} starts after jaeger"
