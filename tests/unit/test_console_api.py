"""The console's sign-in and page routes, and the CORS every service answers the console's pages with.

No connection is made: sign-in's session row is written through a stand-in session factory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient

from services.console import api
from services.console.settings import ConsoleSettings
from services.console.storage import plumbing
from services.credit_notes.app import create_service as create_credit_notes
from services.credit_notes.settings import CreditNotesSettings
from shared.auth import ALGORITHM, decode_token
from shared.service import Service

SECRET = "console-unit-test-secret-long-enough-for-hs256"
ORIGIN = "http://console.example:8100"


class FakeSession:
    def __init__(self, writes: list[Any]) -> None:
        self.writes = writes

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[None]:
        yield

    async def execute(self, statement: Any) -> Any:
        self.writes.append(statement)
        return None


def _client(**settings: Any) -> tuple[TestClient, list[Any]]:
    writes: list[Any] = []

    @asynccontextmanager
    async def sessions() -> AsyncIterator[FakeSession]:
        yield FakeSession(writes)

    console = ConsoleSettings(jwt_secret=SECRET, **settings)
    # The service's own app (problem details, auth), with the routes on a stand-in database; nothing connects.
    service = Service(console, plumbing, title="console under test")
    service.include(api.router(sessions, console))  # type: ignore[arg-type]
    return TestClient(service.http), writes


def test_sign_in_answers_a_short_lived_token_the_navigation_and_the_home_page() -> None:
    client, writes = _client(token_minutes=15)
    answer = client.post("/session", json={"username": "jane", "password": "paydesk"})
    assert answer.status_code == 200
    body = answer.json()
    actor = decode_token(SECRET, body["token"])
    assert actor.name == "Jane Smith" and {r.value for r in actor.roles} == {"customer_executive"}
    claims = jwt.decode(body["token"], SECRET, algorithms=[ALGORITHM], options={"verify_iss": False})
    assert claims["exp"] - claims["iat"] == 15 * 60
    assert body["home"] == "#/customer-service"
    assert [n["label"] for n in body["navigation"]] == ["Customer service", "Payments", "Record payment"]
    assert len(writes) == 1, "one sign-in session row"


def test_a_customer_signs_in_with_their_account_in_the_token() -> None:
    client, _ = _client()
    body = client.post("/session", json={"username": "john", "password": "paydesk"}).json()
    assert decode_token(SECRET, body["token"]).account_number == "WU-10001"
    assert body["home"] == "#/my-account"


@pytest.mark.parametrize("credentials", [{"username": "jane", "password": "x"}, {"username": "x", "password": "x"}])
def test_wrong_credentials_are_401_naming_no_user(credentials: dict[str, str]) -> None:
    client, writes = _client()
    answer = client.post("/session", json=credentials)
    assert answer.status_code == 401 and answer.json()["detail"] == "user name or password is wrong"
    assert writes == []


def test_with_an_oidc_issuer_the_development_sign_in_is_off() -> None:
    client, _ = _client(oidc_issuer="https://login.example.com/realms/paydesk")
    assert client.post("/session", json={"username": "jane", "password": "paydesk"}).status_code == 404
    assert client.get("/config.json").json()["sign_in"]["oidc_issuer"] == "https://login.example.com/realms/paydesk"


def test_the_page_and_its_configuration_hold_no_data() -> None:
    client, _ = _client(payments_url="http://pay.example:1")
    page = client.get("/")
    assert page.status_code == 200 and "Content-Security-Policy" in page.headers
    assert "http://pay.example:1" in page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    config = client.get("/config.json").json()
    assert config["services"]["payments"] == "http://pay.example:1"
    assert config["services"]["collections"] == "http://127.0.0.1:8106"
    # A deployment without collections leaves its address empty, and the pages say it is not there.
    without, _ = _client(collections_url="")
    assert without.get("/config.json").json()["services"]["collections"] is None
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/axe.min.js").status_code == 200
    assert client.get("/static/..%2Fapi.py").status_code == 404
    assert client.get("/static/nothing.js").status_code == 404


def test_session_needs_a_token() -> None:
    client, _ = _client()
    assert client.get("/session").status_code == 401


def test_services_answer_the_consoles_preflight_and_no_other_origin() -> None:
    service = create_credit_notes(CreditNotesSettings(cors_origins=f"{ORIGIN},http://other.example"))
    client = TestClient(service.http)  # no lifespan: the preflight is answered before any route
    preflight = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,idempotency-key",
    }
    answer = client.options("/credit-notes", headers=preflight)
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    assert "idempotency-key" in answer.headers["access-control-allow-headers"].lower()
    refused = client.options("/credit-notes", headers={**preflight, "Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in refused.headers
    unauthenticated = client.get("/credit-notes", headers={"Origin": ORIGIN})
    assert unauthenticated.status_code == 401 and unauthenticated.headers["access-control-allow-origin"] == ORIGIN


def test_cors_is_off_when_no_origin_is_configured() -> None:
    service = create_credit_notes(CreditNotesSettings(cors_origins=""))
    answer = TestClient(service.http).options(
        "/credit-notes", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}
    )
    assert "access-control-allow-origin" not in answer.headers
