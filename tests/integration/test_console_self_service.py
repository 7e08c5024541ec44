"""The customer's self-service pages in a real headless browser against the real services: payments, credit_notes,
receipts, collections and gateway_bridge with a local Stripe-compatible API, on a fresh broker and database.

Also the rule behind them, over every customer endpoint the services serve: a customer token reads its own
account and answers 404 for any other, exactly as for an account that does not exist.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser
from pydantic import SecretStr

from shared.auth import Role
from tests.conftest import Infra
from tests.support import stripe_fake
from tests.support.console import PHONE, WAIT_MS, Console, chromium, read, running, screen, text_of, until
from tests.support.stripe_fake import API_KEY, FakeStripeApi, serving

pytestmark = pytest.mark.kafka
ACCOUNT = "WU-10001"
# The staff roles and the customer: what an account route admits (see shared.auth.require_account).
CUSTOMER_SCOPE = "customer"


class Harness:
    def __init__(self, console: Console, stripe: FakeStripeApi, receipt: str, arrangement: dict[str, Any]) -> None:
        self.console = console
        self.stripe = stripe
        self.receipt = receipt
        self.arrangement = arrangement


@pytest.fixture(scope="module")
async def harness(infra: Infra) -> AsyncIterator[Harness]:
    fake = FakeStripeApi()
    async with serving(fake.app()) as stripe_base:
        stripe = {"stripe_api_base": stripe_base, "stripe_api_key": SecretStr(API_KEY)}
        extra: dict[str, dict[str, Any]] = {
            "payments": stripe,
            "gateway_bridge": stripe | {"stripe_webhook_secret": SecretStr(stripe_fake.SECRET)},
        }
        names = ("payments", "credit_notes", "receipts", "collections", "gateway_bridge")
        async with running(infra.database_url, infra.workdir, "selfservice", names, extra) as console:
            receipt = await _cash_overpayment(console)
            arrangement = await _arrangement_for_the_late_fee(console)
            yield Harness(console, fake, receipt, arrangement)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


async def _cash_overpayment(console: Console) -> str:
    """150.00 in cash for the 145.50 March bill at the counter: a receipt, and 4.50 of automatic credit."""
    body = {
        "account_number": ACCOUNT,
        "payment_type": "bill",
        "item_reference": "INV-2025-001234",
        "channel": "Walk-in",
        "method": "Cash",
        "amount": "150.00",
        "cash_received": "150.00",
        "payment_date": datetime.now(UTC).date().isoformat(),
    }
    key = {"Idempotency-Key": f"self-{uuid.uuid4()}"}
    paid = await console.send("payments", "POST", "/payments", Role.CUSTOMER_EXECUTIVE, body, key)
    assert paid.status_code == 201, paid.text
    receipt = str(paid.json()["receipt_number"])

    async def documented_and_credited() -> bool:
        pdf = await console.api("receipts", f"/receipts/{receipt}.pdf", Role.CUSTOMER_EXECUTIVE)
        notes = await console.api("credit_notes", f"/credit-notes?receipt_number={receipt}", Role.CUSTOMER_EXECUTIVE)
        return pdf.status_code == 200 and bool(notes.json()["items"])

    await until(documented_and_credited)
    return receipt


async def _arrangement_for_the_late_fee(console: Console) -> dict[str, Any]:
    """A recovery executive spreads the overdue late fee (25.00) over two monthly installments."""

    async def known() -> bool:
        found = await console.api("collections", f"/collections/accounts/{ACCOUNT}", Role.RECOVERY_EXECUTIVE)
        return found.status_code == 200 and any(i["item_reference"] == "SC-2025-0002" for i in found.json()["items"])

    await until(known)
    first_due = date.today() + timedelta(days=10)
    terms = {
        "account_number": ACCOUNT,
        "installments": 2,
        "frequency": "monthly",
        "first_due_date": first_due.isoformat(),
        "items": ["SC-2025-0002"],
    }
    key = {"Idempotency-Key": f"self-{uuid.uuid4()}"}
    made = await console.send("collections", "POST", "/arrangements", Role.RECOVERY_EXECUTIVE, terms, key)
    assert made.status_code == 201, made.text
    return dict(made.json())


def _customer_routes(console: Console) -> list[tuple[str, str, str]]:
    """(service, method, path) of every operation, in every running service, that admits a customer token and
    is about one account."""
    found = []
    for name, service in console.services.items():
        for path, operations in service.http.openapi()["paths"].items():
            for method, operation in operations.items():
                scopes = {s for requirement in operation.get("security", []) for s in next(iter(requirement.values()))}
                if CUSTOMER_SCOPE in scopes and "{account_number}" in path:
                    found.append((name, method.upper(), path))
                elif CUSTOMER_SCOPE in scopes:
                    # Anything else a customer may call must hold no account's data: the console's own session.
                    assert (name, path) == ("console", "/session"), (name, method, path)
    return sorted(found)


async def test_a_customer_token_never_reads_another_account_on_any_customer_endpoint(harness: Harness) -> None:
    """INVARIANT: a customer token answers 404 for any account but its own, on every route that admits customers,
    whether that account exists (John Doe's, with payments, credit notes, receipts and an arrangement) or not."""
    console = harness.console
    routes = _customer_routes(console)
    assert [(s, m, p) for s, m, p in routes] == [
        ("collections", "GET", "/accounts/{account_number}/arrangement"),
        ("credit_notes", "GET", "/accounts/{account_number}/credit-notes"),
        ("payments", "GET", "/accounts/{account_number}"),
        ("payments", "GET", "/accounts/{account_number}/payment-intents/{payment_intent_id}"),
        ("payments", "GET", "/accounts/{account_number}/payments"),
        ("payments", "POST", "/accounts/{account_number}/payment-intents"),
        ("receipts", "GET", "/accounts/{account_number}/receipts"),
        ("receipts", "GET", "/accounts/{account_number}/receipts/{receipt_number}.pdf"),
    ], "a new customer route: add it here, and make sure it is scoped with require_account"
    intent = await console.send(
        "payments",
        "POST",
        f"/accounts/{ACCOUNT}/payment-intents",
        Role.CUSTOMER_EXECUTIVE,
        {"payment_type": "bill", "item_reference": "INV-2025-001567"},
        {"Idempotency-Key": f"self-{uuid.uuid4()}"},
    )
    assert intent.status_code == 201, intent.text
    values = {"receipt_number": harness.receipt, "payment_intent_id": intent.json()["payment_intent_id"]}
    body = {"payment_type": "bill", "item_reference": "INV-2025-001567"}
    own = console.headers(Role.CUSTOMER, "John Doe", ACCOUNT)
    for stranger in ("WU-10002", "WU-NOBODY"):
        foreign = console.headers(Role.CUSTOMER, "Someone Else", stranger)
        for service, method, template in routes:
            path = template.format(account_number=ACCOUNT, **values)
            async with httpx.AsyncClient(base_url=console.urls[service], timeout=30) as client:
                extra = {"Idempotency-Key": f"probe-{uuid.uuid4()}"} if method == "POST" else {}
                probe = await client.request(
                    method, path, json=body if method == "POST" else None, headers=foreign | extra
                )
                assert probe.status_code == 404, (stranger, method, path, probe.text)
                assert probe.json()["code"] == "not_found" and "John" not in probe.text
                if method == "GET":
                    mine = await client.get(path, headers=own)
                    assert mine.status_code == 200, (method, path, mine.text)
    # Nothing was asked of Stripe for the strangers: only the staff member's intent above exists.
    assert len(harness.stripe.intents) == 1


async def test_the_customer_endpoints_show_credit_remaining_and_expiry_receipts_and_the_next_installment(
    harness: Harness,
) -> None:
    console = harness.console
    own = console.headers(Role.CUSTOMER, "John Doe", ACCOUNT)
    async with httpx.AsyncClient(timeout=30) as client:
        credits = (
            await client.get(f"{console.urls['credit_notes']}/accounts/{ACCOUNT}/credit-notes", headers=own)
        ).json()
        receipts = (await client.get(f"{console.urls['receipts']}/accounts/{ACCOUNT}/receipts", headers=own)).json()
        pdf = await client.get(
            f"{console.urls['receipts']}/accounts/{ACCOUNT}/receipts/{harness.receipt}.pdf?download=true", headers=own
        )
        plan = (await client.get(f"{console.urls['collections']}/accounts/{ACCOUNT}/arrangement", headers=own)).json()
        foreign_receipt = await client.get(
            f"{console.urls['receipts']}/accounts/WU-10002/receipts/{harness.receipt}.pdf",
            headers=console.headers(Role.CUSTOMER_EXECUTIVE),
        )
    [credit] = credits["items"]
    assert (credit["amount"], credit["remaining"], credit["currency"]) == ("4.50", "4.50", "USD")
    assert credit["status"] == "Active" and credit["linked_payment"] == harness.receipt
    assert datetime.fromisoformat(credit["expires_at"]) > datetime.now(UTC)
    assert [r["receipt_number"] for r in receipts["receipts"]] == [harness.receipt]
    paid = receipts["receipts"][0]["amount"]
    assert (paid["amount"], paid["currency"], paid["display"]) == ("150.00", "USD", "$150.00")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert pdf.headers["content-disposition"] == f'attachment; filename="{harness.receipt}.pdf"'
    # Staff asking for a receipt under another account: not found, as for a customer.
    assert foreign_receipt.status_code == 404
    arrangement = plan["arrangement"]
    assert arrangement["arrangement_id"] == harness.arrangement["arrangement_id"]
    assert arrangement["total"]["amount"] == "25.00" and len(arrangement["installments"]) == 2
    assert "notes" not in arrangement and "executive" not in arrangement, "staff-only fields stay staff-only"
    first = harness.arrangement["installments"][0]
    assert plan["next_installment"] == {
        "item_reference": first["item_reference"],
        "number": first["number"],
        "due_date": first["due_date"],
        "amount": first["amount"],
        "status": "upcoming",
    }


async def test_a_customer_sees_the_payment_downloads_the_receipt_and_pays_the_next_bill_online(
    harness: Harness, browser: Browser
) -> None:
    console = harness.console
    context = await browser.new_context(viewport=PHONE, accept_downloads=True)  # type: ignore[arg-type]
    page = await context.new_page()
    seen: list[tuple[str, str | None]] = []
    apis = [url for name, url in console.urls.items() if name != "console"]
    page.on(
        "request",
        lambda r: seen.append((r.url, r.headers.get("authorization"))) if r.url.startswith(tuple(apis)) else None,
    )
    await page.goto(console.url)
    await page.wait_for_selector("body[data-ready] #signin-page:not([hidden])")
    await page.fill("#username", "john")
    await page.fill("#password", "paydesk")
    await page.click("#signin button[type=submit]")
    await page.wait_for_selector("#my-balance", timeout=WAIT_MS)
    assert await page.locator("#nav a").all_inner_texts() == ["My account"]
    await page.wait_for_selector(f"#my-payments-table tr[data-receipt='{harness.receipt}']", timeout=WAIT_MS)
    cells = await page.locator(f"#my-payments-table tr[data-receipt='{harness.receipt}'] td").all_inner_texts()
    assert "$150.00" in cells[2] and "Cash" in cells[3] and "Posted" in cells[5]
    credit = await text_of(page, "#my-credit-notes li")
    assert "$4.50 left of $4.50" in credit and "expires" in credit
    first = harness.arrangement["installments"][0]
    assert first["item_reference"] in await text_of(page, "#my-next-installment")

    async with page.expect_download(timeout=WAIT_MS) as download_info:
        await page.click(f"#my-payments-table tr[data-receipt='{harness.receipt}'] button.download")
    download = await download_info.value
    assert download.suggested_filename == f"{harness.receipt}.pdf"
    assert (await read(await download.path())).startswith(b"%PDF")
    await screen(page, console, "self-service")

    # Pay the April bill online: payments asks Stripe for a PaymentIntent with the account and item in its metadata.
    before = set(harness.stripe.intents)
    await page.click("#my-open-items button[data-item='INV-2025-001567']")
    await page.wait_for_selector("#pay-status[data-status='Pending']", timeout=WAIT_MS)
    [intent_id] = set(harness.stripe.intents) - before
    intent = harness.stripe.intents[intent_id]
    assert intent["amount"] == 15225
    assert intent["metadata"] == stripe_fake.metadata(ACCOUNT, "INV-2025-001567")
    await screen(page, console, "self-service-pending")

    # The card is confirmed at Stripe, which then sends the signed webhook to gateway_bridge.
    event = stripe_fake.payment_intent_event("payment_intent.succeeded", intent_id, intent["metadata"], amount=15225)
    webhook = stripe_fake.body_of(event)
    async with httpx.AsyncClient(base_url=console.urls["gateway_bridge"], timeout=30) as client:
        delivered = await client.post(
            "/webhooks/stripe",
            content=webhook,
            headers={"Stripe-Signature": stripe_fake.sign(webhook), "content-type": "application/json"},
        )
    assert delivered.status_code == 200, delivered.text
    # The page follows the payment on its own, Pending to Posted, with the receipt number.
    await page.wait_for_selector("#pay-status[data-status='Posted']", timeout=WAIT_MS * 2)
    status = await text_of(page, "#pay-status")
    assert "receipt R-" in status
    # Then the page reads the account again: the new payment is listed and the bill is no longer open.
    paid_receipt = status.rsplit("receipt ", 1)[1].strip()
    await page.wait_for_selector(f"#my-payments-table tr[data-receipt='{paid_receipt}']", timeout=WAIT_MS)
    assert await page.locator("#my-open-items button[data-item='INV-2025-001567']").count() == 0
    await screen(page, console, "self-service-paid")

    # Staff pages are not the customer's: back home, no staff API called, the token only ever in a header.
    await page.goto(f"{console.url}/#/payments")
    await page.wait_for_selector("#my-balance", timeout=WAIT_MS)
    token = await page.evaluate("sessionStorage.getItem('paydesk.console.token')")
    calls = [(url, auth) for url, auth in seen if auth is not None]
    assert calls and all(auth == f"Bearer {token}" for _, auth in calls)
    assert all(f"/accounts/{ACCOUNT}" in url and token not in url for url, _ in seen)
    await context.close()
