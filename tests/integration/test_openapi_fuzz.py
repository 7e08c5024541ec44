"""Schemathesis against every service's OpenAPI document, over real HTTP on a real database and broker of its own:
whatever a client sends that the document allows (and some it does not), no answer is a 5xx and every
documented answer matches its schema and media type.

Examples per operation are few (the whole module runs in about a minute); run with PAYDESK_FUZZ_EXAMPLES=200
for a deeper pass.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import content_type_conformance, not_a_server_error, response_schema_conformance

from paydesk.embedded import free_port
from paydesk.registry import REGISTRY, SERVICES
from shared.auth import Role, mint_token
from tests.conftest import Infra
from tests.support.helpers import own_broker_and_database

pytestmark = pytest.mark.kafka

SECRET = "openapi-fuzz-secret-that-is-long-enough-for-hs256"
EXAMPLES = int(os.environ.get("PAYDESK_FUZZ_EXAMPLES", "4"))
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


@dataclass
class Running:
    name: str
    base_url: str
    document: dict[str, object]


@pytest.fixture(scope="module")
async def isolated(infra: Infra) -> AsyncIterator[tuple[str, str]]:
    """A database and broker of their own: the fuzzer calls admin routes (settings!) with whatever it invents."""
    async with own_broker_and_database(infra.database_url, infra.workdir, "fuzz", tuple(SERVICES)) as pair:
        yield pair


@pytest.fixture(scope="module", params=list(SERVICES))
def served(request: pytest.FixtureRequest, isolated: tuple[str, str]) -> Iterator[Running]:
    """The service started as `paydesk service` starts it (uvicorn, lifespan and all), in a thread of this process."""
    database_url, bootstrap_servers = isolated
    module = REGISTRY[request.param].load()
    settings_class = type(module.create_service().settings)
    service = module.create_service(
        settings_class(
            database_url=database_url,
            kafka_bootstrap_servers=bootstrap_servers,
            jwt_secret=SECRET,
            http_port=free_port(),
        )
    )
    server = uvicorn.Server(uvicorn.Config(service.http, port=service.settings.http_port, log_config=None))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{service.settings.http_port}"
    deadline = time.monotonic() + 120
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, f"{request.param} did not start"
        time.sleep(0.1)
    document = httpx.get(f"{base_url}/openapi.json", timeout=30).json()
    try:
        yield Running(request.param, base_url, document)
    finally:
        server.should_exit = True
        thread.join(60)


def test_no_operation_answers_a_5xx_or_off_its_schema(served: Running) -> None:
    schema = schemathesis.openapi.from_dict(served.document)
    token = mint_token(SECRET, user="Fuzz Admin", roles=[Role.ADMIN])
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    operations = requests = 0
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an invalid document raises here, failing the test
        operations += 1
        checks = CHECKS
        for mode in GenerationMode:
            try:
                requests += fuzz(operation, mode, checks, served.base_url, headers)
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE, f"{operation.label}: no valid request could be made"
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis reports failures as a BaseExceptionGroup
                failures.append(f"{operation.label} ({mode.value}): {str(exc)[:1500]}")
    assert operations > 0 and requests >= operations, (operations, requests)
    assert not failures, "\n\n".join(failures)


def fuzz(
    operation: schemathesis.APIOperation[Any, Any, Any, Any],
    mode: GenerationMode,
    checks: list[Any],
    base_url: str,
    headers: dict[str, str],
) -> int:
    """Call one operation with a few generated requests and validate every answer; returns how many were sent."""
    sent = 0

    @settings(
        max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck), derandomize=True
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def call(case: schemathesis.Case[Any]) -> None:
        nonlocal sent
        sent += 1
        case.call_and_validate(base_url=base_url, headers=headers, checks=checks, timeout=60)

    call()
    return sent
