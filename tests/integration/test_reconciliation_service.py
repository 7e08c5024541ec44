"""The reconciliation service on the real broker and database, over HTTP: statement imports in every format,
idempotent and validated; counter deposits, transfers and Stripe payouts matched (three ways for Stripe); pushed
bank lines; till close; the exception queue worked to zero; the report export."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from services.reconciliation.app import create_service
from services.reconciliation.settings import ReconciliationSettings
from services.reconciliation.storage import bank_lines, expected_items, statements
from shared.auth import Role, mint_token
from shared.contracts import Envelope, Topic, new_envelope
from shared.contracts.events import BankStatementLineReceived, Money
from shared.service import Service
from tests.conftest import Infra
from tests.support.helpers import counter_payment, eventually, own_broker_and_database, publish, read_topic
from tests.support.reconciliation import Charge, fixture, payout_listed

pytestmark = pytest.mark.kafka
D = Decimal
SECRET = "reconciliation-test-secret-long-enough-for-hs256"


@dataclass
class Recon:
    service: Service
    client: httpx.AsyncClient
    bootstrap: str

    def auth(self, user: str = "Maria Manager", role: Role = Role.BILLING_MANAGER) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint_token(SECRET, user=user, roles=[role])}"}

    def writer(self, user: str = "Maria Manager") -> dict[str, str]:
        return self.auth(user) | {"Idempotency-Key": f"key-{uuid.uuid4().hex}"}

    async def upload(self, name: str, content: bytes, **form: str) -> httpx.Response:
        return await self.client.post("/statements", files={"file": (name, content)}, data=form, headers=self.auth())

    async def count(self, table: Any) -> int:
        async with self.service.sessions() as session:
            return int((await session.execute(select(func.count()).select_from(table))).scalar_one())

    async def items(self, group: str) -> list[Any]:
        async with self.service.sessions() as session:
            return list(await session.execute(select(expected_items).where(expected_items.c.group_key == group)))


@pytest.fixture(scope="module")
async def recon(infra: Infra) -> AsyncIterator[Recon]:
    async with own_broker_and_database(infra.database_url, infra.workdir, "recon", ("reconciliation",)) as (url, kafka):
        settings = ReconciliationSettings(
            database_url=url, kafka_bootstrap_servers=kafka, jwt_secret=SECRET, outbox_poll_seconds=0.05
        )
        service = create_service(settings)
        await service.start()
        try:
            transport = httpx.ASGITransport(app=service.http)
            async with httpx.AsyncClient(transport=transport, base_url="http://recon", timeout=60) as client:
                yield Recon(service, client, kafka)
        finally:
            await service.stop()


def fixture_payments() -> list[Envelope]:
    """What the fixtures' statements should meet: a day's cash (300.00 at Walk-in), two transfers naming their
    invoices, and a Stripe payout of three charges (282.23 net of fees)."""
    cash = [
        counter_payment(
            "A-1", receipt_number=f"R-FX-{n}", amount=a, due=a, item_reference=f"INV-FX-{n}", day=date(2025, 3, 31)
        )
        for n, a in enumerate(("120.00", "100.00", "80.00"))
    ]
    transfers = [
        counter_payment(
            "A-2",
            receipt_number=f"R-TR-{n}",
            amount=a,
            due=a,
            item_reference=ref,
            method="Bank Transfer",
            day=date(2025, 3, 31),
        )
        for n, (a, ref) in enumerate((("100.00", "INV-2025-001234"), ("45.50", "INV-2025-001240")))
    ]
    payout = payout_listed(
        "po_1PaydeskTest0001",
        date(2025, 4, 2),
        [
            Charge("pi_fx_1", "A-3", D("100.00"), D("3.20")),
            Charge("pi_fx_2", "A-3", D("95.00"), D("3.06")),
            Charge("pi_fx_3", "A-3", D("96.50"), D("3.01")),
        ],
    )
    return [*cash, *transfers, payout]


async def test_a_multi_day_camt053_is_matched_deposit_transfers_fee_and_payout(recon: Recon) -> None:
    """The fixture's two days: every line matched by the rule that fits it, and the payout three ways."""
    posted = fixture_payments()
    await publish(recon.bootstrap, Topic.PAYMENTS_EVENTS, posted[:-1])
    await publish(recon.bootstrap, Topic.GATEWAY_EVENTS, posted[-1:])
    await eventually(lambda: _has(recon, "po_1PaydeskTest0001", 3))
    await eventually(lambda: _has(recon, "DEP/Walk-in/2025-03-31/Cash", 3))

    response = await recon.upload("statement.xml", fixture("camt053_two_days.xml"))
    assert response.status_code == 201, response.text
    body = response.json()
    assert len(body["statement_ids"]) == 2 and body["already_imported"] is False

    day_one = (await recon.client.get(f"/statements/{body['statement_ids'][0]}", headers=recon.auth())).json()
    rules = {line["bank_reference"] + "/" + line["amount"]["amount"]: line["rule"] for line in day_one["lines"]}
    assert rules == {
        "BK-0401-0001/300.00": "group_by_amount_date",
        "BK-0401-0002/100.00": "reference_exact",
        "BK-0401-0002/45.50": "reference_exact",
        "BK-0401-0003/-20.00": "bank_fee",
    }
    day_two = (await recon.client.get(f"/statements/{body['statement_ids'][1]}", headers=recon.auth())).json()
    [payout_line] = day_two["lines"]
    assert payout_line["rule"] == "group_by_reference" and payout_line["status"] == "matched"
    assert payout_line["differences"] == {"amount": "0.00", "days": "0", "gateway_fees": "9.27", "gross": "291.50"}
    settled = (await recon.client.get("/settlements/PAY-R-FX-0", headers=recon.auth())).json()
    assert settled["settlement_status"] == "Settled"


