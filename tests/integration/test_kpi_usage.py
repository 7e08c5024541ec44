"""The staff screens' usage tracking through kpi, on the real database and broker: what only the browser measures
(a customer's wait at the counter, how an inquiry ended, what was looked up, how long the dashboard was open)
reaches `analytics.events.v1` with the seed's property names."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from services.kpi.app import create_service
from services.kpi.settings import KpiSettings
from shared.auth import Role, mint_token
from shared.contracts import Topic
from tests.conftest import Infra
from tests.support.helpers import eventually, own_broker_and_database, read_topic, running

pytestmark = pytest.mark.kafka
SECRET = "kpi-usage-secret-that-is-long-enough-for-hs256"


class Kpi:
    def __init__(self, client: httpx.AsyncClient, bootstrap: str) -> None:
        self.client = client
        self.bootstrap = bootstrap

    async def post(self, path: str, body: dict[str, Any], role: Role, user: str) -> httpx.Response:
        token = mint_token(SECRET, user=user, roles=[role])
        return await self.client.post(path, json=body, headers={"Authorization": f"Bearer {token}"})

    async def tracked(self, user_id: str, event: str) -> dict[str, str] | None:
        usage = [json.loads(r.value)["data"] for r in await read_topic(self.bootstrap, Topic.ANALYTICS_EVENTS)]
        found = [u["properties"] for u in usage if u["event"] == event and u["user_id"] == user_id]
        return found[-1] if found else None


@pytest.fixture(scope="module")
async def kpi(infra: Infra) -> AsyncIterator[Kpi]:
    async with own_broker_and_database(infra.database_url, infra.workdir, "kpiusage", ("kpi",)) as (url, bootstrap):
        settings = KpiSettings(database_url=url, kafka_bootstrap_servers=bootstrap, jwt_secret=SECRET)
        async with running(create_service(settings)) as service:
            transport = httpx.ASGITransport(app=service.http)
            async with httpx.AsyncClient(transport=transport, base_url="http://kpi") as client:
                yield Kpi(client, bootstrap)


async def test_a_counter_payment_is_tracked_with_the_customers_wait_and_whether_the_receipt_was_shown(kpi: Kpi) -> None:
    user = f"Clerk {uuid.uuid4().hex[:6]}"
    body = {
        "event": "payment_processed",
        "payment_id": "PAY-2025-004521",
        "amount": "150.00",
        "method": "Cash",
        "processing_time_seconds": 2,
        "customer_wait_time_seconds": 95,
        "receipt_generated": True,
    }
    accepted = await kpi.post("/kpi/usage", body, Role.CUSTOMER_EXECUTIVE, user)
    assert accepted.status_code == 202, accepted.text
    tracked = await eventually(lambda: kpi.tracked(user.lower().replace(" ", "."), "payment_processed"), interval=0.5)
    assert tracked == {
        "payment_id": "PAY-2025-004521",
        "amount": "150.00",
        "method": "Cash",
        "processing_time": "2",
        "customer_wait_time": "95",
        "receipt_generated": "true",
    }


async def test_inquiries_and_history_lookups_are_tracked_with_the_seeds_properties(kpi: Kpi) -> None:
    user = f"Clerk {uuid.uuid4().hex[:6]}"
    inquiry = {
        "event": "payment_inquiry_resolved",
        "inquiry_type": "payment_status",
        "resolution_time_seconds": 240,
        "escalation_required": False,
        "customer_satisfaction": 5,
    }
    lookup = {
        "event": "payment_history_viewed",
        "search_criteria": "q=doe",
        "date_range": "2025-04-01..2025-04-30",
        "details_accessed": "R-5001",
        "follow_up_action": "view_receipt",
    }
    for body in (inquiry, lookup):
        assert (await kpi.post("/kpi/usage", body, Role.RECOVERY_EXECUTIVE, user)).status_code == 202
    user_id = user.lower().replace(" ", ".")
    resolved = await eventually(lambda: kpi.tracked(user_id, "payment_inquiry_resolved"), interval=0.5)
    assert resolved == {
        "inquiry_type": "payment_status",
        "resolution_time": "240",
        "escalation_required": "false",
        "customer_satisfaction": "5",
    }
    viewed = await eventually(lambda: kpi.tracked(user_id, "payment_history_viewed"), interval=0.5)
    assert viewed == {k: v for k, v in lookup.items() if k != "event"}


async def test_the_dashboard_view_keeps_how_long_it_was_open(kpi: Kpi) -> None:
    user = f"Manager {uuid.uuid4().hex[:6]}"
    body = {"date_range_selected": "2025-04", "widgets_accessed": ["tiles", "period"], "view_duration_seconds": 312}
    assert (await kpi.post("/kpi/dashboard-views", body, Role.BILLING_MANAGER, user)).status_code == 202
    tracked = await eventually(lambda: kpi.tracked(user.lower().replace(" ", "."), "dashboard_view"), interval=0.5)
    assert tracked == {"date_range_selected": "2025-04", "widgets_accessed": "tiles,period", "view_duration": "312"}


async def test_bad_tracking_is_refused_naming_the_field_and_nothing_is_published(kpi: Kpi) -> None:
    user = f"Clerk {uuid.uuid4().hex[:6]}"
    unknown = await kpi.post("/kpi/usage", {"event": "coffee_break"}, Role.CUSTOMER_EXECUTIVE, user)
    assert unknown.status_code == 422 and "event" in unknown.text
    negative = {
        "event": "payment_processed",
        "payment_id": "PAY-1",
        "amount": "1.00",
        "method": "Cash",
        "processing_time_seconds": 1,
        "customer_wait_time_seconds": -5,
        "receipt_generated": True,
    }
    refused = await kpi.post("/kpi/usage", negative, Role.CUSTOMER_EXECUTIVE, user)
    assert refused.status_code == 422 and "customer_wait_time_seconds" in refused.text
    customer = mint_token(SECRET, user="John Doe", roles=[Role.CUSTOMER], account_number="WU-10001")
    forbidden = await kpi.client.post(
        "/kpi/usage", json=negative | {"customer_wait_time_seconds": 1}, headers={"Authorization": f"Bearer {customer}"}
    )
    assert forbidden.status_code == 403
    assert await kpi.tracked(user.lower().replace(" ", "."), "payment_processed") is None
