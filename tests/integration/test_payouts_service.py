"""The payouts service on the real broker and database, with a local Stripe-compatible server counting requests:
payees, earnings from events, rules, rates, approvals, runs (Stripe and pain.001), webhook statuses, statements,
views and export."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from xml.etree import ElementTree

import httpx
import pytest
from sqlalchemy import func, select

from services.payouts import execution
from services.payouts.app import PayoutsService, create_service
from services.payouts.disbursement import idempotency_key
from services.payouts.settings import PayoutsSettings
from services.payouts.storage import lines, payees
from shared.auth import Role, mint_token
from shared.contracts import Topic, new_envelope
from shared.contracts.events import (
    CreditNoteRefundRequested,
    GatewayPayoutStatusChanged,
    Money,
    PaymentCancelled,
    PaymentStatusChanged,
)
from tests.conftest import Infra
from tests.support.helpers import counter_payment, eventually, pdf_text, publish, read_topic, settled
from tests.support.stripe_fake import API_KEY, serving
from tests.support.stripe_transfers_fake import FakeStripeTransfers

pytestmark = pytest.mark.kafka
D = Decimal
TODAY = datetime.now(UTC).date()
# The ECB's daily file, dated today.
ECB = f"""<?xml version="1.0" encoding="UTF-8"?>
<gesmes:Envelope xmlns:gesmes="http://www.gesmes.org/xml/2002-08-01"
  xmlns="http://www.ecb.int/vocabulary/2002-08-01/eurofxref">
