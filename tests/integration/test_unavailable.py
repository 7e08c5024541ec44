"""Infrastructure down is a 503 with Retry-After, never a 500: the client can tell "retry later" from "wrong"."""

from __future__ import annotations

import logging
import uuid

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from paydesk.embedded import free_port
from services.payments.app import create_service
from services.payments.settings import PaymentsSettings
from shared.auth import Role, mint_token
from tests.conftest import Infra

SECRET = "unavailable-test-secret-long-enough-for-hs256"


async def test_a_request_while_the_database_is_unreachable_answers_503_with_retry_after_and_logs_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nobody_listens = f"postgresql+asyncpg://paydesk:pw@127.0.0.1:{free_port()}/paydesk"
    service = create_service(PaymentsSettings(database_url=nobody_listens, jwt_secret=SECRET))
    token = mint_token(SECRET, user="Jane Smith", roles=[Role.CUSTOMER_EXECUTIVE])
    body = {
        "account_number": "WU-10001",
        "payment_type": "bill",
        "item_reference": "INV-2025-001234",
        "method": "Cash",
        "amount": "145.50",
        "payment_date": "2025-04-20",
        "cash_received": "150.00",
    }
    transport = httpx.ASGITransport(app=service.http, raise_app_exceptions=True)
    try:
        with caplog.at_level(logging.ERROR, logger="shared.service"):
            async with httpx.AsyncClient(transport=transport, base_url="http://payments") as client:
                headers = {"Authorization": f"Bearer {token}"}
                responses = [
                    await client.post(
                        "/payments", json=body, headers=headers | {"Idempotency-Key": f"k-{uuid.uuid4()}"}
                    ),
                    await client.get("/consumers", params={"q": "John"}, headers=headers),
                ]
    finally:
        await service.engine.dispose()

    for response in responses:
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"].isdigit()
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "service_unavailable"
    lines = [r for r in caplog.records if "503" in r.getMessage()]
    assert len(lines) == 1, "one line per kind of failure, not one per request"
    assert lines[0].exc_info is None, "no stack trace for a known outage"


async def test_a_database_refusing_connections_is_a_503_not_a_500(infra: Infra) -> None:
    """Found by the chaos harness: Postgres refusing a connection with a server error (here 53300, too many
    connections for the role; the same path as 57P03 "the database system is starting up" after a restart) came
    out of SQLAlchemy as a plain DBAPIError with no connection to invalidate, and the counter got a 500."""
    role = f"refused_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(infra.database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await admin.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0')
    finally:
        await admin.close()
    url = make_url(infra.database_url).set(username=role).render_as_string(hide_password=False)
    service = create_service(PaymentsSettings(database_url=url, jwt_secret=SECRET))
    token = mint_token(SECRET, user="Jane Smith", roles=[Role.CUSTOMER_EXECUTIVE])
    transport = httpx.ASGITransport(app=service.http, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://payments") as client:
            response = await client.get(
                "/consumers", params={"q": "John"}, headers={"Authorization": f"Bearer {token}"}
            )
    finally:
        await service.engine.dispose()
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"].isdigit()
    assert response.json()["code"] == "service_unavailable"
