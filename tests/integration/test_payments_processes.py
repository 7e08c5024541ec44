"""Payments as `paydesk run` starts it: an api process answering the counters and a workers process consuming and
relaying, on the real database and broker. The api process stages events and never publishes them; the workers'
relay does. The workers process consumes billing's events for both and serves no business route."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from services.payments.app import create_service
from services.payments.settings import PaymentsSettings
from shared.contracts import Topic
from tests.conftest import Infra
from tests.support.helpers import caught_up, eventually, read_topic, running
from tests.support.payments import SECRET, Api, bill_payment, seeded

pytestmark = pytest.mark.kafka


@dataclass
class Split:
    api: Api
    workers: httpx.AsyncClient


def settings(infra: Infra, role: str) -> PaymentsSettings:
    return PaymentsSettings(
        database_url=infra.database_url,
        kafka_bootstrap_servers=infra.bootstrap_servers,
        jwt_secret=SECRET,
        outbox_poll_seconds=0.05,
        process_role=role,
    )


@pytest.fixture(scope="module")
async def split(infra: Infra) -> AsyncIterator[Split]:
    workers = create_service(settings(infra, "workers"))
    api = create_service(settings(infra, "api"))
    async with running(workers), running(api):
        await caught_up(workers)
        async with (
            httpx.AsyncClient(transport=httpx.ASGITransport(app=api.http), base_url="http://api", timeout=60) as a,
            httpx.AsyncClient(transport=httpx.ASGITransport(app=workers.http), base_url="http://w", timeout=60) as w,
        ):
            yield Split(Api(api, a, infra.bootstrap_servers), w)


async def test_the_api_process_binds_no_consumer_and_runs_no_relay_while_the_workers_do(split: Split) -> None:
    api, workers = split.api.service, split.workers
    assert api.role == "api" and api.event_consumers == [] and not api.runs_workers
    ready = await split.api.client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "broker": "ok"}
    workers_ready = (await workers.get("/health/ready")).json()
    assert workers_ready["checks"] == {"database": "ok", "broker": "ok", "consumers": "ok"}


async def test_a_counter_payment_taken_by_the_api_process_is_published_by_the_workers_relay(split: Split) -> None:
    # Billing's events reach the api process's reads only through the workers' consumers.
    account, _ = await seeded(split.api)
    response = await split.api.pay(bill_payment(account, "145.50"), key=f"split-{uuid.uuid4()}")
    assert response.status_code == 201, response.text
    payment_id = response.json()["payment_id"]

    async def published() -> bool:
        records = await read_topic(split.api.bootstrap, Topic.PAYMENTS_EVENTS)
        return any(b'"payment.posted"' in r.value and payment_id.encode() in r.value for r in records)

    await eventually(published)


async def test_the_workers_process_serves_health_and_metrics_but_no_business_route(split: Split) -> None:
    headers = split.api.auth()
    refused = await split.workers.post("/payments", json={}, headers=headers)
    assert refused.status_code == 404
    assert (await split.workers.get("/consumers", params={"q": "anyone"}, headers=headers)).status_code == 404
    metrics = (await split.workers.get("/metrics")).text
    assert 'paydesk_event_loop_lag_seconds_count{role="workers",service="payments"}' in metrics
    assert 'paydesk_consumer_stalled{consumer="billing",service="payments"} 0.0' in metrics
