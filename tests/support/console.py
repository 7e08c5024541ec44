"""The console's browser tests: the services running in-process on a fresh database and broker, Debian's headless
Chromium through Playwright, and the checks every screen gets (axe-core, no sideways scrolling, a screenshot)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from paydesk.embedded import free_port
from paydesk.sample_data import seed_sample
from services.collections.app import create_service as create_collections
from services.collections.settings import CollectionsSettings
from services.console.app import create_service as create_console
from services.console.settings import ConsoleSettings
from services.credit_notes.app import create_service as create_credit_notes
from services.credit_notes.settings import CreditNotesSettings
from services.gateway_bridge.app import create_service as create_gateway_bridge
from services.gateway_bridge.settings import GatewayBridgeSettings
from services.kpi.app import create_service as create_kpi
from services.kpi.settings import KpiSettings
from services.payments.app import create_service as create_payments
from services.payments.settings import PaymentsSettings
from services.receipts.app import create_service as create_receipts
from services.receipts.settings import ReceiptsSettings
from shared.auth import Role, mint_token
from shared.contracts import Topic
from shared.service import Service
from tests.support.helpers import eventually, own_broker_and_database, publish

SECRET = "console-browser-test-secret-long-enough-for-hs256"
ZONE = "America/Chicago"
# Screenshots of the last run. The tests rewrite them, so CI leaves them changed in its own clone only (nothing is
# committed from there); after a local run, `git checkout docs/console` undoes them unless the screens changed.
SHOTS = Path(__file__).parents[2] / "docs" / "console"
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
WIDE = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
# Generous: several services share a 2-core machine with other engineers' test runs.
WAIT_MS = 60_000


@dataclass
class Console:
    urls: dict[str, str]
    bootstrap: str
    services: dict[str, Service]
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.urls["console"]

    def token(self, role: Role, user: str = "Test User", account: str | None = None) -> str:
        return mint_token(SECRET, user=user, roles=[role], account_number=account)

    def headers(self, role: Role, user: str = "Test User", account: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(role, user, account)}"}

    async def api(self, service: str, path: str, role: Role = Role.BILLING_MANAGER) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.urls[service], timeout=30) as client:
            return await client.get(path, headers=self.headers(role))

    async def send(
        self, service: str, method: str, path: str, role: Role, body: Any = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.urls[service], timeout=30) as client:
            return await client.request(method, path, json=body, headers=self.headers(role) | (headers or {}))


async def _serve(service: Service, port: int) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    server = uvicorn.Server(uvicorn.Config(service.http, host="127.0.0.1", port=port, log_config=None))
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        if task.done():
            task.result()
        return bool(server.started)

    await eventually(started, within=120)
    return server, task


def _build(name: str, common: dict[str, Any], urls: dict[str, str], port: int, extra: dict[str, Any]) -> Service:
    own = common | {"http_port": port} | extra.get(name, {})
    if name == "payments":
        return create_payments(PaymentsSettings(**own))
    if name == "credit_notes":
        return create_credit_notes(CreditNotesSettings(**own, timezone=ZONE))
    if name == "receipts":
        return create_receipts(ReceiptsSettings(**own, timezone=ZONE))
    if name == "kpi":
        return create_kpi(KpiSettings(**own, time_zone=ZONE))
    if name == "collections":
        return create_collections(CollectionsSettings(**own, timezone=ZONE))
    if name == "gateway_bridge":
        return create_gateway_bridge(GatewayBridgeSettings(**own))
    if name == "console":
        return create_console(
            ConsoleSettings(
                **own,
                time_zone=ZONE,
                payments_url=urls["payments"],
                credit_notes_url=urls["credit_notes"],
                receipts_url=urls["receipts"],
                kpi_url=urls.get("kpi", "http://127.0.0.1:9"),
                collections_url=urls.get("collections", ""),
            )
        )
    raise ValueError(name)


@asynccontextmanager
async def running(
    database_url: str, workdir: Path, name: str, names: tuple[str, ...], extra: dict[str, dict[str, Any]]
) -> AsyncIterator[Console]:
    """`names` (and the console) serving HTTP on free ports over a fresh database and broker, with the seed's John
    Doe (WU-10001) known to payments."""
    names = (*names, "console")
    async with own_broker_and_database(database_url, workdir, name, names) as (url, bootstrap):
        ports = {n: free_port() for n in names}
        urls = {n: f"http://127.0.0.1:{port}" for n, port in ports.items()}
        common: dict[str, Any] = {
            "database_url": url,
            "kafka_bootstrap_servers": bootstrap,
            "jwt_secret": SECRET,
            "cors_origins": urls["console"],
        }
        services = {n: _build(n, common, urls, ports[n], extra) for n in names}
        served = [await _serve(services[n], ports[n]) for n in names]
        try:
            await publish(bootstrap, Topic.BILLING_RECEIVABLES, seed_sample())
            handle = Console(urls, bootstrap, services)

            async def john_doe_known() -> bool:
                response = await handle.api("payments", "/consumers/WU-10001", Role.CUSTOMER_EXECUTIVE)
                return response.status_code == 200 and len(response.json()["unpaid_bills"]) == 2

            await eventually(john_doe_known, within=120)
            yield handle
        finally:
            for server, _ in reversed(served):
                server.should_exit = True
            for _, task in reversed(served):
                await task


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def sign_in(
    browser: Browser, console: Console, user: str, viewport: dict[str, int] = WIDE
) -> tuple[BrowserContext, Page]:
    context = await browser.new_context(viewport=viewport, accept_downloads=True)  # type: ignore[arg-type]
    page = await context.new_page()
    await page.goto(console.url)
    await page.wait_for_selector("body[data-ready] #signin-page:not([hidden])")
    await page.fill("#username", user)
    await page.fill("#password", "paydesk")
    await page.click("#signin button[type=submit]")
    await page.wait_for_selector("#page-title", timeout=WAIT_MS)
    return context, page


async def _no_serious_accessibility_violations(page: Page, console: Console) -> None:
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        await page.add_script_tag(url=f"{console.url}/static/axe.min.js")
    result = await page.evaluate("axe.run(document, { resultTypes: ['violations'] })")
    serious = [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert not serious, json.dumps(serious, indent=1)


async def screen(page: Page, console: Console, name: str) -> None:
    """Every screen: no serious accessibility violation, no horizontal scrolling, and a screenshot."""
    await _no_serious_accessibility_violations(page, console)
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{name}: the page scrolls sideways by {overflow}px"
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def read(path: Path) -> bytes:
    return await asyncio.to_thread(path.read_bytes)


async def text_of(page: Page, selector: str) -> str:
    return (await page.locator(selector).inner_text(timeout=WAIT_MS)).strip()


async def until(check: Callable[[], Awaitable[Any]]) -> Any:
    return await eventually(check, within=120, interval=0.5)