async def test_a_camt054_notification_is_imported_and_its_transfers_matched_by_reference(recon: Recon) -> None:
    """camt.054 through the real import path: the batch booking's details, a structured reference and a second
    notification each meet their transfer; the bank's charge is recognised; the same file again changes nothing."""
    transfers = [
        counter_payment(
            "A-54",
            receipt_number=f"R-N54-{n}",
            amount=amount,
            due=amount,
            item_reference=f"INV-2025-00540{n}",
            method="Bank Transfer",
            day=date(2025, 4, 9),
        )
        for n, amount in ((1, "80.00"), (2, "50.00"), (3, "40.10"), (4, "61.25"))
    ]
    await publish(recon.bootstrap, Topic.PAYMENTS_EVENTS, transfers)

    async def expected() -> bool:
        async with recon.service.sessions() as session:
            found = await session.execute(select(func.count()).where(expected_items.c.payment_id.like("PAY-R-N54-%")))
            return int(found.scalar_one()) == 4

    await eventually(expected)
    response = await recon.upload("notification.xml", fixture("camt054_notifications.xml"))
    assert response.status_code == 201, response.text
    first_id, second_id = response.json()["statement_ids"]
    lines: dict[str, dict[str, Any]] = {}
    for statement_id in (first_id, second_id):
        shown = (await recon.client.get(f"/statements/{statement_id}", headers=recon.auth())).json()
        lines |= {line["bank_reference"]: line for line in shown["lines"]}
    assert {ref: (line["rule"], line["status"]) for ref, line in lines.items()} == {
        "BK-N-0410-01-A": ("reference_exact", "matched"),
        "BK-N-0410-01-B": ("reference_exact", "matched"),
        "BK-N-0410-02": ("reference_exact", "matched"),
        "BK-N-0410-03": (None, "excepted"),  # a reversal of a credit nobody here expected: a case for staff
        "BK-N-0410-05": ("bank_fee", "matched"),
        "BK-N-0410-06": ("reference_exact", "matched"),
    }
    settled = (await recon.client.get("/settlements/PAY-R-N54-3", headers=recon.auth())).json()
    assert settled["settlement_status"] == "Settled"
    again = await recon.upload("renamed.xml", fixture("camt054_notifications.xml"))
    assert again.status_code == 200 and again.json()["already_imported"] is True


async def _has(recon: Recon, group: str, count: int) -> bool:
    return len(await recon.items(group)) == count


async def test_importing_the_same_statement_twice_changes_nothing(recon: Recon) -> None:
    """INVARIANT: a statement is imported once, whether the same file or the same statement comes again."""
    content = fixture("mt940_with_86.sta")
    first = await recon.upload("first.sta", content)
    assert first.status_code == 201, first.text
    lines, stmts = await recon.count(bank_lines), await recon.count(statements)
    again = await recon.upload("again.sta", content)
    assert again.status_code == 200 and again.json()["already_imported"] is True
    # The same statement in another file (a trailing newline more): recognised by its id, not only its bytes.
    renamed = await recon.upload("copy.sta", content + b"\n")
    assert renamed.status_code == 200 and renamed.json()["statement_ids"] == first.json()["statement_ids"]
    assert (await recon.count(bank_lines), await recon.count(statements)) == (lines, stmts)


