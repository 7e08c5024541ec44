"""Every HTTP route of every service, called with no token, an expired one, a foreign one and each role's, answers
as its OpenAPI document says: the bearer scheme's scopes name the roles a route admits (see shared/auth.py).

Routes are read from each app, not listed here, so a new route is held to its document the day it is added.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from paydesk.registry import REGISTRY, SERVICES
from shared.auth import Role, mint_token
from shared.service import Service
from tests.conftest import Infra

pytestmark = pytest.mark.kafka

SECRET = "authorization-matrix-secret-long-enough-for-hs256"
FOREIGN_SECRET = "somebody-elses-secret-that-is-long-enough-for-hs256"
# Probes that report the infrastructure's state: a service not started answers 503 there, by design.
PROBES = {"/health/ready"}


def build(name: str, infra: Infra) -> Service:
    """The service as `paydesk service` builds it, on the run's database, not started (no consumer is needed)."""
    module = REGISTRY[name].load()
    settings_class = type(module.create_service().settings)
    settings = settings_class(
        database_url=infra.database_url, kafka_bootstrap_servers=infra.bootstrap_servers, jwt_secret=SECRET
    )
    service: Service = module.create_service(settings)
    return service


def concrete(path: str, operation: dict[str, Any]) -> str:
    """The path with each parameter filled by a value of its type that names nothing that exists."""
    types = {p["name"]: p.get("schema", {}).get("type") for p in operation.get("parameters", []) if p["in"] == "path"}
    return re.sub(r"\{(\w+)\}", lambda m: "987654321" if types.get(m[1]) == "integer" else "ZZ-NOBODY-1", path)


def callers() -> dict[str, dict[str, str]]:
    """Each kind of caller and the headers it sends."""
    expired = mint_token(SECRET, user="Old Token", roles=[Role.ADMIN], ttl=timedelta(seconds=-60))
    foreign = mint_token(FOREIGN_SECRET, user="Mallory", roles=[Role.ADMIN])
    headers = {
        "no token": {},
        "expired token": {"Authorization": f"Bearer {expired}"},
        "foreign key": {"Authorization": f"Bearer {foreign}"},
    }
    for role in Role:
        # A customer's token names one account: never the one in the path, so any account route must refuse it.
        account = "ZZ-OTHER-1" if role is Role.CUSTOMER else None
        token = mint_token(SECRET, user="Matrix User", roles=[role], account_number=account)
        headers[role.value] = {"Authorization": f"Bearer {token}"}
    return headers


@pytest.fixture(scope="module", params=list(SERVICES))
async def service(request: pytest.FixtureRequest, infra: Infra) -> AsyncIterator[Service]:
    built = build(request.param, infra)
    try:
        yield built
    finally:
        await built.engine.dispose()


async def test_every_route_answers_every_caller_as_its_openapi_document_says(service: Service) -> None:
    document = service.http.openapi()
    routes = [route for route in service.http.routes if isinstance(route, APIRoute)]
    assert routes, "the service has HTTP routes"
    checked = 0
    mismatches: list[str] = []
    transport = httpx.ASGITransport(app=service.http)
    async with httpx.AsyncClient(transport=transport, base_url="http://matrix", timeout=60) as client:
        for route in routes:
            for method in sorted(set(route.methods or ()) - {"HEAD", "OPTIONS"}):
                operation = document["paths"].get(route.path_format, {}).get(method.lower())
                assert operation is not None or not route.include_in_schema, f"{method} {route.path} undocumented"
                security = (operation or {}).get("security") or []
                admitted = set(security[0]["HTTPBearer"]) if security else None
                url = concrete(route.path_format, operation or {})
                body: dict[str, Any] | None = {} if operation and "requestBody" in operation else None
                for caller, headers in callers().items():
                    response = await client.request(method, url, headers=headers, json=body)
                    checked += 1
                    outcome = _judge(caller, admitted, response, route.path_format)
                    if outcome:
                        mismatches.append(f"{method} {route.path_format} as {caller}: {outcome}")
    assert not mismatches, "\n".join(mismatches)
    assert checked >= len(routes) * len(callers())


def _judge(caller: str, admitted: set[str] | None, response: httpx.Response, path: str) -> str | None:
    """What is wrong with `response`, or None if it is what the document promises."""
    status = response.status_code
    if admitted is None:  # public: webhooks (signed), health, metrics, the dashboard page
        if status in (401, 403):
            return f"public route answered {status}"
        return None if status < 500 or path in PROBES else f"answered {status}: {response.text[:200]}"
    if caller in ("no token", "expired token", "foreign key"):
        if status != 401 or response.json().get("code") != "unauthenticated":
            return f"expected 401 unauthenticated, got {status}"
        return None if "Bearer" in response.headers.get("WWW-Authenticate", "") else "401 without WWW-Authenticate"
    if caller not in admitted:
        return None if status == 403 and response.json().get("code") == "forbidden" else f"expected 403, got {status}"
    if status in (401, 403) or status >= 500:
        return f"admitted role answered {status}: {response.text[:200]}"
    return None


def test_every_secured_route_admits_admin_and_names_only_known_roles() -> None:
    known = {role.value for role in Role}
    for name in SERVICES:
        document = REGISTRY[name].load().create_service().http.openapi()
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                for requirement in operation.get("security", []):
                    roles = set(requirement["HTTPBearer"])
                    assert roles <= known, f"{name} {method} {path}: unknown roles {roles - known}"
                    assert Role.ADMIN.value in roles, f"{name} {method} {path}: admin passes every role check"
