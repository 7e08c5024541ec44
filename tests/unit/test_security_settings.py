"""Start-up refusal of the development secret, the request body cap, page size caps and the documented errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from paydesk.registry import REGISTRY, SERVICES
from services.payments.app import create_service as create_payments
from services.payments.settings import PaymentsSettings
from shared.settings import DEVELOPMENT_JWT_SECRET, InsecureSettings, ServiceSettings

# The largest page any list endpoint may hand out: bigger pages are what exports are for.
MAX_PAGE_SIZE = 200


class TestTheDevelopmentSecret:
    def test_is_refused_without_the_development_flag(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("PAYDESK_JWT_SECRET", raising=False)
        monkeypatch.delenv("PAYDESK_DEVELOPMENT", raising=False)
        settings = ServiceSettings()
        assert settings.jwt_secret.get_secret_value() == DEVELOPMENT_JWT_SECRET
        with pytest.raises(InsecureSettings, match="PAYDESK_JWT_SECRET"):
            settings.check_secrets()

    def test_is_allowed_with_the_development_flag(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("PAYDESK_JWT_SECRET", raising=False)
        monkeypatch.setenv("PAYDESK_DEVELOPMENT", "true")
        ServiceSettings().check_secrets()

    def test_a_real_secret_needs_no_flag(self) -> None:
        ServiceSettings(jwt_secret="a-real-secret-from-the-vault-long-enough", development=False).check_secrets()

    async def test_a_service_refuses_to_start_before_it_connects_to_anything(self) -> None:
        service = create_payments(PaymentsSettings(jwt_secret=DEVELOPMENT_JWT_SECRET, development=False))
        with pytest.raises(InsecureSettings):
            await service.start()
        assert service.producer is None, "nothing was started"


@pytest.fixture
async def payments_client() -> AsyncIterator[httpx.AsyncClient]:
    service = create_payments(PaymentsSettings(max_request_body_bytes=64 * 1024))
    transport = httpx.ASGITransport(app=service.http)
    async with httpx.AsyncClient(transport=transport, base_url="http://payments") as client:
        yield client
    await service.engine.dispose()


class TestTheRequestBodyCap:
    async def test_a_declared_oversized_body_is_a_413_problem(self, payments_client: httpx.AsyncClient) -> None:
        response = await payments_client.post(
            "/payments", content=b"{" + b" " * 70_000 + b"}", headers={"content-type": "application/json"}
        )
        assert response.status_code == 413
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "payload_too_large"

    async def test_a_streamed_oversized_body_is_a_413_problem(self, payments_client: httpx.AsyncClient) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(20):
                yield b" " * 8192

        response = await payments_client.post(
            "/payments", content=chunks(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 413
        assert response.json()["code"] == "payload_too_large"

    async def test_a_body_under_the_cap_reaches_the_route(self, payments_client: httpx.AsyncClient) -> None:
        response = await payments_client.post("/payments", json={"notes": "x" * 1000})
        assert response.status_code == 401, "the route ran: it asked for a token"


def documents() -> dict[str, dict[str, Any]]:
    return {name: REGISTRY[name].load().create_service().http.openapi() for name in SERVICES}


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]


def test_every_page_size_parameter_has_a_maximum() -> None:
    capped = 0
    for name, document in documents().items():
        for method, path, operation in operations(document):
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "query" and parameter["name"] in {"limit", "page_size", "per_page", "size"}:
                    maximum = parameter["schema"].get("maximum")
                    assert maximum is not None, f"{name} {method} {path}: {parameter['name']} has no maximum"
                    assert maximum <= MAX_PAGE_SIZE, f"{name} {method} {path}: pages of {maximum}"
                    capped += 1
    assert capped >= 4, "the list endpoints page"


def test_documented_errors_are_problems_and_secured_routes_document_401_and_403() -> None:
    for name, document in documents().items():
        assert "Problem" in document["components"]["schemas"]
        for method, path, operation in operations(document):
            responses = operation["responses"]
            expected = {"422"} & set(responses)
            if operation.get("security"):
                expected |= {"401", "403"}
            if "requestBody" in operation:
                expected.add("413")
            for status in expected:
                content = responses[status]["content"]
                assert content == {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}, (
                    f"{name} {method} {path} {status}"
                )


def test_a_url_with_a_nul_character_is_refused_before_any_route() -> None:
    """Postgres text cannot hold NUL: such a value would otherwise reach a query and fail as a 500."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from shared.limits import RefuseNulCharacters

    app = FastAPI()

    @app.get("/payees")
    async def payees(q: str = "") -> dict[str, str]:
        return {"q": q}

    app.add_middleware(RefuseNulCharacters)
    client = TestClient(app)
    assert client.get("/payees", params={"q": "Jane"}).json() == {"q": "Jane"}
    refused = client.get("/payees?q=J%00ane")
    assert refused.status_code == 422
    assert refused.json()["code"] == "invalid_characters" and refused.json()["field"] == "query"
