"""The issue's "done means" on the running system: an agent collects payments through its channel, a month's
commission run is previewed, approved, executed through the local Stripe server and a pain.001 file, webhooks
mark the payouts Paid, and the payee's statement PDF shows it all.

payments and payouts run as real processes on the real broker and database; the Stripe-compatible server runs
in this test's loop. gateway_bridge does not publish `gateway.payout_status_changed` yet, so the test publishes
the event it will publish.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from paydesk.embedded import free_port
from shared.auth import Role, mint_token
from shared.contracts import Topic, new_envelope
from shared.contracts.events import GatewayPayoutStatusChanged
from tests.conftest import Infra
from tests.support.helpers import eventually, pdf_text, publish, unique_account
from tests.support.payments import billing_events, year_of
from tests.support.stripe_fake import API_KEY, serving
from tests.support.stripe_transfers_fake import FakeStripeTransfers

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]
SECRET = "e2e-payouts-secret-long-enough-for-hs256"
SERVICES = {"payments": "PAYMENTS_", "payouts": "PAYOUTS_"}
TODAY = datetime.now(UTC).date()
CHANNEL, AGENT = "Mobile Field Collection", "Field Agent Fred"


@pytest.fixture(scope="module")
async def stripe_api() -> AsyncIterator[tuple[FakeStripeTransfers, str]]:
    fake = FakeStripeTransfers()
    async with serving(fake.app()) as base:
        yield fake, base


@pytest.fixture(scope="module")
def processes(infra: Infra, stripe_api: tuple[FakeStripeTransfers, str]) -> Iterator[dict[str, str]]:
    ports = {name: free_port() for name in SERVICES}
    logs = infra.workdir / "e2e-payouts-logs"
    logs.mkdir(exist_ok=True)
    env = {
        **os.environ,
        **infra.env(),
        "PAYDESK_JWT_SECRET": SECRET,
        "PAYDESK_OTEL_EXPORTER": "none",
        "STRIPE_API_BASE": stripe_api[1],
        "STRIPE_API_KEY": API_KEY,
        **{f"{prefix}HTTP_PORT": str(ports[name]) for name, prefix in SERVICES.items()},
    }
    started = {
        name: subprocess.Popen(
            [sys.executable, "-m", "paydesk.cli", "service", name],
            env=env,
            stdout=open(Path(logs) / f"{name}.log", "wb"),  # noqa: SIM115 - held open for the process lifetime
            stderr=subprocess.STDOUT,
        )
        for name in SERVICES
    }
    try:
        yield {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    finally:
        for process in started.values():
            process.send_signal(signal.SIGTERM)
        for process in started.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def bearer(user: str, role: Role, **kw: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SECRET, user=user, roles=[role], **kw)}"}


def key() -> dict[str, str]:
    return {"Idempotency-Key": f"e2e-{uuid.uuid4().hex}"}


ECB = f"""<?xml version="1.0" encoding="UTF-8"?>
<gesmes:Envelope xmlns:gesmes="http://www.gesmes.org/xml/2002-08-01"
  xmlns="http://www.ecb.int/vocabulary/2002-08-01/eurofxref">
