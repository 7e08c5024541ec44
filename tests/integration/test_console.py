"""The console in a real headless browser (Debian's chromium) against payments, credit_notes, receipts, kpi and the
console itself, all running on a fresh broker and database and fed through Kafka.

Saves a screenshot of each screen to docs/console/ so a person can see what the pages look like.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from playwright.async_api import Browser, BrowserContext, Page, Route, async_playwright

from paydesk.embedded import free_port
from paydesk.sample_data import seed_sample
from services.console.app import create_service as create_console
from services.console.settings import ConsoleSettings
from services.credit_notes.app import create_service as create_credit_notes
from services.credit_notes.settings import CreditNotesSettings
from services.kpi.app import create_service as create_kpi
from services.kpi.settings import KpiSettings
from services.payments.app import create_service as create_payments
from services.payments.settings import PaymentsSettings
from services.receipts.app import create_service as create_receipts
from services.receipts.settings import ReceiptsSettings
from shared.auth import Role, mint_token
from shared.contracts import Topic, new_envelope
from shared.contracts.events import GatewayPaymentStatusChanged, Money, PaymentType
from shared.service import Service
from tests.conftest import Infra
from tests.support.helpers import eventually, own_broker_and_database, publish, read_topic

pytestmark = pytest.mark.kafka
SECRET = "console-browser-test-secret-long-enough-for-hs256"
ZONE = "America/Chicago"
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
# Generous: five services share a 2-core machine with other engineers' test runs.
WAIT_MS = 60_000


@dataclass
class Console:
    urls: dict[str, str]
    bootstrap: str
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.urls["console"]

    def token(self, role: Role, user: str = "Test User") -> str:
        return mint_token(SECRET, user=user, roles=[role])

    async def api(self, service: str, path: str, role: Role = Role.BILLING_MANAGER) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.urls[service], timeout=30) as client:
            response = await client.get(path, headers={"Authorization": f"Bearer {self.token(role)}"})
        return response


async def _serve(service: Service, port: int) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    server = uvicorn.Server(uvicorn.Config(service.http, host="127.0.0.1", port=port, log_config=None))
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        if task.done():
            task.result()
        return bool(server.started)

    await eventually(started, within=120)
    return server, task


@pytest.fixture(scope="module")
async def console(infra: Infra) -> AsyncIterator[Console]:
    names = ("payments", "credit_notes", "receipts", "kpi", "console")
    async with own_broker_and_database(infra.database_url, infra.workdir, "console", names) as (url, bootstrap):
        ports = {name: free_port() for name in names}
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        common: dict[str, Any] = {
            "database_url": url,
            "kafka_bootstrap_servers": bootstrap,
            "jwt_secret": SECRET,
            "cors_origins": urls["console"],
        }
        services = [
            create_payments(PaymentsSettings(**common, http_port=ports["payments"])),
            create_credit_notes(CreditNotesSettings(**common, http_port=ports["credit_notes"], timezone=ZONE)),
            create_receipts(ReceiptsSettings(**common, http_port=ports["receipts"], timezone=ZONE)),
            create_kpi(KpiSettings(**common, http_port=ports["kpi"], time_zone=ZONE)),
            create_console(
                ConsoleSettings(
                    **common,
                    http_port=ports["console"],
                    time_zone=ZONE,
                    payments_url=urls["payments"],
                    credit_notes_url=urls["credit_notes"],
                    receipts_url=urls["receipts"],
                    kpi_url=urls["kpi"],
                )
            ),
        ]
        running = [await _serve(service, ports[name]) for service, name in zip(services, names, strict=True)]
        try:
            await publish(bootstrap, Topic.BILLING_RECEIVABLES, seed_sample())
            handle = Console(urls, bootstrap)

            async def john_doe_known() -> bool:
                response = await handle.api("payments", "/consumers/WU-10001", Role.CUSTOMER_EXECUTIVE)
                return response.status_code == 200 and len(response.json()["unpaid_bills"]) == 2

            await eventually(john_doe_known, within=120)
            yield handle
        finally:
            for server, _ in reversed(running):
                server.should_exit = True
            for _, task in reversed(running):
                await task


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def _sign_in(
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


async def _screen(page: Page, console: Console, name: str) -> None:
    """Every screen: no serious accessibility violation, no horizontal scrolling, and a screenshot."""
    await _no_serious_accessibility_violations(page, console)
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{name}: the page scrolls sideways by {overflow}px"
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def _read(path: Path) -> bytes:
    return await asyncio.to_thread(path.read_bytes)


async def _text(page: Page, selector: str) -> str:
    return (await page.locator(selector).inner_text(timeout=WAIT_MS)).strip()


async def _until(check: Callable[[], Awaitable[Any]]) -> Any:
    return await eventually(check, within=120, interval=0.5)


async def test_pages_hold_no_data_and_sign_in_keeps_the_token_out_of_urls(console: Console, browser: Browser) -> None:
    async with httpx.AsyncClient(base_url=console.url) as client:
        shell = (await client.get("/")).text
        config = (await client.get("/config.json")).json()
        wrong = await client.post("/session", json={"username": "jane", "password": "wrong"})
    assert "WU-10001" not in shell and "John" not in shell and "$" not in shell
    assert set(config) == {"services", "currency", "locale", "time_zone", "date_style", "page_size", "sign_in"}
    assert wrong.status_code == 401 and wrong.json()["code"] == "sign_in_failed"

    context = await browser.new_context(viewport=WIDE)  # type: ignore[arg-type]
    page = await context.new_page()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    await page.goto(f"{console.url}/#/payments")
    await page.wait_for_selector("body[data-ready] #signin-page:not([hidden])")
    assert await page.locator("#view").inner_html() == ""
    services = [u for u in console.urls.values() if u != console.url]
    assert not [r for r in requests if any(r.startswith(s) for s in services)], "no API call without a token"
    await _screen(page, console, "sign-in")

    await page.fill("#username", "jane")
    await page.fill("#password", "nope")
    await page.click("#signin button[type=submit]")
    await page.wait_for_selector("#signin-error:has-text('wrong')")
    await page.fill("#password", "paydesk")
    await page.click("#signin button[type=submit]")
    await page.wait_for_selector("#page-title:has-text('Customer service')", timeout=WAIT_MS)
    token = await page.evaluate("sessionStorage.getItem('paydesk.console.token')")
    assert token and token.count(".") == 2
    assert all(token not in r for r in requests), "the token never appears in a URL"
    assert "token" not in page.url
    labels = await page.locator("#nav a").all_inner_texts()
    assert labels == ["Customer service", "Payments", "Record payment"]
    # A page outside the role's navigation leads back home rather than to a 403.
    await page.goto(f"{console.url}/#/dashboard")
    await page.wait_for_selector("#page-title:has-text('Customer service')", timeout=WAIT_MS)
    await page.click("#signout")
    await page.wait_for_selector("#signin-page:not([hidden])")
    assert await page.evaluate("sessionStorage.getItem('paydesk.console.token')") is None
    await context.close()


async def test_a_customer_executive_records_a_cash_overpayment_and_sees_receipt_and_credit_note(
    console: Console, browser: Browser
) -> None:
    context, page = await _sign_in(browser, console, "jane")
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    await page.fill("#portal-search", "doe")
    await page.click("#portal-search-results button[data-account='WU-10001']", timeout=WAIT_MS)
    await page.wait_for_selector("#cs-balance", timeout=WAIT_MS)
    await _screen(page, console, "customer-service")

    await page.click("#cs-record")
    await page.wait_for_selector("#account-name:has-text('John Doe')", timeout=WAIT_MS)
    assert await page.locator("#channel").input_value() == "Walk-in"  # AC 3: the default channel
    channels = await page.locator("#channel option").all_inner_texts()
    settings = (await console.api("payments", "/settings/channels", Role.CUSTOMER_EXECUTIVE)).json()
    assert channels == settings["channels"]  # AC 3: every configured channel
    assert await page.locator("#open-items input[value='INV-2025-001234']").is_checked()
    assert await page.locator("#amount").input_value() == "145.50"
    await page.select_option("#method", "Cash")
    await page.fill("#amount", "150.00")
    await page.fill("#cash-received", "150.00")
    # AC 9: the summary shows amount, method and the extra paid.
    assert await _text(page, "#summary-amount") == "$150.00"
    assert await _text(page, "#summary-method") == "Cash"
    assert await _text(page, "#summary-extra") == "$4.50"
    await page.fill("#notes", "Customer paid in full")
    assert await _text(page, "#notes-counter") == "21 / 500 characters"
    assert await page.locator("#notes").get_attribute("maxlength") == "500"
    await _screen(page, console, "record-payment")

    # Mandatory fields are shown next to the field.
    await page.fill("#amount", "")
    await page.click("#review")
    assert "above zero" in await _text(page, "#amount-error")
    assert await page.locator("#amount").get_attribute("aria-invalid") == "true"
    await page.fill("#amount", "150.00")

    await page.click("#review")
    await page.wait_for_selector("#review-panel:not([hidden])")
    assert await _text(page, "#review-amount") == "$150.00"
    assert await _text(page, "#review-recorded-by") == "Jane Smith"
    await _screen(page, console, "review-and-confirm")

    await page.click("#confirm")
    await page.wait_for_selector("#receipt:not([hidden])", timeout=WAIT_MS)
    receipt = await _text(page, "#receipt-number")
    assert await _text(page, "#receipt-payment-status") == "Posted"
    assert "over" in (await _text(page, "#receipt-outcome")).lower()
    # AC 13: the receipt PDF shown at once (fetched with the token, shown from a blob: URL), printable, downloadable.
    await page.wait_for_selector("#receipt-pdf[data-loaded='application/pdf']", timeout=WAIT_MS)
    assert (await page.locator("#receipt-pdf").get_attribute("src") or "").startswith("blob:")
    async with page.expect_download(timeout=WAIT_MS) as download_info:
        await page.click("#download-receipt")
    download = await download_info.value
    assert download.suggested_filename == f"{receipt}.pdf"
    assert (await _read(await download.path())).startswith(b"%PDF")
    await _screen(page, console, "receipt")

    # The automatic credit note (4.50) appears in the Credit Notes tab.
    async def issued() -> bool:
        found = await console.api("credit_notes", f"/credit-notes?receipt_number={receipt}", Role.CUSTOMER_EXECUTIVE)
        return bool(found.json()["items"])

    await _until(issued)
    # AC 14: Record Another Payment starts a fresh form.
    await page.click("#record-another")
    await page.wait_for_selector("#record-form:not([hidden]) #consumer-search")
    assert await page.locator("#receipt").is_hidden()
    assert await page.locator("#consumer-search").input_value() == ""
    await page.click("#nav a[href='#/payments']")
    await page.wait_for_selector("#payments-table[data-loaded]", timeout=WAIT_MS)
    assert await page.locator(f"#payments-table tr[data-receipt='{receipt}']").count() == 1
    await page.fill("#payments-q", receipt)  # AC 31/32: server-side search
    await page.wait_for_function(
        "r => [...document.querySelectorAll('#payments-table tbody tr[data-receipt]')]"
        ".every(t => t.dataset.receipt === r)",
        arg=receipt,
        timeout=WAIT_MS,
    )
    await _screen(page, console, "payments")
    await page.click("#tab-credit-notes")
    row = page.locator(f"#credit-notes-table tr:has(a:text-is('{receipt}'))")
    await row.wait_for(timeout=WAIT_MS)
    cells = await row.locator("td").all_inner_texts()
    assert "$4.50" in cells[2] and "Overpayment" in cells[4] and "Active" in cells[5]
    await _screen(page, console, "credit-notes")
    console.state["receipt"] = receipt
    console.state["credit_note"] = (await row.locator("td").first.inner_text()).strip()

    # AC 15: Return to Dashboard leads a counter clerk to a page their role may see.
    await page.goto(f"{console.url}/#/record-payment")
    await page.wait_for_selector("#consumer-search")
    await page.evaluate("location.hash = '#/customer-service'")
    await page.wait_for_selector("#page-title:has-text('Customer service')")
    assert not [r for r in requests if "token=" in r or "paydesk.console" in r]
    await context.close()


async def test_return_to_dashboard_leads_each_role_home(console: Console, browser: Browser) -> None:
    for user, title in (("jane", "Customer service"), ("rick", "Collections"), ("admin", "Payment dashboard")):
        context, page = await _sign_in(browser, console, user)
        await page.wait_for_selector(f"#page-title:has-text('{title}')", timeout=WAIT_MS)
        if user != "rick":
            await page.goto(f"{console.url}/#/record-payment?account=WU-10001")
            await page.wait_for_selector("#account-name:has-text('John Doe')", timeout=WAIT_MS)
            await page.select_option("#method", "Credit Card")
            await page.fill("#amount", "1.00")
            await page.click("#review")
            await page.click("#confirm")
            await page.wait_for_selector("#return-dashboard", timeout=WAIT_MS)
            await page.click("#return-dashboard")
            await page.wait_for_selector(f"#page-title:has-text('{title}')", timeout=WAIT_MS)
        else:
            assert await page.locator("#collections-missing").is_visible()
            await _screen(page, console, "collections")
        await context.close()


def _online_payment(amount: str) -> Any:
    now = datetime.now(UTC)
    intent = f"pi_{uuid.uuid4().hex[:16]}"
    data = GatewayPaymentStatusChanged(
        gateway_event_id=f"evt_{uuid.uuid4().hex[:16]}",
        payment_intent_id=intent,
        account_number="WU-10001",
        payment_type=PaymentType.BILL,
        item_reference="INV-2025-001567",
        amount=Money(amount=Decimal(amount)),
        gateway_status="succeeded",
        webhook_status="In Settlement",
        settlement_status="In Progress",
        occurred_at=now,
        initiated_at=now,
    )
    return new_envelope("gateway.payment_status_changed", source="gateway_bridge", subject="WU-10001", data=data)


async def test_a_billing_manager_sees_kpi_tiles_move_verifies_and_issues_a_credit_note(
    console: Console, browser: Browser
) -> None:
    context, page = await _sign_in(browser, console, "bill")
    await page.wait_for_selector("#tiles[data-loaded]", timeout=WAIT_MS)
    labels = await page.locator("#nav a").all_inner_texts()
    assert labels == ["Dashboard", "Payments", "Reports", "Alerts", "Approvals"]
    before = await page.locator("#tile-received-today [data-value]").get_attribute("data-value") or "0"
    summary = (await console.api("kpi", "/kpi/summary")).json()["kpis"]
    assert Decimal(before) == Decimal(summary["received_today"]["value"] or "0")
    await _screen(page, console, "dashboard")

    await publish(console.bootstrap, Topic.GATEWAY_EVENTS, [_online_payment("152.25")])
    expected = Decimal(before) + Decimal("152.25")
    await page.wait_for_function(
        "v => Number(document.querySelector('#tile-received-today [data-value]')?.dataset.value) >= v",
        arg=float(expected),
        timeout=WAIT_MS * 2,
    )
    assert int(await page.locator("#minis").get_attribute("data-pending") or "0") >= 1

    async def online() -> Any:
        listed = (await console.api("payments", "/payments?q=WU-10001&limit=50")).json()["payments"]
        return next((p for p in listed if p["method"] == "Credit Card" and p["amount"]["amount"] == "152.25"), None)

    payment = await _until(online)
    await page.click("#nav a[href='#/payments']")
    await page.wait_for_selector(f"#payments-table tr[data-receipt='{payment['receipt_number']}']", timeout=WAIT_MS)
    await page.click(f"#payments-table tr[data-receipt='{payment['receipt_number']}'] .menu-button")
    items = await page.locator(
        f"#payments-table tr[data-receipt='{payment['receipt_number']}'] [role=menuitem]"
    ).all_inner_texts()
    assert items == ["View details", "View receipt", "Create credit note"]  # the three-dot actions
    await page.keyboard.press("Enter")  # keyboard: the first item, View details
    await page.wait_for_selector("#verify", timeout=WAIT_MS)
    assert await _text(page, "#detail-verification") == "Pending"
    await _screen(page, console, "payment-details-pending")
    await page.click("#verify")
    await page.wait_for_selector("#detail-verification:has-text('Verified')", timeout=WAIT_MS)

    receipt = console.state.get("receipt")
    assert receipt, "runs after the counter test, which records the cash overpayment"
    await page.goto(f"{console.url}/#/payments/{receipt}")
    await page.wait_for_selector("#payment-details", timeout=WAIT_MS)
    await page.wait_for_selector("#s-cash")
    await _screen(page, console, "payment-details")
    await page.click("#create-credit-note")
    await page.wait_for_selector("#credit-note-dialog[open]", timeout=WAIT_MS)
    # The seed's hint: 150.00 paid, 4.50 already credited automatically.
    assert await _text(page, "#cn-amount-hint") == "Maximum: $145.50"
    assert await page.locator("#cn-create").is_disabled()  # no reason chosen yet
    await page.fill("#cn-amount", "200.00")
    assert "At most" in await _text(page, "#cn-amount-error")
    await page.fill("#cn-amount", "10.00")
    await page.select_option("#cn-reason-select", "Billing Error")
    await page.fill("#cn-remarks", "Meter read twice")
    assert await _text(page, "#cn-remarks-counter") == "16 / 500 characters"
    assert await _text(page, "#cn-summary-remaining") == "$140.00"
    assert await page.locator("#cn-create").is_enabled()
    await _screen(page, console, "create-credit-note")
    await page.click("#cn-create")
    await page.wait_for_selector("#credit-note-details", timeout=WAIT_MS)
    assert await _text(page, "#cn-original") == "$10.00"
    assert await _text(page, "#cn-linked") == receipt
    number = (await _text(page, "#page-title")).removeprefix("Credit Note ")

    async def rendered() -> bool:
        return (await console.api("receipts", f"/credit-notes/{number}.pdf")).status_code == 200

    await _until(rendered)
    await _screen(page, console, "credit-note-details")
    async with page.expect_download(timeout=WAIT_MS) as download_info:
        await page.click("#cn-download")
    assert (await _read(await (await download_info.value).path())).startswith(b"%PDF")

    # The credit notes tab's three-dot menu: view details, print, view, download.
    await page.goto(f"{console.url}/#/credit-notes")
    row = page.locator(f"#credit-notes-table tr[data-credit-note='{number}']")
    await row.wait_for(timeout=WAIT_MS)
    await row.locator(".menu-button").click()
    assert await row.locator("[role=menuitem]").all_inner_texts() == [
        "View details",
        "Print credit note",
        "View credit note",
        "Download",
    ]
    await row.locator("[role=menuitem]:text-is('View credit note')").click()
    await page.wait_for_selector(".doc-dialog[open] iframe[data-blob='pdf']", timeout=WAIT_MS)
    await page.keyboard.press("Escape")

    for route, name in (("#/reports", "reports"), ("#/alerts", "alerts"), ("#/approvals", "approvals")):
        await page.goto(f"{console.url}/{route}")
        await page.wait_for_selector("#page-title", timeout=WAIT_MS)
        await page.wait_for_load_state("networkidle")
        await _screen(page, console, name)
    await context.close()

    usage = [json.loads(r.value)["data"] for r in await read_topic(console.bootstrap, Topic.ANALYTICS_EVENTS)]
    assert any(u["event"] == "dashboard_view" for u in usage)


async def test_counter_pages_work_at_phone_width(console: Console, browser: Browser) -> None:
    context, page = await _sign_in(browser, console, "jane", PHONE)
    await page.goto(f"{console.url}/#/record-payment?account=WU-10001")
    await page.wait_for_selector("#account-name:has-text('John Doe')", timeout=WAIT_MS)
    await _screen(page, console, "record-payment-phone")
    await page.goto(f"{console.url}/#/payments")
    await page.wait_for_selector("#payments-table[data-loaded]", timeout=WAIT_MS)
    await _screen(page, console, "payments-phone")
    await context.close()


# --- customer self-service: the pages against the endpoints the services must add (README), stubbed here ---


def _self_service_stub(account: str, seen: list[tuple[str, str | None]]) -> Callable[[Route], Awaitable[None]]:
    """The specified customer endpoints, answering only for `account` (404 for any other, as the kit's
    `require_account` does), so the pages are exercised against the contract until the services serve it."""
    intent_polls = {"n": 0}

    async def handle(route: Route) -> None:
        request = route.request
        seen.append((request.url, request.headers.get("authorization")))
        if request.method == "OPTIONS":
            await route.fulfill(status=204, headers=_cors())
            return
        path = request.url.split("/", 3)[3].split("?")[0]
        parts = path.split("/")
        if len(parts) < 2 or parts[0] != "accounts" or parts[1] != account:
            await route.fulfill(status=404, json={"code": "not_found", "detail": "no such account"}, headers=_cors())
            return
        rest = "/".join(parts[2:])
        if rest == "":
            body: Any = {
                "name": "John Doe",
                "account_number": account,
                "service_address": "123 Main Street, Cityville",
                "current_balance": usd("245.75"),
                "open_items": [
                    {
                        "payment_type": "bill",
                        "item_reference": "INV-2025-001567",
                        "description": "Apr 2025",
                        "due_date": "2025-05-15",
                        "outstanding": usd("152.25"),
                    }
                ],
            }
        elif rest == "payments":
            body = {
                "payments": [
                    {
                        "receipt_number": "R-5001",
                        "date": "2025-04-20",
                        "amount": usd("150.00"),
                        "method": "Cash",
                        "item_reference": "INV-2025-001234",
                        "status": "Posted",
                        "settlement_status": None,
                    }
                ],
                "next_cursor": None,
            }
        elif rest == "credit-notes":
            body = {
                "items": [
                    {
                        "credit_note_number": "CN-46129",
                        "amount": "4.50",
                        "remaining": "4.50",
                        "currency": "USD",
                        "status": "Active",
                        "expires_at": "2026-04-20T15:00:00+00:00",
                    }
                ]
            }
        elif rest == "receipts/R-5001.pdf":
            await route.fulfill(status=200, body=b"%PDF-1.7 stub", content_type="application/pdf", headers=_cors())
            return
        elif rest == "payment-intents" and request.method == "POST":
            body = {"payment_intent_id": "pi_stub", "client_secret": "pi_stub_secret", "status": "Pending"}
        elif rest == "payment-intents/pi_stub":
            intent_polls["n"] += 1
            posted = intent_polls["n"] >= 2
            body = {"payment_intent_id": "pi_stub", "status": "Posted" if posted else "Pending"}
            if posted:
                body["receipt_number"] = "R-5002"
        else:
            await route.fulfill(status=404, json={"code": "not_found"}, headers=_cors())
            return
        await route.fulfill(status=200, json=body, headers=_cors())

    return handle


def usd(amount: str) -> dict[str, str]:
    return {"amount": amount, "currency": "USD"}


def _cors() -> dict[str, str]:
    return {
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Allow-Headers": "Authorization, Content-Type, Idempotency-Key",
        "Access-Control-Allow-Methods": "GET, POST",
    }


async def test_a_customer_sees_their_account_downloads_a_receipt_and_pays_online(
    console: Console, browser: Browser
) -> None:
    context = await browser.new_context(viewport=PHONE, accept_downloads=True)  # type: ignore[arg-type]
    seen: list[tuple[str, str | None]] = []
    stub = _self_service_stub("WU-10001", seen)
    for service in ("payments", "credit_notes", "receipts"):
        await context.route(f"{console.urls[service]}/accounts/**", stub)
    page = await context.new_page()
    await page.goto(console.url)
    await page.wait_for_selector("body[data-ready] #signin-page:not([hidden])")
    await page.fill("#username", "john")
    await page.fill("#password", "paydesk")
    await page.click("#signin button[type=submit]")
    await page.wait_for_selector("#my-balance", timeout=WAIT_MS)
    assert await page.locator("#nav a").all_inner_texts() == ["My account"]
    assert await _text(page, "#my-balance") == "$245.75"
    await page.wait_for_selector("#my-payments-table tr[data-receipt='R-5001']")
    await page.wait_for_selector("#my-credit-notes li:has-text('CN-46129')")
    async with page.expect_download(timeout=WAIT_MS) as download_info:
        await page.click("#my-payments-table tr[data-receipt='R-5001'] button.download")
    assert (await download_info.value).suggested_filename == "R-5001.pdf"
    await _screen(page, console, "self-service")
    await page.click("#my-open-items button[data-item='INV-2025-001567']")
    await page.wait_for_selector("#pay-status[data-status='Posted']", timeout=WAIT_MS)
    await _screen(page, console, "self-service-paid")
    # Staff pages are not the customer's: back home, no staff API called.
    await page.goto(f"{console.url}/#/payments")
    await page.wait_for_selector("#my-balance", timeout=WAIT_MS)
    token = await page.evaluate("sessionStorage.getItem('paydesk.console.token')")
    assert seen and all(auth == f"Bearer {token}" for _, auth in seen if auth is not None)
    assert all("/accounts/WU-10001" in url and token not in url for url, _ in seen)
    # The real services refuse a customer token on staff routes; the account-scoped ones answer 404 elsewhere.
    customer = mint_token(SECRET, user="John Doe", roles=[Role.CUSTOMER], account_number="WU-10001")
    async with httpx.AsyncClient(base_url=console.urls["payments"]) as client:
        staff_route = await client.get("/payments", headers={"Authorization": f"Bearer {customer}"})
    assert staff_route.status_code == 403
    await context.close()