async def test_a_statement_that_does_not_add_up_is_refused_naming_the_line_and_nothing_is_imported(
    recon: Recon,
) -> None:
    """INVARIANT: nothing of a bad file is imported; the report names the line and field that break it."""
    bad = fixture("bai2_two_accounts.bai").replace(b"015,128223", b"015,128224").replace(b"49,256446", b"49,256447")
    bad = bad.replace(b"98,1325546", b"98,1325547").replace(b"99,1325546", b"99,1325547")
    lines = await recon.count(bank_lines)
    response = await recon.upload("bad.bai", bad)
    assert response.status_code == 422, response.text
    [problem] = response.json()["problems"]
    assert (problem["line"], problem["field"]) == (8, "closing_balance")
    assert "difference 0.01" in problem["detail"]
    assert await recon.count(bank_lines) == lines
    good = await recon.upload("good.bai", fixture("bai2_two_accounts.bai"))
    assert good.status_code == 201 and len(good.json()["statement_ids"]) == 2


async def test_a_csv_statement_is_read_through_its_saved_column_mapping(recon: Recon) -> None:
    mapping = {"date": "Date", "reference": "Reference", "credit": "Credit", "debit": "Debit", "text": "Details"}
    saved = await recon.client.put("/statement-mappings/citybank-csv", json=mapping, headers=recon.auth())
    assert saved.status_code == 200, saved.text
    content = b"Date,Reference,Details,Credit,Debit\n2025-04-03,INV-CSV-1,transfer,50.00,\n2025-04-03,,fee,,2.50\n"
    form = {"mapping": "citybank-csv", "account": "CSV-ACCT", "currency": "USD"}
    wrong = await recon.upload("s.csv", content, **form, opening_balance="0.00", closing_balance="48.00")
    assert wrong.status_code == 422 and wrong.json()["problems"][0]["field"] == "closing_balance"
    right = await recon.upload("s.csv", content, **form, opening_balance="0.00", closing_balance="47.50")
    assert right.status_code == 201, right.text


async def test_a_line_a_bank_pushes_twice_is_stored_once(recon: Recon) -> None:
    data = BankStatementLineReceived(
        account="PUSH-ACCT",
        bank_line_id="BK-PUSH-1",
        booking_date=date(2025, 4, 3),
        amount=Money(amount=D("12.34")),
        reference="INV-PUSH-1",
    )
    envelopes = [new_envelope("bank.statement_line_received", source="citybank", subject="PUSH-ACCT", data=data)]
    envelopes.append(new_envelope("bank.statement_line_received", source="citybank", subject="PUSH-ACCT", data=data))
    before = await recon.count(bank_lines)
    await publish(recon.bootstrap, Topic.RECONCILIATION_COMMANDS, envelopes)
    await eventually(lambda: _count_is(recon, before + 1))


async def _count_is(recon: Recon, n: int) -> bool:
    return await recon.count(bank_lines) == n


