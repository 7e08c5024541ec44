"""The ops dashboard page in a real headless browser (Debian's chromium), against a kpi service fed through Kafka.

Saves a screenshot to docs/kpi/dashboard.png so a person can see what the page looks like.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import uvicorn
from playwright.async_api import Page, async_playwright

from paydesk.embedded import free_port
from paydesk.sample_data import seed_sample
from services.kpi.app import create_service
from services.kpi.settings import KpiSettings
from shared.auth import Role, mint_token
from shared.consumer_lag import consumer_lag
from shared.contracts import Envelope, Topic, new_envelope
from shared.contracts.events import CreditNoteIssued, Money, PaymentType
from shared.money import format_money
from tests.conftest import Infra
from tests.integration.test_kpi_service import bill, posted, status_changed
from tests.support.helpers import eventually, own_broker_and_database, publish, read_topic

pytestmark = pytest.mark.kafka
SECRET = "kpi-dashboard-secret-long-enough-for-hs256"
ZONE = ZoneInfo("America/Chicago")
SCREENSHOT = Path(__file__).parents[2] / "docs" / "kpi" / "dashboard.png"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
FIRST = ["Ava", "Liam", "Noah", "Emma", "Mia", "Lucas", "Zoe", "Omar", "Priya", "Chen", "Sofia", "Diego"]
LAST = ["Smith", "Garcia", "Nguyen", "Patel", "Kim", "Okafor", "Rossi", "Haddad", "Silva"]
CHANNELS = [("Walk-in", ["Cash", "Debit Card", "Check"]), ("Online", ["Credit Card"]), ("Bank Lockbox", ["Check"])]


@dataclass
class Dashboard:
    url: str
    bootstrap: str
    manager: str


def a_month_of_payments(today: date, now: datetime) -> tuple[list[Envelope], list[Envelope]]:
    """A believable month: bills due, payments by several channels and methods, some of them today."""
    rng = random.Random(30)
    bills: list[Envelope] = []
    events: list[Envelope] = []
    start = today.replace(day=1)
    previous = (start - timedelta(days=1)).replace(day=1)
    for n in range(60):
        account = f"WU-{30001 + n}"
        issued = start - timedelta(days=rng.randint(3, 25))
        amount = f"{rng.randint(4000, 32000) / 100:.2f}"
        due_day = start + timedelta(days=rng.randint(0, 27))
        bills.append(bill(account, f"INV-D-{n}", amount, issued_on=issued, due_date=due_day))
        if rng.random() < 0.8:
            day = today if n % 10 == 0 else start + timedelta(days=rng.randint(0, today.day - 1))
            channel, methods = rng.choice(CHANNELS)
            posted_at = now if day == today else datetime.combine(day, datetime.min.time(), ZONE) + timedelta(hours=10)
            events.append(
                posted(
                    account,
                    f"PAY-D-{n}",
                    amount,
                    day,
                    issued_on=issued,
                    posted_at=posted_at,
                    channel=channel,
                    method=rng.choice(methods),
                    payment_type=rng.choice([PaymentType.BILL, PaymentType.BILL, PaymentType.SERVICE]),
                    verification="Pending" if channel == "Online" and rng.random() < 0.5 else "Verified",
                    receipt_number=f"R-{6000 + n}",
                    name=f"{rng.choice(FIRST)} {rng.choice(LAST)}",
                )
            )
        if rng.random() < 0.5:  # last month, for the change indicators
            day = previous + timedelta(days=rng.randint(0, 27))
            events.append(
                posted(
                    account,
                    f"PAY-P-{n}",
                    f"{rng.randint(4000, 30000) / 100:.2f}",
                    day,
                    issued_on=day - timedelta(days=rng.randint(1, 9)),
                    posted_at=datetime.combine(day, datetime.min.time(), ZONE) + timedelta(hours=11),
                    channel=rng.choice(CHANNELS)[0],
                )
            )
    events.append(status_changed("WU-30001", "PAY-F-1", "Pending", "Failed", now))
    return bills, events


@pytest.fixture(scope="module")
async def dashboard(infra: Infra) -> AsyncIterator[Dashboard]:
    async with own_broker_and_database(infra.database_url, infra.workdir, "kpidash", ("kpi",)) as (url, bootstrap):
        settings = KpiSettings(
            database_url=url,
            kafka_bootstrap_servers=bootstrap,
            time_zone="America/Chicago",
            dashboard_refresh_seconds=0.5,
            jwt_secret=SECRET,
            http_port=free_port(),
        )
        server = uvicorn.Server(
            uvicorn.Config(create_service(settings).http, host="127.0.0.1", port=settings.http_port, log_config=None)
        )
        serving = asyncio.create_task(server.serve())
        try:
            await eventually(lambda: _started(server), within=180)
            now = datetime.now(UTC)
            today = now.astimezone(ZONE).date()
            await publish(bootstrap, Topic.BILLING_RECEIVABLES, seed_sample())
            bills, payments = a_month_of_payments(today, now)
            await publish(bootstrap, Topic.BILLING_RECEIVABLES, bills)
            await publish(bootstrap, Topic.PAYMENTS_EVENTS, payments)
            note = CreditNoteIssued(
                credit_note_number="CN-46129",
                account_number="WU-30002",
                consumer_name="John Doe",
                receipt_number="R-6001",
                payment_id="PAY-D-1",
                amount=Money(amount=Decimal("4.50")),
                reason="Overpayment",
                created_by="Jane Smith",
                created_at=now,
                expires_at=now + timedelta(days=365),
            )
            await publish(
                bootstrap,
                Topic.CREDITNOTES_EVENTS,
                [new_envelope("credit_note.issued", source="credit_notes", subject="WU-30002", data=note)],
            )
            manager = mint_token(SECRET, user="Bill Manager", roles=[Role.BILLING_MANAGER])
            yield Dashboard(f"http://127.0.0.1:{settings.http_port}", bootstrap, manager)
        finally:
            server.should_exit = True
            await serving


async def _started(server: uvicorn.Server) -> bool:
    return bool(server.started)


async def _summary(dashboard: Dashboard) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=dashboard.url) as client:
        response = await client.get("/kpi/summary", headers={"Authorization": f"Bearer {dashboard.manager}"})
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _tile(page: Page, tile: str) -> tuple[str, str, str]:
    value = page.locator(f"#{tile} [data-value]")
    change = page.locator(f"#{tile} .change")
    return (
        await value.get_attribute("data-value") or "",
        await value.inner_text(),
        await change.inner_text(),
    )


async def test_the_dashboard_shows_the_numbers_the_api_returns_and_refreshes_live(dashboard: Dashboard) -> None:
    async def settled() -> dict[str, Any] | None:
        summary = await _summary(dashboard)
        return summary if summary["kpis"]["credit_notes_issued"]["count"] == 1 else None

    await eventually(settled)
    await eventually(lambda: _stable(dashboard))
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1600, "height": 1000})
            await page.goto(f"{dashboard.url}/?token={dashboard.manager}")
            await page.wait_for_selector("#board[data-loaded-period]")
            assert "token=" not in page.url, "the token leaves the address bar"
            assert await page.evaluate("sessionStorage.getItem('paydesk.kpi.token')") == dashboard.manager

            summary = await _summary(dashboard)
            kpis = summary["kpis"]
            assert Decimal(kpis["total_collected"]["value"]) > 0 and Decimal(kpis["received_today"]["value"]) > 0
            assert kpis["collection_rate"]["value"] is not None
            expected = {
                "tile-total-collected": (
                    kpis["total_collected"]["value"],
                    format_money(Decimal(kpis["total_collected"]["value"]), "USD"),
                ),
                "tile-received-today": (
                    kpis["received_today"]["value"],
                    format_money(Decimal(kpis["received_today"]["value"]), "USD"),
                ),
                "tile-collection-rate": (kpis["collection_rate"]["value"], f"{kpis['collection_rate']['value']}%"),
                "tile-average-collection-time": (
                    kpis["average_collection_time"]["value"],
                    f"{kpis['average_collection_time']['value']} days",
                ),
            }
            for tile, (raw, text) in expected.items():
                shown_raw, shown_text, change = await _tile(page, tile)
                assert (shown_raw, shown_text) == (raw, text), tile
                percent = kpis[tile.removeprefix("tile-").replace("-", "_")]["change_percent"]
                if percent is not None:
                    assert percent.lstrip("-") in change, (tile, change)
            count = page.locator("#tile-received-today .count")
            assert await count.inner_text() == str(kpis["received_today"]["payments"])
            pending = page.locator("#mini-pending-verification [data-value]")
            assert await pending.get_attribute("data-value") == str(kpis["pending_verification"]["count"])

            charts = await page.evaluate(
                "['trend-chart', 'channel-chart', 'method-chart'].map(id => {"
                "  const c = Chart.getChart(id); return c ? [c.config.type, c.data.datasets.length,"
                "  c.data.datasets.reduce((n, d) => n + d.data.filter(v => v > 0).length, 0)] : null })"
            )
            assert charts[0][0] == "bar" and charts[0][1] == len(CHANNELS), charts
            assert charts[1][0] == "doughnut" and charts[1][2] == len(CHANNELS), charts
            assert charts[2][0] == "bar" and charts[2][2] >= 3, charts
            assert await page.locator("#recent tbody tr").count() == 8

            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(SCREENSHOT), full_page=True)

            # Live: a payment posted now shows on the open page without a reload.
            before = Decimal(kpis["received_today"]["value"])
            now = datetime.now(UTC)
            await publish(
                dashboard.bootstrap,
                Topic.PAYMENTS_EVENTS,
                [
                    posted(
                        "WU-39999",
                        "PAY-LIVE-1",
                        "1000.00",
                        now.astimezone(ZONE).date(),
                        issued_on=None,
                        posted_at=now,
                    )
                ],
            )
            after = str(before + Decimal("1000.00"))
            await page.wait_for_selector(f'#tile-received-today [data-value="{after}"]', timeout=120_000)
        finally:
            await browser.close()

    usage = [json.loads(r.value)["data"] for r in await read_topic(dashboard.bootstrap, Topic.ANALYTICS_EVENTS)]
    views = [u for u in usage if u["event"] == "dashboard_view"]
    assert views and views[0]["user_id"] == "bill.manager"


async def _stable(dashboard: Dashboard) -> bool:
    """The aggregates stopped moving: kpi's consumer groups have applied every event published so far."""
    lag = await consumer_lag(dashboard.bootstrap, group_prefix="paydesk.kpi.")
    return bool(lag) and all(row.lag == 0 for row in lag)


async def test_the_page_asks_for_a_token_and_refuses_staff_who_may_not_read_the_figures(dashboard: Dashboard) -> None:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await page.goto(dashboard.url)
            await page.wait_for_selector("#login:not([hidden])")
            assert await page.locator("#board").is_hidden()
            clerk = mint_token(SECRET, user="Jane Smith", roles=[Role.CUSTOMER_EXECUTIVE])
            await page.fill("#token", clerk)
            await page.click("#login button")
            await page.wait_for_selector("#login-error:has-text('requires role')")
            assert await page.locator("#board").is_hidden()
            await page.fill("#token", dashboard.manager)
            await page.click("#login button")
            await page.wait_for_selector("#board[data-loaded-period]")
        finally:
            await browser.close()