<gesmes:subject>Reference rates</gesmes:subject>
<Cube><Cube time='{TODAY.isoformat()}'>
<Cube currency='USD' rate='1.1373'/><Cube currency='GBP' rate='0.85'/>
</Cube></Cube>
</gesmes:Envelope>""".encode()
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


@pytest.fixture(scope="module")
async def stripe_api() -> AsyncIterator[tuple[FakeStripeTransfers, str]]:
    fake = FakeStripeTransfers()
    async with serving(fake.app()) as base:
        yield fake, base


@pytest.fixture(scope="module")
async def service(infra: Infra, stripe_api: tuple[FakeStripeTransfers, str]) -> AsyncIterator[PayoutsService]:
    _, base = stripe_api
    created = create_service(
        PayoutsSettings(
            database_url=infra.database_url,
            kafka_bootstrap_servers=infra.bootstrap_servers,
            stripe_api_base=base,
            stripe_api_key=API_KEY,
            development=True,
        )
    )
    await created.start()
    try:
        yield created
    finally:
        await created.stop()


@pytest.fixture(scope="module")
async def api(service: PayoutsService) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=service.http), base_url="http://payouts") as client:
        yield client


def auth(
    service: PayoutsService, user: str = "Maker Mary", role: Role = Role.BILLING_MANAGER, **kw: Any
) -> dict[str, str]:
    token = mint_token(service.settings.jwt_secret.get_secret_value(), user=user, roles=[role], **kw)
    return {"Authorization": f"Bearer {token}"}


def writer(service: PayoutsService, user: str = "Maker Mary") -> dict[str, str]:
    return {**auth(service, user), "Idempotency-Key": f"key-{uuid.uuid4().hex}"}


def tag() -> str:
    return uuid.uuid4().hex[:8].upper()


async def new_payee(api: httpx.AsyncClient, service: PayoutsService, **fields: Any) -> dict[str, Any]:
    body = {"name": f"Agent {tag()}", "payee_type": "agent", "country": "DE", "payout_currency": "EUR"}
    body.update(fields)
    if "method" not in fields:
        body.update(method="stripe", stripe_account=f"acct_{tag()}{tag()}")
    response = await api.post("/payees", json=body, headers=writer(service))
    assert response.status_code == 201, response.text
    return dict(response.json())


async def agent_with_rule(
    api: httpx.AsyncClient, service: PayoutsService, *, percent: str = "2", **fields: Any
) -> tuple[dict[str, Any], str]:
    channel = f"Agent {tag()}"
    payee = await new_payee(api, service, agent_channel=channel, **fields)
    rule = {
        "payee_id": payee["payee_id"],
        "kind": "percentage",
        "currency": "USD",
        "percent": percent,
        "effective_from": "2000-01-01",
    }
    response = await api.post("/rules", json=rule, headers=auth(service))
    assert response.status_code == 201, response.text
    return payee, channel


def collected(channel: str, receipt: str, amount: str, *, received_by: str = "Jane Smith") -> Any:
    event = counter_payment(
        f"ACC-{tag()}", receipt_number=receipt, amount=amount, due=amount, item_reference=f"INV-{receipt}", day=TODAY
    )
    event.data["channel"] = channel
    event.data["received_by"] = received_by
    return event


async def line_rows(service: PayoutsService, payee_id: str) -> list[Any]:
    async with service.sessions() as session:
        return list(
            (await session.execute(select(lines).where(lines.c.payee_id == payee_id).order_by(lines.c.seq))).all()
        )


async def import_ecb(api: httpx.AsyncClient, service: PayoutsService) -> None:
    response = await api.post("/rates/import", files={"file": ("eurofxref-daily.xml", ECB)}, headers=auth(service))
    assert response.status_code == 200, response.text


class TestPayees:
    async def test_a_payee_with_a_valid_iban_is_created_and_found_by_partial_name(self, api, service):
        name = f"Partner Müller {tag()}"
        created = await new_payee(
            api, service, name=name, payee_type="partner", method="bank", iban="DE89 3704 0044 0532 0130 00"
        )
        assert created["iban"] == "DE89370400440532013000"
        assert created["bic"] == "COBADEFFXXX"
        found = (await api.get("/payees", params={"q": name[-8:].lower()}, headers=auth(service))).json()["items"]
        assert [p["payee_id"] for p in found] == [created["payee_id"]]

    @pytest.mark.parametrize(
        ("changes", "field", "code"),
        [
            ({"method": "bank", "iban": "DE89370400440532013001"}, "iban", "invalid_iban"),
            ({"method": None}, "method", "payout_method_required"),
            ({"payout_currency": "XYZ"}, "payout_currency", "unknown_currency"),
            ({"country": "ZZ"}, "country", "unknown_country"),
            ({"method": "stripe", "stripe_account": "nope"}, "stripe_account", "invalid_stripe_account"),
        ],
    )
    async def test_bad_input_names_the_field_and_writes_nothing(self, api, service, changes, field, code):
        name = f"Bad {tag()}"
        body = {
            "name": name,
            "payee_type": "agent",
            "country": "DE",
            "payout_currency": "EUR",
            "method": "stripe",
            "stripe_account": "acct_123456789",
        }
        body.update(changes)
        response = await api.post("/payees", json=body, headers=writer(service))
        assert response.status_code == 422
        assert (response.json()["code"], response.json()["field"]) == (code, field)
        async with service.sessions() as session:
            assert (await session.execute(select(func.count()).where(payees.c.name == name))).scalar_one() == 0

    async def test_import_reports_each_bad_row_and_writes_nothing_until_all_are_valid(self, api, service):
        ids = [f"EXT-{tag()}" for _ in range(3)]
        header = "external_id,name,payee_type,country,payout_currency,method,iban,stripe_account\n"
        good = (
            f"{ids[0]},Ann {ids[0]},partner,NL,EUR,bank,NL91ABNA0417164300,\n"
            f"{ids[1]},Bob {ids[1]},agent,US,USD,stripe,,acct_{tag()}{tag()}\n"
        )
        bad = f"{ids[2]},Cy {ids[2]},agent,FR,EUR,bank,FR0000000000000000000000000,\n"
        response = await api.post(
            "/payees/import", files={"file": ("payees.csv", (header + good + bad).encode())}, headers=auth(service)
        )
        assert response.status_code == 422
        report = response.json()
        assert (report["rows"], report["valid"]) == (3, 2)
        assert [(e["row"], e["field"]) for e in report["errors"]] == [(4, "iban")]
        async with service.sessions() as session:
            assert (await session.execute(select(func.count()).where(payees.c.external_id.in_(ids)))).scalar_one() == 0
        response = await api.post(
            "/payees/import", files={"file": ("payees.csv", (header + good).encode())}, headers=auth(service)
        )
        assert response.status_code == 200, response.text
        assert len(response.json()["created"]) == 2
        again = await api.post(
            "/payees/import", files={"file": ("payees.csv", (header + good).encode())}, headers=auth(service)
        )
        assert (again.json()["created"], again.json()["unchanged"]) == ([], 2)


class TestEarningsFromEvents:
    async def test_a_payment_through_the_agents_channel_earns_its_commission_and_a_cancellation_reverses_it(
        self, infra, api, service
    ):
        payee, channel = await agent_with_rule(api, service, percent="2.5")
        receipt, other = f"R-{tag()}", f"R-{tag()}"
        await publish(
            infra.bootstrap_servers,
            Topic.PAYMENTS_EVENTS,
            [collected(channel, receipt, "145.50"), collected(channel, other, "20.00")],
        )
        rows = await eventually(lambda: _at_least(line_rows(service, payee["payee_id"]), 2))
        first = next(r for r in rows if r.source_ref == receipt)
        assert (first.kind, first.amount, first.currency) == ("commission", D("3.64"), "USD")
        assert first.calculation["rule"].startswith("2.5% of each payment")
        cancelled = PaymentCancelled(
            payment_id=f"PAY-{receipt}",
            receipt_number=receipt,
            account_number="ACC",
            amount=Money(amount=D("145.50")),
            reason="Wrong account",
            cancelled_by="Admin",
            cancelled_at=datetime.now(UTC),
        )
        refunded = PaymentStatusChanged(
            payment_id=f"PAY-{other}",
            receipt_number=other,
            account_number="ACC",
            previous_status="Posted",
            status="Refunded",
            changed_at=datetime.now(UTC),
        )
        envelopes = [
            new_envelope("payment.cancelled", source="payments", subject="ACC", data=cancelled),
            new_envelope("payment.status_changed", source="payments", subject="ACC", data=refunded),
        ]
        await publish(infra.bootstrap_servers, Topic.PAYMENTS_EVENTS, [*envelopes, envelopes[0]])
        rows = await eventually(lambda: _at_least(line_rows(service, payee["payee_id"]), 4))
        assert len(rows) == 4  # the repeated cancellation reversed nothing twice
        assert sum((r.amount for r in rows), D(0)) == 0
        assert {r.reverses_line_id for r in rows if r.kind == "reversal"} == {f"COM-{receipt}", f"COM-{other}"}

    async def test_a_payment_of_another_channel_earns_nothing(self, infra, api, service):
        payee, _ = await agent_with_rule(api, service)
        watched, receipt = f"Agent {tag()}", f"R-{tag()}"
        mine = await new_payee(api, service, agent_channel=watched)
        await publish(
            infra.bootstrap_servers,
            Topic.PAYMENTS_EVENTS,
            [collected("Walk-in", receipt, "10.00"), collected(watched, f"R-{tag()}", "10.00")],
        )
        await settled(service)  # both payments consumed
        assert await line_rows(service, payee["payee_id"]) == []
        assert await line_rows(service, mine["payee_id"]) == []  # linked, but no rule in force

    async def test_a_refund_request_becomes_a_refund_line_for_a_customer_payee_held_until_it_has_a_method(
        self, infra, api, service
    ):
        account, note = f"WU-{tag()}", f"CN-{tag()}"
        refund = CreditNoteRefundRequested(
            credit_note_number=note,
            account_number=account,
            receipt_number=f"R-{tag()}",
            consumer_name="John Doe",
            amount=Money(amount=D("5.00")),
            reason="Moved out",
            requested_by="Bill Manager",
            requested_at=datetime.now(UTC),
        )
        envelope = new_envelope("credit_note.refund_requested", source="credit_notes", subject=account, data=refund)
        await publish(infra.bootstrap_servers, Topic.CREDITNOTES_EVENTS, [envelope, envelope])

        async def customer() -> Any:
            async with service.sessions() as session:
                return (await session.execute(select(payees).where(payees.c.account_number == account))).first()

        payee = await eventually(customer)
        assert payee.status == "Incomplete"
        rows = await eventually(lambda: line_rows(service, payee.payee_id))
        assert [(r.kind, r.amount, r.source_ref) for r in rows] == [("refund", D("5.00"), note)]
        preview = (await api.post("/runs/preview", json={"payee_ids": [payee.payee_id]}, headers=auth(service))).json()
        assert preview["payouts"] == []
        assert (preview["held"][0]["code"], preview["held"][0]["field"]) == ("payee_without_method", "method")


class TestManualEarnings:
    async def test_above_the_limit_a_second_person_approves_and_the_maker_cannot(self, api, service):
        payee = await new_payee(api, service)
        body = {
            "payee_id": payee["payee_id"],
            "kind": "manual",
            "amount": "250.00",
            "currency": "EUR",
            "earned_on": TODAY.isoformat(),
            "reason": "Campaign bonus",
        }
        created = (await api.post("/earnings", json=body, headers=writer(service))).json()
        assert created["status"] == "Pending approval"
        own = await api.post(f"/approvals/{created['approval_id']}/approve", headers=auth(service))
        assert (own.status_code, own.json()["code"]) == (403, "own_request")
        other = await api.post(f"/approvals/{created['approval_id']}/approve", headers=auth(service, "Checker Chris"))
        assert other.status_code == 200, other.text
        small = {**body, "amount": "-20.00", "kind": "adjustment", "reason": "Correction"}
        adjusted = (await api.post("/earnings", json=small, headers=writer(service))).json()
        assert adjusted["status"] == "Open"
        statuses = {r.line_id: r.status for r in await line_rows(service, payee["payee_id"])}
        assert statuses == {created["line_id"]: "Open", adjusted["line_id"]: "Open"}
        bad = await api.post("/earnings", json={**body, "currency": "EURO"}, headers=writer(service))
        assert (bad.status_code, bad.json()["field"]) == (422, "currency")

    async def test_imported_lines_are_idempotent_by_line_id(self, api, service):
        payee = await new_payee(api, service)
        line_id = f"IMP-{tag()}"
        content = (
            "line_id,payee_id,amount,currency,earned_on,description\n"
            f"{line_id},{payee['payee_id']},12.50,EUR,{TODAY},Q1 bonus\n"
        ).encode()
        first = await api.post("/earnings/import", files={"file": ("lines.csv", content)}, headers=auth(service))
        second = await api.post("/earnings/import", files={"file": ("lines.csv", content)}, headers=auth(service))
        assert (first.json()["imported"], second.json()["imported"], second.json()["unchanged"]) == (1, 0, 1)
        changed = content.replace(b"12.50", b"13.50")
        third = await api.post("/earnings/import", files={"file": ("lines.csv", changed)}, headers=auth(service))
        assert third.status_code == 422
        assert third.json()["errors"][0]["code"] == "line_id_reused"
        assert [r.amount for r in await line_rows(service, payee["payee_id"])] == [D("12.50")]


async def _at_least(rows: Any, count: int) -> Any:
    found = await rows
    return found if len(found) >= count else None


async def earned(
    infra: Infra,
    api: httpx.AsyncClient,
    service: PayoutsService,
    payee: dict[str, Any],
    channel: str,
    amounts: list[str],
) -> list[str]:
    receipts = [f"R-{tag()}" for _ in amounts]
    await publish(
        infra.bootstrap_servers,
        Topic.PAYMENTS_EVENTS,
        [collected(channel, r, a) for r, a in zip(receipts, amounts, strict=True)],
    )
    await eventually(lambda: _at_least(line_rows(service, payee["payee_id"]), len(amounts)))
    return receipts


class TestRuns:
    async def test_a_run_is_previewed_approved_by_another_person_once_and_pays_once_through_stripe(
        self, infra, api, service, stripe_api
    ):
        """INVARIANT: however many times a run is approved and executed, concurrently or not, each payout is one
        transfer at Stripe."""
        fake, _ = stripe_api
        await import_ecb(api, service)
        payee, channel = await agent_with_rule(api, service, percent="10")
        await earned(infra, api, service, payee, channel, ["100.00", "50.00"])
        filters = {"payee_ids": [payee["payee_id"]], "as_of": TODAY.isoformat()}
        preview = (await api.post("/runs/preview", json=filters, headers=auth(service))).json()
        assert preview["totals"] == [{"amount": "13.19", "currency": "EUR", "display": "€13.19"}]
        assert {line["source"] for line in preview["payouts"][0]["lines"]} == {"inverse of ECB"}
        run = (await api.post("/runs", json=filters, headers=writer(service))).json()
        assert run["status"] == "Pending approval"
        assert [p["status"] for p in run["payouts"]] == ["Scheduled"]
        own = await api.post(f"/runs/{run['run_id']}/approve", headers=auth(service))
        assert own.status_code == 403
        approvals = await asyncio.gather(
            api.post(f"/runs/{run['run_id']}/approve", headers=auth(service, "Checker Chris")),
            api.post(f"/runs/{run['run_id']}/approve", headers=auth(service, "Checker Carla")),
        )
        assert sorted(r.status_code for r in approvals) == [200, 409]
        executions = await asyncio.gather(
            *(api.post(f"/runs/{run['run_id']}/execute", headers=auth(service, "Checker Chris")) for _ in range(3))
        )
        assert all(r.status_code == 200 for r in executions), [r.text for r in executions]
        payout_id = run["payouts"][0]["payout_id"]
        assert len(fake.created_for(payout_id)) == 1
        assert fake.requests_per_key[idempotency_key(payout_id)] == 1
        done = (await api.get(f"/runs/{run['run_id']}", headers=auth(service))).json()
        assert done["status"] == "Executed"
        assert done["payouts"][0]["status"] == "Sent"
        assert done["payouts"][0]["reference"] == fake.created_for(payout_id)[0]["id"]
        assert fake.created_for(payout_id)[0]["amount"] == 1319

    async def test_a_retry_after_a_crash_between_sent_and_recorded_never_pays_twice(
        self, infra, api, service, stripe_api
    ):
        """INVARIANT: Stripe answered, we crashed before recording it: the retry sends the same idempotency key and
        Stripe gives back the first transfer; exactly one transfer exists."""
        fake, _ = stripe_api
        payee, channel = await agent_with_rule(api, service, payout_currency="USD")
        await earned(infra, api, service, payee, channel, ["500.00"])
        run = (await api.post("/runs", json={"payee_ids": [payee["payee_id"]]}, headers=writer(service))).json()
        await api.post(f"/runs/{run['run_id']}/approve", headers=auth(service, "Checker Chris"))
        payout_id = run["payouts"][0]["payout_id"]

        async def crash(_: str) -> None:
            raise RuntimeError("process killed after Stripe answered")

        with pytest.raises(RuntimeError):
            await execution.execute_run(
                service.sessions,
                run["run_id"],
                actor="Checker Chris",
                client=service.stripe,
                settings=service.settings,
                after_send=crash,
            )
        assert (await api.get(f"/runs/{run['run_id']}", headers=auth(service))).json()["payouts"][0][
            "status"
        ] == "Approved"
        retried = await api.post(f"/runs/{run['run_id']}/execute", headers=auth(service, "Checker Chris"))
        assert retried.status_code == 200
        assert fake.requests_per_key[idempotency_key(payout_id)] == 2
        assert len(fake.created_for(payout_id)) == 1
        assert retried.json()["payouts"][0]["reference"] == fake.created_for(payout_id)[0]["id"]

    async def test_a_run_cannot_be_executed_before_approval_and_a_missing_rate_holds_the_payee(
        self, infra, api, service
    ):
        payee, channel = await agent_with_rule(api, service, payout_currency="CHF")
        await earned(infra, api, service, payee, channel, ["100.00"])
        preview = (
            await api.post("/runs/preview", json={"payee_ids": [payee["payee_id"]]}, headers=auth(service))
        ).json()
        assert preview["held"][0]["code"] == "missing_rate"
        assert "USD->CHF" in preview["held"][0]["detail"]
        refused = await api.post("/runs", json={"payee_ids": [payee["payee_id"]]}, headers=writer(service))
        assert (refused.status_code, refused.json()["code"]) == (422, "nothing_to_pay")
        await api.post(
            "/rates",
            json={"base": "USD", "quote": "CHF", "rate": "0.88", "as_of": TODAY.isoformat()},
            headers=auth(service),
        )
        run = (await api.post("/runs", json={"payee_ids": [payee["payee_id"]]}, headers=writer(service))).json()
        assert run["totals"] == [{"amount": "1.76", "currency": "CHF", "display": "CHF 1.76"}]
        early = await api.post(f"/runs/{run['run_id']}/execute", headers=auth(service, "Checker Chris"))
        assert (early.status_code, early.json()["code"]) == (409, "run_not_approved")

    async def test_bank_payees_are_paid_by_one_pain001_file_per_debtor_account(self, api, service):
        first = await new_payee(api, service, method="bank", iban="NL91ABNA0417164300", name=f"Bänk Partner {tag()}")
        second = await new_payee(api, service, method="bank", iban="FR1420041010050500013M02606")
        for payee, amount in ((first, "40.00"), (second, "2.50")):
            body = {
                "payee_id": payee["payee_id"],
                "amount": amount,
                "currency": "EUR",
                "earned_on": TODAY.isoformat(),
                "reason": "Partner earnings",
            }
            assert (await api.post("/earnings", json=body, headers=writer(service))).status_code == 201
        filters = {"payee_ids": [first["payee_id"], second["payee_id"]]}
        run = (await api.post("/runs", json=filters, headers=writer(service))).json()
        await api.post(f"/runs/{run['run_id']}/approve", headers=auth(service, "Checker Chris"))
        executed = (await api.post(f"/runs/{run['run_id']}/execute", headers=auth(service, "Checker Chris"))).json()
        again = (await api.post(f"/runs/{run['run_id']}/execute", headers=auth(service, "Checker Chris"))).json()
        assert len(executed["bank_files"]) == 1 and again["execution"]["sent"] == []
        file = executed["bank_files"][0]
        assert (file["payouts"], file["control_sum"]["amount"]) == (2, "42.50")
        xml = await api.get(f"/runs/{run['run_id']}/files/{file['file_id']}.xml", headers=auth(service))
        ns = {"p": "urn:iso:std:iso:20022:tech:xsd:pain.001.001.03"}
        root = ElementTree.fromstring(xml.content)
        assert root.find(".//p:GrpHdr/p:NbOfTxs", ns).text == "2"  # type: ignore[union-attr]
        ends = {e.text for e in root.findall(".//p:EndToEndId", ns)}
        assert ends == {p["payout_id"] for p in executed["payouts"]}
        assert "NL91ABNA0417164300" in {e.text for e in root.findall(".//p:CdtrAcct/p:Id/p:IBAN", ns)}
        assert all(p["status"] == "Sent" for p in executed["payouts"])


async def payout_status(api: httpx.AsyncClient, service: PayoutsService, payout_id: str, run_id: str) -> str:
    run = (await api.get(f"/runs/{run_id}", headers=auth(service))).json()
    return str(next(p["status"] for p in run["payouts"] if p["payout_id"] == payout_id))


def gateway(event_type: str, payout_id: str, object_id: str, **kw: Any) -> Any:
    data = GatewayPayoutStatusChanged(
        gateway_event_id=f"evt_{tag()}",
        event_type=event_type,
        object_type=event_type.split(".")[0],
        object_id=object_id,
        paydesk_payout_id=payout_id,
        occurred_at=datetime.now(UTC),
        **kw,
    )
    return new_envelope("gateway.payout_status_changed", source="gateway_bridge", subject=payout_id, data=data)


class TestStatusesStatementsAndViews:
    async def test_webhooks_mark_payouts_paid_or_failed_and_a_failed_payouts_lines_return_to_the_next_run(
        self, infra, api, service, stripe_api
    ):
        fake, _ = stripe_api
        paid_payee, channel = await agent_with_rule(api, service, payout_currency="USD")
        failing = await new_payee(api, service, payout_currency="USD")
        await earned(infra, api, service, paid_payee, channel, ["300.00"])
        body = {
            "payee_id": failing["payee_id"],
            "amount": "30.00",
            "currency": "USD",
            "earned_on": TODAY.isoformat(),
            "reason": "Referral",
        }
        await api.post("/earnings", json=body, headers=writer(service))
        run = (
            await api.post(
                "/runs", json={"payee_ids": [paid_payee["payee_id"], failing["payee_id"]]}, headers=writer(service)
            )
        ).json()
        await api.post(f"/runs/{run['run_id']}/approve", headers=auth(service, "Checker Chris"))
        executed = (await api.post(f"/runs/{run['run_id']}/execute", headers=auth(service, "Checker Chris"))).json()
        by_payee = {p["payee_id"]: p for p in executed["payouts"]}
        paid, failed = by_payee[paid_payee["payee_id"]], by_payee[failing["payee_id"]]
        await publish(
            infra.bootstrap_servers,
            Topic.GATEWAY_EVENTS,
            [
                gateway("payout.paid", paid["payout_id"], paid["reference"]),
                gateway("transfer.created", paid["payout_id"], paid["reference"]),  # late: never moves Paid back
                gateway("transfer.reversed", failed["payout_id"], failed["reference"], failure_code="account_closed"),
            ],
        )
        await eventually(lambda: _equals(payout_status(api, service, paid["payout_id"], run["run_id"]), "Paid"))
        await eventually(lambda: _equals(payout_status(api, service, failed["payout_id"], run["run_id"]), "Returned"))
        events = [
            r
            for r in await read_topic(infra.bootstrap_servers, Topic.PAYOUTS_EVENTS)
            if paid["payout_id"].encode() in r.value
        ]
        assert {"payout.sent", "payout.paid"} <= {_type(r) for r in events}
        assert {r.status for r in await line_rows(service, paid_payee["payee_id"])} == {"Paid"}
        assert {r.status for r in await line_rows(service, failing["payee_id"])} == {"Open"}
        preview = (
            await api.post("/runs/preview", json={"payee_ids": [failing["payee_id"]]}, headers=auth(service))
        ).json()
        assert preview["totals"] == [{"amount": "30.00", "currency": "USD", "display": "$30.00"}]
        assert len(fake.created_for(paid["payout_id"])) == 1

        # The payee's statement, dashboard and the history with its export.
        pdf = await api.get(f"/payees/{paid_payee['payee_id']}/statements/{run['run_id']}.pdf", headers=auth(service))
        assert pdf.headers["content-type"] == "application/pdf"
        text = pdf_text(pdf.content)
        for expected in (paid_payee["name"], paid["payout_id"], "Paid", "$6.00", "2% of each payment"):
            assert expected in text
        token = auth(service, paid_payee["name"], Role.PAYEE, payee_id=paid_payee["payee_id"])
        me = (await api.get("/me", headers=token)).json()
        assert me["totals"] == [
            {
                "currency": "USD",
                "total_earned": {"amount": "6.00", "currency": "USD", "display": "$6.00"},
                "pending": {"amount": "0.00", "currency": "USD", "display": "$0.00"},
                "paid_this_year": {"amount": "6.00", "currency": "USD", "display": "$6.00"},
            }
        ]
        assert (await api.get(f"/payees/{failing['payee_id']}/earnings", headers=token)).status_code == 404
        assert (await api.get(f"/payees/{paid_payee['payee_id']}/earnings", headers=token)).status_code == 200
        assert (await api.post("/runs/preview", json={}, headers=token)).status_code == 403
        own_history = (await api.get("/payouts", params={"payee_id": failing["payee_id"]}, headers=token)).json()
        assert [p["payout_id"] for p in own_history["items"]] == [paid["payout_id"]]
        history = (
            await api.get("/payouts", params={"run_id": run["run_id"], "status": "Paid"}, headers=auth(service))
        ).json()
        assert [p["payout_id"] for p in history["items"]] == [paid["payout_id"]]
        export = await api.get("/payouts/export", params={"run_id": run["run_id"]}, headers=auth(service))
        exported = list(csv.DictReader(io.StringIO(export.text)))
        assert {(r["Payout"], r["Status"]) for r in exported} == {
            (paid["payout_id"], "Paid"),
            (failed["payout_id"], "Returned"),
        }

    async def test_invoices_are_checked_for_type_and_size_and_kept_for_the_payees_own_lines(self, api, service):
        payee = await new_payee(api, service)
        other = await new_payee(api, service)
        body = {
            "payee_id": payee["payee_id"],
            "amount": "10.00",
            "currency": "EUR",
            "earned_on": TODAY.isoformat(),
            "reason": "Bonus",
        }
        line = (await api.post("/earnings", json=body, headers=writer(service))).json()
        token = auth(service, "Payee", Role.PAYEE, payee_id=payee["payee_id"])
        stranger = auth(service, "Other", Role.PAYEE, payee_id=other["payee_id"])
        uploaded = await api.post(
            f"/earnings/{line['line_id']}/invoices", files={"file": ("inv.pdf", PDF)}, headers=token
        )
        assert uploaded.status_code == 201, uploaded.text
        text_file = await api.post(
            f"/earnings/{line['line_id']}/invoices", files={"file": ("inv.pdf", b"hello")}, headers=token
        )
        assert (text_file.status_code, text_file.json()["field"]) == (422, "file")
        huge = PDF + b"0" * service.settings.invoice_max_bytes
        assert (
            await api.post(f"/earnings/{line['line_id']}/invoices", files={"file": ("inv.pdf", huge)}, headers=token)
        ).status_code == 422
        assert (
            await api.post(f"/earnings/{line['line_id']}/invoices", files={"file": ("inv.pdf", PDF)}, headers=stranger)
        ).status_code == 404
        download = await api.get(f"/invoices/{uploaded.json()['invoice_id']}", headers=token)
        assert download.content == PDF
        listed = (await api.get(f"/payees/{payee['payee_id']}/earnings", headers=token)).json()
        assert listed["items"][0]["invoices"][0]["content_type"] == "application/pdf"

    async def test_a_rule_change_never_rewrites_history(self, infra, api, service):
        payee, channel = await agent_with_rule(api, service, percent="1")
        await earned(infra, api, service, payee, channel, ["100.00"])
        back = {
            "payee_id": payee["payee_id"],
            "kind": "percentage",
            "currency": "USD",
            "percent": "5",
            "effective_from": (TODAY - timedelta(days=1)).isoformat(),
        }
        refused = await api.post("/rules", json=back, headers=auth(service))
        assert (refused.status_code, refused.json()["field"]) == (422, "effective_from")
        later = {**back, "effective_from": (TODAY + timedelta(days=1)).isoformat()}
        assert (await api.post("/rules", json=later, headers=auth(service))).status_code == 201
        assert [r.amount for r in await line_rows(service, payee["payee_id"])] == [D("1.00")]
        rules = (await api.get("/rules", params={"payee_id": payee["payee_id"]}, headers=auth(service))).json()
        assert [(r["percent"], r["effective_to"]) for r in rules] == [
            ("1.0000", later["effective_from"]),
            ("5.0000", None),
        ]


async def _equals(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


def _type(record: Any) -> str:
    return str(json.loads(record.value)["type"])


class TestFilesAndCommands:
    async def test_payees_import_from_xlsx_reports_the_row_and_field(self, api, service):
        import xlsxwriter

        external = f"EXT-{tag()}"
        handle = io.BytesIO()
        book = xlsxwriter.Workbook(handle, {"in_memory": True})
        sheet = book.add_worksheet()
        header = ["external_id", "name", "payee_type", "country", "payout_currency", "method", "iban"]
        rows = [
            [external, f"Xlsx Partner {external}", "partner", "AT", "EUR", "bank", "AT611904300234573201"],
            [f"{external}-2", "No Currency", "partner", "AT", "ATS", "bank", "AT611904300234573201"],
        ]
        for number, row in enumerate([header, *rows]):
            sheet.write_row(number, 0, row)
        book.close()
        response = await api.post(
            "/payees/import", files={"file": ("payees.xlsx", handle.getvalue())}, headers=auth(service)
        )
        assert response.status_code == 422
        assert [(e["row"], e["field"], e["code"]) for e in response.json()["errors"]] == [
            (3, "payout_currency", "unknown_currency")
        ]

    async def test_a_bank_status_command_from_reconciliation_marks_a_bank_payout_returned_and_frees_its_lines(
        self, infra, api, service
    ):
        payee = await new_payee(api, service, method="bank", iban="NL91ABNA0417164300")
        body = {
            "payee_id": payee["payee_id"],
            "amount": "15.00",
            "currency": "EUR",
            "earned_on": TODAY.isoformat(),
            "reason": "Referral",
        }
        await api.post("/earnings", json=body, headers=writer(service))
        run = (await api.post("/runs", json={"payee_ids": [payee["payee_id"]]}, headers=writer(service))).json()
        await api.post(f"/runs/{run['run_id']}/approve", headers=auth(service, "Checker Chris"))
        executed = (await api.post(f"/runs/{run['run_id']}/execute", headers=auth(service, "Checker Chris"))).json()
        payout_id = executed["payouts"][0]["payout_id"]
        from shared.contracts.events import PayoutBankStatusReported

        command = PayoutBankStatusReported(
            payout_id=payout_id,
            status="Returned",
            reason="AC04 account closed",
            reported_by="reconciliation",
            occurred_at=datetime.now(UTC),
        )
        envelope = new_envelope("payout.bank_status_reported", source="reconciliation", subject=payout_id, data=command)
        await publish(infra.bootstrap_servers, Topic.PAYOUTS_COMMANDS, [envelope, envelope])
        await eventually(lambda: _equals(payout_status(api, service, payout_id, run["run_id"]), "Returned"))
        assert {r.status for r in await line_rows(service, payee["payee_id"])} == {"Open"}
        history = (await api.get("/payouts", params={"payee_id": payee["payee_id"]}, headers=auth(service))).json()
        assert history["items"][0]["failure_reason"] == "AC04 account closed"