async def test_the_exception_queue_is_worked_to_zero_and_every_action_is_audited(recon: Recon) -> None:
    run = await recon.client.post("/reconciliation/run", headers=recon.auth())
    assert run.status_code == 200
    queue = (await recon.client.get("/exceptions", params={"limit": 200}, headers=recon.auth())).json()["items"]
    assert queue, "the MT940/BAI2/CSV/pushed lines that match nothing are in the queue"
    assert all(e["age"] == "0-1d" for e in queue)
    fees = [e for e in queue if e["amount"]["amount"].startswith("-")]
    first, *rest = [e for e in queue if e not in fees]
    assigned = await recon.client.post(
        f"/exceptions/{first['exception_id']}/assign", json={"owner": "Oscar Owner"}, headers=recon.auth()
    )
    assert assigned.json()["owner"] == "Oscar Owner"
    mine = (await recon.client.get("/exceptions", params={"owner": "Oscar Owner"}, headers=recon.auth())).json()
    assert [e["exception_id"] for e in mine["items"]] == [first["exception_id"]]

    # An adjustment waits for a second person; the requester may not approve it.
    asked = await recon.client.post(
        f"/exceptions/{first['exception_id']}/resolve",
        json={"action": "adjustment_requested", "reason": "write off duplicate deposit"},
        headers=recon.writer(),
    )
    assert asked.status_code == 200, asked.text
    history = (await recon.client.get(f"/exceptions/{first['exception_id']}", headers=recon.auth())).json()["history"]
    approval_id = history[-1]["after"]["approval_id"]
    own = await recon.client.post(f"/approvals/{approval_id}/approve", json={}, headers=recon.auth())
    assert own.status_code == 403
    other = await recon.client.post(f"/approvals/{approval_id}/approve", json={}, headers=recon.auth("Carl Checker"))
    assert other.status_code == 200 and other.json()["status"] == "Approved"

    for exception in fees:
        done = await recon.client.post(
            f"/exceptions/{exception['exception_id']}/resolve", json={"action": "mark_as_fee"}, headers=recon.writer()
        )
        assert done.status_code == 200, done.text
    for exception in rest:
        no_reason = await recon.client.post(
            f"/exceptions/{exception['exception_id']}/resolve", json={"action": "ignore"}, headers=recon.writer()
        )
        assert no_reason.status_code == 422 and no_reason.json()["code"] == "reason_required"
        done = await recon.client.post(
            f"/exceptions/{exception['exception_id']}/resolve",
            json={"action": "ignore", "reason": "test statement line, not ours"},
            headers=recon.writer(),
        )
        assert done.status_code == 200 and done.json()["resolution"] == "ignore"
    left = (await recon.client.get("/exceptions", headers=recon.auth())).json()["items"]
    assert left == []
    summary = (await recon.client.get("/reconciliation/summary", headers=recon.auth())).json()
    assert summary["open_exceptions_by_age"] == {}


async def test_a_split_line_matches_its_parts_and_a_fee(recon: Recon) -> None:
    day = date(2025, 4, 5)
    posted = counter_payment(
        "A-9",
        receipt_number="R-SPLIT",
        amount="70.00",
        due="70.00",
        item_reference="INV-S",
        method="Bank Transfer",
        day=day,
    )
    await publish(recon.bootstrap, Topic.PAYMENTS_EVENTS, [posted])
    await eventually(lambda: _item_exists(recon, "pay:PAY-R-SPLIT"))
    content = b"Date,Reference,Details,Credit,Debit\n2025-04-05,LUMP,lump sum,75.00,\n"
    form = {"mapping": "citybank-csv", "account": "CSV-SPLIT", "currency": "USD"}
    assert (
        await recon.upload("split.csv", content, **form, opening_balance="0", closing_balance="75.00")
    ).status_code == 201
    [exception] = [
        e
        for e in (await recon.client.get("/exceptions", headers=recon.auth())).json()["items"]
        if e["amount"]["amount"] == "75.00"
    ]
    split = await recon.client.post(
        f"/exceptions/{exception['exception_id']}/resolve",
        json={
            "action": "split",
            "parts": [{"amount": "70.00", "item_ids": ["pay:PAY-R-SPLIT"]}, {"amount": "5.00", "fee": True}],
        },
        headers=recon.writer(),
    )
    assert split.status_code == 200, split.text
    settled = (await recon.client.get("/settlements/PAY-R-SPLIT", headers=recon.auth())).json()
    assert settled["settlement_status"] == "Settled"


async def _item_exists(recon: Recon, item_id: str) -> bool:
    async with recon.service.sessions() as session:
        return (
            await session.execute(select(expected_items).where(expected_items.c.item_id == item_id))
        ).first() is not None


async def test_the_report_export_lists_each_line_with_its_match_and_tracks_report_generated(recon: Recon) -> None:
    response = await recon.client.get(
        "/reports/reconciliation", params={"date_from": "2025-04-01", "date_to": "2025-04-30"}, headers=recon.auth()
    )
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert {"BK-0401-0003", "BK-0402-0001"} <= {r["Bank reference"] for r in rows}
    assert any(r["Rule"] == "group_by_reference" for r in rows)
    xlsx = await recon.client.get(
        "/reports/reconciliation",
        params={"date_from": "2025-04-01", "date_to": "2025-04-30", "format": "xlsx"},
        headers=recon.auth(),
    )
    assert xlsx.content[:2] == b"PK"

    async def tracked() -> bool:
        records = await read_topic(recon.bootstrap, Topic.ANALYTICS_EVENTS)
        return any(b"report_generated" in (r.value or b"") for r in records)

    await eventually(tracked)
