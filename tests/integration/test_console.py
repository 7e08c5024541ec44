"""The staff console in a real headless browser (Debian's chromium) against payments, credit_notes, receipts, kpi and
the console itself, all running on a fresh broker and database and fed through Kafka.

Saves a screenshot of each screen to docs/console/ so a person can see what the pages look like. The customer's
pages are in test_console_self_service.py.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser

from shared.auth import Role
from shared.contracts import Topic, new_envelope
from shared.contracts.events import GatewayPaymentStatusChanged, Money, PaymentType
from tests.conftest import Infra
from tests.support.console import (
    PHONE,
    WAIT_MS,
    WIDE,
    Console,
    chromium,
    read,
    running,
    screen,
    sign_in,
    text_of,
    until,
)
from tests.support.helpers import publish, read_topic

pytestmark = pytest.mark.kafka
# Manual credit notes above this wait for a billing manager (the default, 500.00, is more than the seed's bills).
APPROVAL_LIMIT = "20.00"


@pytest.fixture(scope="module")
async def console(infra: Infra) -> AsyncIterator[Console]:
    names = ("payments", "credit_notes", "receipts", "kpi")
    async with running(infra.database_url, infra.workdir, "console", names, {}) as handle:
        policy = (await handle.api("credit_notes", "/settings/credit-notes", Role.ADMIN)).json()
        changed = await handle.send(
            "credit_notes", "PUT", "/settings/credit-notes", Role.ADMIN, policy | {"approval_limit": APPROVAL_LIMIT}
        )
        assert changed.status_code == 200, changed.text
        yield handle


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


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
    await screen(page, console, "sign-in")

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
    context, page = await sign_in(browser, console, "jane")
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    await page.fill("#portal-search", "doe")
    await page.click("#portal-search-results button[data-account='WU-10001']", timeout=WAIT_MS)
    await page.wait_for_selector("#cs-balance", timeout=WAIT_MS)
    await screen(page, console, "customer-service")
    # The inquiry that brought the customer in, closed at the portal (payment_inquiry_resolved).
    await page.select_option("#inquiry-type", "payment_status")
    await page.click("#inquiry-resolved")
    await page.wait_for_selector("#inquiry-status[data-sent]", timeout=WAIT_MS)

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
    assert await text_of(page, "#summary-amount") == "$150.00"
    assert await text_of(page, "#summary-method") == "Cash"
    assert await text_of(page, "#summary-extra") == "$4.50"
    await page.fill("#notes", "Customer paid in full")
    assert await text_of(page, "#notes-counter") == "21 / 500 characters"
    assert await page.locator("#notes").get_attribute("maxlength") == "500"
    await screen(page, console, "record-payment")

    # Mandatory fields are shown next to the field.
    await page.fill("#amount", "")
    await page.click("#review")
    assert "above zero" in await text_of(page, "#amount-error")
    assert await page.locator("#amount").get_attribute("aria-invalid") == "true"
    # What payments itself refuses (its preview) is shown next to the field too, and nothing is reviewed.
    await page.fill("#amount", "5000.00")
    await page.fill("#cash-received", "5000.00")
    await page.click("#review")
    await page.wait_for_selector("#amount[aria-invalid='true']", timeout=WAIT_MS)
    assert await text_of(page, "#amount-error") and await page.locator("#review-panel").is_hidden()
    await page.fill("#amount", "150.00")
    await page.fill("#cash-received", "150.00")

    await page.click("#review")
    await page.wait_for_selector("#review-panel:not([hidden])", timeout=WAIT_MS)
    assert await text_of(page, "#review-amount") == "$150.00"
    # AC 9 from payments' preview: due, the extra that becomes a credit note, and the change.
    assert await text_of(page, "#review-due") == "$145.50"
    assert await text_of(page, "#review-extra") == "$4.50"
    assert await text_of(page, "#review-change") == "$0.00"
    assert await text_of(page, "#review-recorded-by") == "Jane Smith"
    await screen(page, console, "review-and-confirm")

    await page.click("#confirm")
    await page.wait_for_selector("#receipt:not([hidden])", timeout=WAIT_MS)
    receipt = await text_of(page, "#receipt-number")
    assert await text_of(page, "#receipt-payment-status") == "Posted"
    assert "over" in (await text_of(page, "#receipt-outcome")).lower()
    # AC 13: the receipt PDF shown at once (fetched with the token, shown from a blob: URL), printable, downloadable.
    await page.wait_for_selector("#receipt-pdf[data-loaded='application/pdf']", timeout=WAIT_MS)
    assert (await page.locator("#receipt-pdf").get_attribute("src") or "").startswith("blob:")
    async with page.expect_download(timeout=WAIT_MS) as download_info:
        await page.click("#download-receipt")
    download = await download_info.value
    assert download.suggested_filename == f"{receipt}.pdf"
    assert (await read(await download.path())).startswith(b"%PDF")
    await screen(page, console, "receipt")

    # The automatic credit note (4.50) appears in the Credit Notes tab.
    async def issued() -> bool:
        found = await console.api("credit_notes", f"/credit-notes?receipt_number={receipt}", Role.CUSTOMER_EXECUTIVE)
        return bool(found.json()["items"])

    await until(issued)
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
    await screen(page, console, "payments")
    # AC 35: the receipt number opens the payment's details.
    await page.click(f"#payments-table tr[data-receipt='{receipt}'] a:text-is('{receipt}')")
    await page.wait_for_selector("#payment-details", timeout=WAIT_MS)
    assert page.url.endswith(f"#/payments/{receipt}")
    await page.click("#nav a[href='#/payments']")
    await page.wait_for_selector("#payments-table[data-loaded]", timeout=WAIT_MS)
    await page.click("#tab-credit-notes")
    row = page.locator(f"#credit-notes-table tr:has(a:text-is('{receipt}'))")
    await row.wait_for(timeout=WAIT_MS)
    cells = await row.locator("td").all_inner_texts()
    assert "$4.50" in cells[2] and "Overpayment" in cells[4] and "Active" in cells[5]
    await screen(page, console, "credit-notes")
    console.state["receipt"] = receipt
    console.state["credit_note"] = (await row.locator("td").first.inner_text()).strip()

    # AC 15: Return to Dashboard leads a counter clerk to a page their role may see.
    await page.goto(f"{console.url}/#/record-payment")
    await page.wait_for_selector("#consumer-search")
    await page.evaluate("location.hash = '#/customer-service'")
    await page.wait_for_selector("#page-title:has-text('Customer service')")
    assert not [r for r in requests if "token=" in r or "paydesk.console" in r]
    await context.close()

    # What only the browser measured reached kpi's usage tracking: the customer's wait and the inquiry.
    processed = await until(lambda: _tracked("jane.smith", "payment_processed", console))
    assert int(processed["customer_wait_time"]) >= 0 and processed["receipt_generated"] == "true"
    assert processed["method"] == "Cash" and processed["amount"] == "150.00"
    resolved = await until(lambda: _tracked("jane.smith", "payment_inquiry_resolved", console))
    assert resolved["inquiry_type"] == "payment_status" and int(resolved["resolution_time"]) >= 0


async def _tracked(user_id: str, event: str, console: Console) -> dict[str, str] | None:
    """The properties of the last `event` tracked for `user_id` on analytics.events.v1, if any."""
    usage = [json.loads(r.value)["data"] for r in await read_topic(console.bootstrap, Topic.ANALYTICS_EVENTS)]
    found = [u["properties"] for u in usage if u["event"] == event and u["user_id"] == user_id]
    return found[-1] if found else None


async def test_return_to_dashboard_leads_each_role_home(console: Console, browser: Browser) -> None:
    for user, title in (("jane", "Customer service"), ("rick", "Collections"), ("admin", "Payment dashboard")):
        context, page = await sign_in(browser, console, user)
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
            await screen(page, console, "collections")
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
    context, page = await sign_in(browser, console, "bill")
    await page.wait_for_selector("#tiles[data-loaded]", timeout=WAIT_MS)
    labels = await page.locator("#nav a").all_inner_texts()
    assert labels == ["Dashboard", "Payments", "Reports", "Alerts", "Approvals"]
    before = await page.locator("#tile-received-today [data-value]").get_attribute("data-value") or "0"
    summary = (await console.api("kpi", "/kpi/summary")).json()["kpis"]
    assert Decimal(before) == Decimal(summary["received_today"]["value"] or "0")
    await screen(page, console, "dashboard")

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

    payment = await until(online)
    await page.click("#nav a[href='#/payments']")
    await page.wait_for_selector(f"#payments-table tr[data-receipt='{payment['receipt_number']}']", timeout=WAIT_MS)
    await page.click(f"#payments-table tr[data-receipt='{payment['receipt_number']}'] .menu-button")
    items = await page.locator(
        f"#payments-table tr[data-receipt='{payment['receipt_number']}'] [role=menuitem]"
    ).all_inner_texts()
    assert items == ["View details", "View receipt", "Create credit note"]  # the three-dot actions
    await page.keyboard.press("Enter")  # keyboard: the first item, View details
    await page.wait_for_selector("#verify", timeout=WAIT_MS)
    assert await text_of(page, "#detail-verification") == "Pending"
    await screen(page, console, "payment-details-pending")
    await page.click("#verify")
    await page.wait_for_selector("#detail-verification:has-text('Verified')", timeout=WAIT_MS)

    receipt = console.state.get("receipt")
    assert receipt, "runs after the counter test, which records the cash overpayment"
    await page.goto(f"{console.url}/#/payments/{receipt}")
    await page.wait_for_selector("#payment-details", timeout=WAIT_MS)
    await page.wait_for_selector("#s-cash")
    await screen(page, console, "payment-details")
    await page.click("#create-credit-note")
    await page.wait_for_selector("#credit-note-dialog[open]", timeout=WAIT_MS)
    # The seed's hint: 150.00 paid, 4.50 already credited automatically.
    assert await text_of(page, "#cn-amount-hint") == "Maximum: $145.50"
    assert await page.locator("#cn-create").is_disabled()  # no reason chosen yet
    await page.fill("#cn-amount", "200.00")
    assert "At most" in await text_of(page, "#cn-amount-error")
    await page.fill("#cn-amount", "10.00")
    await page.select_option("#cn-reason-select", "Billing Error")
    await page.fill("#cn-remarks", "Meter read twice")
    assert await text_of(page, "#cn-remarks-counter") == "16 / 500 characters"
    assert await text_of(page, "#cn-summary-remaining") == "$140.00"
    assert await page.locator("#cn-create").is_enabled()
    await screen(page, console, "create-credit-note")
    await page.click("#cn-create")
    await page.wait_for_selector("#credit-note-details", timeout=WAIT_MS)
    assert await text_of(page, "#cn-original") == "$10.00"
    assert await text_of(page, "#cn-linked") == receipt
    number = (await text_of(page, "#page-title")).removeprefix("Credit Note ")

    async def rendered() -> bool:
        return (await console.api("receipts", f"/credit-notes/{number}.pdf")).status_code == 200

    await until(rendered)
    await screen(page, console, "credit-note-details")
    async with page.expect_download(timeout=WAIT_MS) as download_info:
        await page.click("#cn-download")
    assert (await read(await (await download_info.value).path())).startswith(b"%PDF")

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

    for route, name, shown in (
        ("#/reports", "reports", "#export-payments"),
        ("#/alerts", "alerts", "#alerts-table tbody[data-loaded]"),
    ):
        await page.goto(f"{console.url}/{route}")
        await page.wait_for_selector(shown, timeout=WAIT_MS)
        await screen(page, console, name)
    await context.close()

    # dashboard_view, sent when the dashboard was left, with how long it was open and what was used; and the
    # payment opened from the list (payment_history_viewed).
    viewed = await until(lambda: _tracked("bill.manager", "dashboard_view", console))
    assert int(viewed["view_duration"]) >= 0 and "tiles" in viewed["widgets_accessed"]
    history = await until(lambda: _tracked("bill.manager", "payment_history_viewed", console))
    assert history["follow_up_action"] == "view_details" and history["details_accessed"] == payment["receipt_number"]


async def test_counter_pages_work_at_phone_width(console: Console, browser: Browser) -> None:
    context, page = await sign_in(browser, console, "jane", PHONE)
    await page.goto(f"{console.url}/#/record-payment?account=WU-10001")
    await page.wait_for_selector("#account-name:has-text('John Doe')", timeout=WAIT_MS)
    await screen(page, console, "record-payment-phone")
    await page.goto(f"{console.url}/#/payments")
    await page.wait_for_selector("#payments-table[data-loaded]", timeout=WAIT_MS)
    await screen(page, console, "payments-phone")
    await context.close()


async def _pay(console: Console, item_type: str, item: str, amount: str) -> tuple[str, str]:
    """A cash payment for John Doe at the counter: (receipt number, payment id)."""
    body = {
        "account_number": "WU-10001",
        "payment_type": item_type,
        "item_reference": item,
        "channel": "Walk-in",
        "method": "Cash",
        "amount": amount,
        "cash_received": amount,
        "payment_date": datetime.now(UTC).date().isoformat(),
    }
    key = {"Idempotency-Key": f"console-{uuid.uuid4()}"}
    paid = await console.send("payments", "POST", "/payments", Role.CUSTOMER_EXECUTIVE, body, key)
    assert paid.status_code == 201, paid.text
    return str(paid.json()["receipt_number"]), str(paid.json()["payment_id"])


async def test_a_billing_manager_approves_a_credit_note_and_an_adjustment_from_one_list_and_sees_the_kpis_move(
    console: Console, browser: Browser
) -> None:
    # A manual credit note above the approval limit (credit_notes) and a move above the adjustment limit
    # (payments), both asked for by a customer executive: two services, one Approvals page.
    cash, _ = await _pay(console, "service", "SC-2025-0001", "75.00")

    async def credit_notes_know_it() -> bool:
        found = await console.api("credit_notes", f"/credit-notes/payments/{cash}", Role.CUSTOMER_EXECUTIVE)
        return found.status_code == 200

    await until(credit_notes_know_it)
    key = {"Idempotency-Key": f"console-{uuid.uuid4()}"}
    request = {"receipt_number": cash, "amount": "30.00", "reason": "Billing Error", "remarks": "Charged twice"}
    asked = await console.send("credit_notes", "POST", "/credit-notes", Role.CUSTOMER_EXECUTIVE, request, key)
    assert asked.status_code == 201 and asked.json()["status"] == "Pending approval", asked.text
    credit_note = asked.json()["credit_note_number"]

    limit = await console.send(
        "payments", "PUT", "/settings/adjustment-approval-limit", Role.ADMIN, {"amount": "10.00"}
    )
    assert limit.status_code == 200, limit.text
    _, moved = await _pay(console, "installment", "PP-2025-0034/1", "25.00")
    move = {"kind": "move", "reason": "Meant for the next installment", "payment_type": "installment"}
    adjustment = await console.send(
        "payments",
        "POST",
        f"/payments/{moved}/adjustments",
        Role.CUSTOMER_EXECUTIVE,
        move | {"item_reference": "PP-2025-0034/2"},
        {"Idempotency-Key": f"console-{uuid.uuid4()}"},
    )
    assert adjustment.status_code == 202, adjustment.text

    context, page = await sign_in(browser, console, "bill")
    await page.wait_for_selector("#tiles[data-loaded]", timeout=WAIT_MS)
    issued_before = int(await page.locator("#minis").get_attribute("data-credit-notes") or "0")
    await page.click("#nav a[href='#/approvals']")
    credit_row = page.locator(f"#approvals-table tr[data-service='credit_notes'][data-subject='{credit_note}']")
    await credit_row.wait_for(timeout=WAIT_MS)
    adjustment_row = page.locator(f"#approvals-table tr[data-service='payments'][data-subject='{moved}']")
    await adjustment_row.wait_for(timeout=WAIT_MS)
    cells = await credit_row.locator("td").all_inner_texts()
    assert cells[0] == "Credit note" and cells[3] == "$30.00" and "Billing Error" in cells[4]
    assert "Payment adjustment" in await adjustment_row.locator("td").first.inner_text()
    await screen(page, console, "approvals")

    await credit_row.locator("button.approve").click()
    await credit_row.wait_for(state="detached", timeout=WAIT_MS)
    await adjustment_row.locator("button.approve").click()
    await adjustment_row.wait_for(state="detached", timeout=WAIT_MS)
    # Each was decided by its own service, as the billing manager.
    note = (await console.api("credit_notes", f"/credit-notes/{credit_note}")).json()
    assert note["status"] == "Active"
    payment = (await console.api("payments", f"/payments/{moved}")).json()
    assert [a["status"] for a in payment["adjustments"]] == ["Applied"], payment["adjustments"]

    # The approved credit note is announced, and kpi counts it: the dashboard shows one more credit note issued.
    await page.click("#nav a[href='#/dashboard']")
    await page.wait_for_function(
        "n => Number(document.querySelector('#minis')?.dataset.creditNotes) > n", arg=issued_before, timeout=WAIT_MS * 2
    )
    await screen(page, console, "dashboard-after-approval")
    await context.close()