<Cube><Cube time='{TODAY.isoformat()}'><Cube currency='USD' rate='1.1373'/></Cube></Cube>
</gesmes:Envelope>""".encode()


async def test_a_months_commission_run_is_paid_through_stripe_and_a_bank_file_and_shown_on_the_statement(
    infra: Infra, processes: dict[str, str], stripe_api: tuple[FakeStripeTransfers, str]
) -> None:
    fake, _ = stripe_api
    maker, checker = bearer("Maker Mary", Role.BILLING_MANAGER), bearer("Checker Chris", Role.BILLING_MANAGER)
    async with httpx.AsyncClient(timeout=30) as http:
        # An outer bound, not a budget: on a loaded machine the services take minutes to start.
        for url in processes.values():
            await eventually(partial(_ready, http, url), within=300)
        payouts, payments = processes["payouts"], processes["payments"]

        agent = await http.post(
            f"{payouts}/payees",
            headers={**maker, **key()},
            json={
                "name": AGENT,
                "payee_type": "agent",
                "country": "DE",
                "payout_currency": "EUR",
                "method": "stripe",
                "stripe_account": "acct_1FieldAgentFred",
                "agent_channel": CHANNEL,
                "agent_user": AGENT,
            },
        )
        assert agent.status_code == 201, agent.text
        agent_id = agent.json()["payee_id"]
        partner = await http.post(
            f"{payouts}/payees",
            headers={**maker, **key()},
            json={
                "name": "Cityville Partner GmbH",
                "payee_type": "partner",
                "country": "DE",
                "payout_currency": "EUR",
                "method": "bank",
                "iban": "DE89370400440532013000",
            },
        )
        partner_id = partner.json()["payee_id"]
        rule = {
            "payee_id": agent_id,
            "kind": "percentage",
            "currency": "USD",
            "percent": "2",
            "effective_from": "2000-01-01",
        }
        assert (await http.post(f"{payouts}/rules", headers=maker, json=rule)).status_code == 201
        rates = await http.post(f"{payouts}/rates/import", headers=maker, files={"file": ("eurofxref-daily.xml", ECB)})
        assert rates.json()["rates"] == 1  # new, or already there from an earlier import of the same file

        # The agent collects a payment at its channel: payments posts it, payouts earns the commission from the event.
        # A consumer of its own (not the seed's John Doe, whose bills other e2e tests pay), in a year of its own.
        account = unique_account()
        await publish(infra.bootstrap_servers, Topic.BILLING_RECEIVABLES, billing_events(account, "Field Customer"))
        paid_on = date(year_of(account), 5, 2)
        payment = {
            "account_number": account,
            "payment_type": "bill",
            "item_reference": f"INV-{account}-2",
            "channel": CHANNEL,
            "method": "Cash",
            "amount": "152.25",
            "payment_date": paid_on.isoformat(),
            "cash_received": "152.25",
        }
        clerk = {**bearer(AGENT, Role.CUSTOMER_EXECUTIVE), **key()}

        async def pay() -> httpx.Response | None:
            response = await http.post(f"{payments}/payments", headers=clerk, json=payment)
            return response if response.status_code == 201 else None

        posted = (await eventually(pay)).json()
        assert posted["received_by"] == AGENT
        earnings = await eventually(lambda: _lines(http, f"{payouts}/payees/{agent_id}/earnings", maker))
        assert earnings[0]["source_ref"] == posted["receipt_number"]
        assert earnings[0]["amount"]["amount"] == "3.04"  # 2% of 152.25 = 3.045, banker's rounding
        bonus = {
            "payee_id": partner_id,
            "amount": "80.00",
            "currency": "EUR",
            "earned_on": TODAY.isoformat(),
            "reason": "Partner campaign",
        }
        assert (await http.post(f"{payouts}/earnings", headers={**maker, **key()}, json=bonus)).status_code == 201

        # Preview, run, approve by another billing manager, execute.
        filters = {"payee_ids": [agent_id, partner_id], "period_to": max(paid_on, TODAY).isoformat()}
        preview = (await http.post(f"{payouts}/runs/preview", headers=maker, json=filters)).json()
        assert preview["totals"] == [{"amount": "82.67", "currency": "EUR", "display": "€82.67"}]
        run = (await http.post(f"{payouts}/runs", headers={**maker, **key()}, json=filters)).json()
        assert (await http.post(f"{payouts}/runs/{run['run_id']}/approve", headers=maker)).status_code == 403
        assert (await http.post(f"{payouts}/runs/{run['run_id']}/approve", headers=checker)).status_code == 200
        executed = (await http.post(f"{payouts}/runs/{run['run_id']}/execute", headers=checker)).json()
        by_payee = {p["payee_id"]: p for p in executed["payouts"]}
        stripe_payout, bank_payout = by_payee[agent_id], by_payee[partner_id]
        assert [t["amount"] for t in fake.created_for(stripe_payout["payout_id"])] == [267]
        bank_file = executed["bank_files"][0]
        xml = await http.get(f"{payouts}/runs/{run['run_id']}/files/{bank_file['file_id']}.xml", headers=maker)
        assert bank_payout["payout_id"].encode() in xml.content and b"pain.001.001.03" in xml.content

        # Stripe's webhook (through gateway_bridge) and the bank's statement mark them Paid.
        paid = GatewayPayoutStatusChanged(
            gateway_event_id=f"evt_{uuid.uuid4().hex[:12]}",
            event_type="payout.paid",
            object_type="payout",
            object_id="po_e2e",
            connected_account="acct_1FieldAgentFred",
            paydesk_payout_id=stripe_payout["payout_id"],
            occurred_at=datetime.now(UTC),
        )
        envelope = new_envelope("gateway.payout_status_changed", source="gateway_bridge", subject=agent_id, data=paid)
        await publish(infra.bootstrap_servers, Topic.GATEWAY_EVENTS, [envelope])
        settled = await http.post(
            f"{payouts}/payouts/{bank_payout['payout_id']}/bank-status", headers=maker, json={"status": "Paid"}
        )
        assert settled.status_code == 200

        async def all_paid() -> bool:
            run_now = (await http.get(f"{payouts}/runs/{run['run_id']}", headers=maker)).json()
            return {p["status"] for p in run_now["payouts"]} == {"Paid"}

        await eventually(all_paid)
        statement = await http.get(
            f"{payouts}/payees/{agent_id}/statements/{run['run_id']}.pdf",
            headers=bearer(AGENT, Role.PAYEE, payee_id=agent_id),
        )
        text = pdf_text(statement.content)
        for expected in (
            AGENT,
            stripe_payout["payout_id"],
            "Paid",
            posted["receipt_number"],
            "€2.67",
            "2% of each payment",
        ):
            assert expected in text
        me = (await http.get(f"{payouts}/me", headers=bearer(AGENT, Role.PAYEE, payee_id=agent_id))).json()
        # Earned in the payments' currency, paid in the payee's.
        totals = {t["currency"]: t for t in me["totals"]}
        assert totals["USD"]["total_earned"]["amount"] == "3.04" and totals["USD"]["pending"]["amount"] == "0.00"
        assert totals["EUR"]["paid_this_year"] == {"amount": "2.67", "currency": "EUR", "display": "€2.67"}


async def _ready(http: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await http.get(f"{url}/health/ready")).status_code == 200
    except httpx.HTTPError:
        await asyncio.sleep(0.2)
        return False


async def _lines(http: httpx.AsyncClient, url: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    return list((await http.get(url, headers=headers)).json()["items"])
