"""The payments service over HTTP, on the real database and broker: the seed's acceptance criteria 1-23, 31-35, 40, 45.

Each test seeds its own consumer through `billing.receivables.v1`, as the billing system would.
"""

from __future__ import annotations

import csv
import io
import uuid
import zipfile
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import event, select

from services.payments.storage import audit_log
from shared.auth import Role
from shared.contracts import Topic
from tests.conftest import Infra
from tests.support.helpers import eventually, read_topic, unique_account
from tests.support.payments import Api, bill_payment, payments_api, seeded, year_of

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
async def api(infra: Infra) -> AsyncIterator[Api]:
    async for running_api in payments_api(infra):
        yield running_api


# --- consumer look-up (AC 1, 2, 5-7) ---


async def test_ac01_consumer_search_by_name_or_account_is_case_insensitive_and_partial(api: Api) -> None:
    account, name = await seeded(api)
    for q in (name.split()[0].upper()[:4], name[-6:].lower(), account.lower()[2:9], account):
        response = await api.get("/consumers", q=q)
        assert response.status_code == 200
        assert account in [c["account_number"] for c in response.json()["consumers"]], q
    missing = await api.get("/consumers", q="no-such-consumer-anywhere")
    assert missing.json()["consumers"] == []
    too_short = await api.get("/consumers", q="z")
    assert too_short.status_code == 422 and "q" in str(too_short.json())


async def test_ac02_consumer_details_show_contact_details_and_current_balance(api: Api) -> None:
    account, name = await seeded(api, balance="245.75")
    details = await api.consumer(account)
    assert (details["name"], details["account_number"]) == (name, account)
    assert details["service_address"] == "123 Main Street, Cityville"
    assert (details["phone"], details["email"]) == ("(555) 123-4567", "john.doe@email.com")
    assert details["current_balance"] == {"amount": "245.75", "currency": "USD", "display": "$245.75"}

    await api.pay(bill_payment(account, "45.50"))
    after = await api.consumer(account)
    assert after["current_balance"]["display"] == "$200.25", "a payment comes off billing's reported balance"


async def test_without_a_reported_balance_the_balance_is_what_is_open(api: Api) -> None:
    account, _ = await seeded(api)
    details = await api.consumer(account)
    assert details["current_balance"]["amount"] == "600.25"  # 145.50 + 152.25 + 75 + 25 + 3 x 67.50


async def test_ac05_ac06_ac07_open_items_are_listed_by_type_and_paid_ones_drop_out(api: Api) -> None:
    account, _ = await seeded(api)
    details = await api.consumer(account)
    assert [b["item_reference"] for b in details["unpaid_bills"]] == [f"INV-{account}-1", f"INV-{account}-2"]
    assert [s["description"] for s in details["unpaid_services"]] == ["Late Fee", "Reconnection Fee"]
    assert [i["item_reference"] for i in details["unpaid_installments"]] == [f"PP-{account}/{n}" for n in (1, 2, 3)]

    await api.pay(bill_payment(account, "145.50"))
    partial = bill_payment(account, "30.00", payment_type="service", item_reference=f"SC-{account}-1")
    await api.pay(partial)
    details = await api.consumer(account)
    assert [b["item_reference"] for b in details["unpaid_bills"]] == [f"INV-{account}-2"]
    reconnection = next(s for s in details["unpaid_services"] if s["description"] == "Reconnection Fee")
    assert reconnection["outstanding"]["amount"] == "45.00", "a partly paid service stays open with what is left"


# --- settings (AC 3, 8, 16) ---


async def _put(api: Api, path: str, body: Any) -> httpx.Response:
    return await api.client.put(path, json=body, headers=api.auth(Role.ADMIN, "Ada Admin"))


async def test_ac03_walk_in_is_the_default_channel_and_configured_channels_are_offered(api: Api) -> None:
    channels = (await api.get("/settings/channels")).json()
    assert channels["default_channel"] == "Walk-in" and "Walk-in" in channels["channels"]
    account, _ = await seeded(api)
    posted = (await api.pay(bill_payment(account, "10.00"))).json()
    assert posted["payment_information"]["channel"] == "Walk-in"

    original = channels["channels"]
    try:
        assert (await _put(api, "/settings/channels", {"values": [*original, "Kiosk"]})).status_code == 200
        kiosk = await api.pay(bill_payment(account, "10.00", channel="Kiosk"))
        assert kiosk.status_code == 201 and kiosk.json()["payment_information"]["channel"] == "Kiosk"
    finally:
        await _put(api, "/settings/channels", {"values": original})
    refused = await api.pay(bill_payment(account, "10.00", channel="Kiosk"))
    assert refused.status_code == 422 and refused.json()["field"] == "channel"


async def test_ac08_payment_methods_come_from_settings(api: Api) -> None:
    methods = (await api.get("/settings/payment-methods")).json()["payment_methods"]
    assert {"Cash", "Credit Card", "Bank Transfer"} <= set(methods)
    account, _ = await seeded(api)
    refused = await api.pay(bill_payment(account, "10.00", method="Bitcoin"))
    assert refused.status_code == 422 and refused.json()["field"] == "method"
    try:
        assert (await _put(api, "/settings/payment-methods", {"values": [*methods, "Bitcoin"]})).status_code == 200
        assert (await api.pay(bill_payment(account, "10.00", method="Bitcoin"))).status_code == 201
    finally:
        await _put(api, "/settings/payment-methods", {"values": methods})


async def test_only_an_admin_changes_settings_and_every_change_is_audited(api: Api) -> None:
    methods = (await api.get("/settings/payment-methods")).json()["payment_methods"]
    forbidden = await api.client.put(
        "/settings/payment-methods", json={"values": ["Cash"]}, headers=api.auth(Role.BILLING_MANAGER)
    )
    assert forbidden.status_code == 403
    duplicate = await _put(api, "/settings/payment-methods", {"values": ["Cash", "cash"]})
    assert duplicate.status_code == 422 and duplicate.json()["field"] == "values"
    assert (await _put(api, "/settings/payment-methods", {"values": methods})).status_code == 200
    async with api.service.sessions() as session:
        entry = (
            await session.execute(
                select(audit_log).where(audit_log.c.action == "settings.changed").order_by(audit_log.c.at.desc())
            )
        ).first()
    assert entry is not None and entry.actor == "Ada Admin" and entry.after == methods


async def test_ac16_ac21_payment_ids_transaction_ids_and_receipt_numbers_follow_the_number_formats(api: Api) -> None:
    account, _ = await seeded(api)
    before = (await api.pay(bill_payment(account, "1.00"))).json()
    year = year_of(account)
    assert before["payment_id"].startswith(f"PAY-{year}-") and before["transaction_id"].startswith(f"TXN-{year}-")
    assert before["receipt_number"].startswith("R-")

    formats = (await api.get("/settings/number-formats")).json()["number_formats"]
    prefix = f"Q{uuid.uuid4().hex[:4].upper()}-"
    q_format = {"prefix": prefix, "with_year": True, "padding": 7, "start": 100}
    try:
        changed = await _put(api, "/settings/number-formats", {"receipt_number": q_format})
        assert changed.status_code == 200, changed.text
        after = (await api.pay(bill_payment(account, "1.00"))).json()
        assert (
            after["receipt_number"].startswith(f"{prefix}{year}-") and len(after["receipt_number"]) == len(prefix) + 12
        )
        back = await _put(api, "/settings/number-formats", {"receipt_number": q_format | {"start": 99}})
        assert back.status_code == 422 and back.json()["field"] == "receipt_number.start", "numbers never go back"
    finally:
        assert (await _put(api, "/settings/number-formats", formats)).status_code == 200


async def test_ac11_ac21_numbers_are_unique_across_many_payments(api: Api) -> None:
    account, _ = await seeded(api)
    posted = [(await api.pay(bill_payment(account, "1.00"))).json() for _ in range(20)]
    for field in ("payment_id", "transaction_id", "receipt_number"):
        assert len({p[field] for p in posted}) == 20, field


# --- recording (AC 4, 9, 10, 17, 19, 20, 22, 23, 40, 45) ---


async def test_ac04_ac40_each_type_pays_only_its_own_kind_of_item(api: Api) -> None:
    account, _ = await seeded(api)
    wrong = await api.pay(bill_payment(account, "10.00", payment_type="service"))  # an invoice is not a service
    assert wrong.status_code == 404 and wrong.json()["field"] == "item_reference"
    year = year_of(account)
    for payment_type, reference, details in (
        ("bill", f"INV-{account}-2", {"invoice_id": f"INV-{account}-2", "service_period": f"{year}-04"}),
        (
            "service",
            f"SC-{account}-1",
            {"service_name": "Reconnection Fee", "service_date": f"{year}-04-18"},
        ),
        ("installment", f"PP-{account}/2", {"plan_id": f"PP-{account}", "installment_number": 2}),
    ):
        body = bill_payment(account, "5.00", payment_type=payment_type, item_reference=reference)
        posted = (await api.pay(body)).json()
        assert posted["payment_details"]["payment_type"] == payment_type
        assert details.items() <= posted["payment_details"].items()


async def test_ac09_ac19_summary_shows_overpayment_exact_and_underpayment(api: Api) -> None:
    account, _ = await seeded(api)
    over = (await api.pay(bill_payment(account, "150.00"))).json()
    assert over["analysis"] == {"due": "145.50", "paid": "150.00", "difference": "4.50", "outcome": "over"}
    assert over["amount_analysis"]["due_label"] == "Billed amount"
    assert over["amount_analysis"]["outcome"] == "Over paid"
    assert over["amount_analysis"]["difference"]["display"] == "$4.50"

    exact = await api.pay(bill_payment(account, "152.25", item_reference=f"INV-{account}-2"))
    assert exact.json()["analysis"]["outcome"] == "exact"
    under = await api.pay(bill_payment(account, "50.00", payment_type="service", item_reference=f"SC-{account}-1"))
    assert under.json()["analysis"] == {"due": "75.00", "paid": "50.00", "difference": "-25.00", "outcome": "under"}
    assert under.json()["amount_analysis"]["due_label"] == "Service amount"

    events = [r for r in await read_topic(api.bootstrap, Topic.PAYMENTS_EVENTS) if r.key == account.encode()]
    overpaid = [e for e in events if b'"payment.overpaid"' in e.value]
    assert len(overpaid) == 1 and b'"4.50"' in overpaid[0].value, "only the overpayment tells credit notes"


async def test_ac10_notes_are_optional_and_limited_to_500_characters(api: Api) -> None:
    account, _ = await seeded(api)
    assert (await api.pay(bill_payment(account, "1.00"))).json()["notes"] is None
    kept = await api.pay(bill_payment(account, "1.00", notes="Customer paid in full"))
    assert kept.json()["notes"] == "Customer paid in full"
    too_long = await api.pay(bill_payment(account, "1.00", notes="x" * 501))
    assert too_long.status_code == 422 and too_long.json()["errors"][0]["field"] == "notes"


async def test_ac17_ac22_ac23_a_counter_payment_is_posted_verified_immediate_and_received_by_the_user(api: Api) -> None:
    account, name = await seeded(api)
    posted = (await api.pay(bill_payment(account, "145.50"))).json()
    assert (posted["status"], posted["verification"], posted["processing_time"]) == ("Posted", "Verified", "Immediate")
    assert posted["processing"] == {
        "received_by": "Jane Smith",
        "processing_time": "Immediate",
        "verification": "Verified",
        "verified_by": None,
        "can_verify": False,
    }
    assert posted["consumer"]["name"] == name and posted["consumer"]["service_address"] == "123 Main Street, Cityville"


async def test_ac20_cash_payment_shows_amount_received_and_change(api: Api) -> None:
    account, _ = await seeded(api)
    cash = await api.pay(bill_payment(account, "145.50", method="Cash", cash_received="150.00"))
    assert cash.json()["cash"] == {
        "amount_received": {"amount": "150.00", "currency": "USD", "display": "$150.00"},
        "change_given": {"amount": "4.50", "currency": "USD", "display": "$4.50"},
    }
    card = await api.pay(bill_payment(account, "1.00", item_reference=f"INV-{account}-2"))
    assert card.json()["cash"] is None
    short = await api.pay(bill_payment(account, "20.00", method="Cash", cash_received="10.00"))
    assert short.status_code == 422 and short.json()["field"] == "cash_received"


@pytest.mark.parametrize(
    "missing", ["account_number", "payment_type", "item_reference", "method", "amount", "payment_date"]
)
async def test_ac45_every_mandatory_field_is_checked_and_named(api: Api, missing: str) -> None:
    body = bill_payment(unique_account(), "10.00")
    del body[missing]
    response = await api.pay(body)
    assert response.status_code == 422
    assert missing in [e["field"] for e in response.json()["errors"]]


@pytest.mark.parametrize("amount", ["0", "-5.00", "10.001", "1e3", "1,000.00", 145.5, "NaN"])
async def test_ac45_amount_must_be_a_positive_decimal_string_with_at_most_two_decimals(api: Api, amount: Any) -> None:
    response = await api.pay(bill_payment("WU-NONE", amount))
    assert response.status_code == 422 and "amount" in [e["field"] for e in response.json()["errors"]]


async def test_an_amount_beyond_outstanding_plus_threshold_is_refused_and_changes_nothing(api: Api) -> None:
    account, _ = await seeded(api)
    threshold = Decimal((await api.get("/settings/overpayment-threshold")).json()["overpayment_threshold"])
    refused = await api.pay(bill_payment(account, f"{Decimal('145.50') + threshold + Decimal('0.01'):.2f}"))
    assert refused.status_code == 422 and refused.json()["field"] == "amount"
    details = await api.consumer(account)
    assert details["unpaid_bills"][0]["outstanding"]["amount"] == "145.50"
    assert details["payment_history"] == []


async def test_the_same_key_with_another_body_is_a_conflict(api: Api) -> None:
    account, _ = await seeded(api)
    key = f"conflict-{uuid.uuid4()}"
    assert (await api.pay(bill_payment(account, "1.00"), key=key)).status_code == 201
    assert (await api.pay(bill_payment(account, "2.00"), key=key)).status_code == 409


async def test_the_answer_to_a_new_payment_is_the_same_document_as_its_replay_and_its_details(api: Api) -> None:
    """INVARIANT: the answer built from the rows just written (no read back) is what a read of the committed
    payment gives, field for field: the retried request and `GET /payments/{id}` answer the same document."""
    account, _ = await seeded(api)
    body = bill_payment(account, "150.00", method="Cash", cash_received="200.00", notes="at the counter")
    key = f"same-{uuid.uuid4()}"
    first = await api.pay(body, key=key)
    assert first.status_code == 201, first.text
    replay = await api.pay(body, key=key)
    details = await api.get(f"/payments/{first.json()['payment_id']}")
    assert replay.status_code == 201 and details.status_code == 200
    assert first.json()["analysis"]["outcome"] == "over"  # an overpayment: the credit note is not made yet
    assert first.json() == replay.json() == details.json()


async def test_a_counter_payment_costs_a_fixed_handful_of_statements(api: Api) -> None:
    """Every statement is a round trip on the request's connection, and on a busy machine each one waits to be
    scheduled twice: the posting is kept to one per step, and the answer is built from what was written."""
    account, _ = await seeded(api)
    seen: list[tuple[int, str]] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append((id(conn), statement))

    engine = api.service.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        assert (await api.pay(bill_payment(account, "10.00"))).status_code == 201
    finally:
        event.remove(engine, "before_cursor_execute", count)
    request = next(conn for conn, statement in seen if statement.startswith("INSERT INTO payments.idempotency_keys"))
    statements = [statement for conn, statement in seen if conn == request]
    # Key claim, settings, the item locked with its account, its hold and the numbers (and, once an earlier test
    # has edited the number formats, the taken-number check), one write of item, account, payment, audit entry
    # and the key's result, the outbox; no read back. It was 12-13, then 10-11.
    assert len(statements) <= 6, statements
    writes = [s for s in statements if "INSERT INTO payments.payments" in s]
    assert len(writes) == 1 and all(
        table in writes[0] for table in ("receivables", "accounts", "audit_log", "idempotency_keys")
    ), writes
    assert not any("FROM payments.payments JOIN payments.accounts" in s for s in statements), "read back"


async def test_a_payment_to_an_unknown_account_or_item_names_the_field_and_writes_nothing(api: Api) -> None:
    """The item, its hold and the numbers come in one statement; when it finds no item, the refusal still says
    which part is wrong, and the key stays free: the corrected request under the same key is posted."""
    account, _ = await seeded(api)
    key = f"typo-{uuid.uuid4()}"
    ghost = await api.pay(bill_payment(f"{account}-X", item_reference=f"INV-{account}-1"), key=key)
    assert (ghost.status_code, ghost.json()["code"], ghost.json()["field"]) == (
        404,
        "unknown_account",
        "account_number",
    )
    wrong_item = await api.pay(bill_payment(account, item_reference=f"INV-{account}-99"), key=key)
    assert (wrong_item.status_code, wrong_item.json()["code"], wrong_item.json()["field"]) == (
        404,
        "unknown_item",
        "item_reference",
    )
    assert (await api.get("/payments", q=account)).json()["payments"] == []
    posted = await api.pay(bill_payment(account), key=key)
    assert posted.status_code == 201, posted.text
    assert [p["payment_id"] for p in (await api.get("/payments", q=account)).json()["payments"]] == [
        posted.json()["payment_id"]
    ]


# --- the list, search, filters, details (AC 31-35) ---


async def test_ac31_ac34_ac35_the_all_payments_tab_lists_table_fields_and_links_each_receipt(api: Api) -> None:
    account, name = await seeded(api)
    posted = (await api.pay(bill_payment(account, "12.34"))).json()
    page = (await api.get("/payments", q=account)).json()
    row = page["payments"][0]
    assert row == {
        "receipt_number": posted["receipt_number"],
        "payment_id": posted["payment_id"],
        "consumer": {"name": name, "account_number": account},
        "amount": {"amount": "12.34", "currency": "USD", "display": "$12.34"},
        "method": "Credit Card",
        "date": f"{year_of(account)}-04-20",
        "type": "bill",
        "status": "Posted",
        "links": {
            "details": f"/payments/{posted['receipt_number']}",
            "receipt": f"/receipts/{posted['receipt_number']}",
        },
    }
    opened = await api.get(row["links"]["details"])
    assert opened.status_code == 200 and opened.json()["payment_id"] == posted["payment_id"]


async def test_ac32_search_by_consumer_name_receipt_number_or_account_is_case_insensitive_and_partial(api: Api) -> None:
    account, name = await seeded(api)
    other, _ = await seeded(api)
    mine = (await api.pay(bill_payment(account, "3.00"))).json()
    await api.pay(bill_payment(other, "3.00"))
    for q in (name.lower(), name.upper()[10:], account[2:].lower(), mine["receipt_number"]):
        found = (await api.get("/payments", q=q)).json()["payments"]
        assert found and {p["consumer"]["account_number"] for p in found} == {account}, q
    assert (await api.get("/payments", q="100%_none")).json()["payments"] == [], "wildcards are taken literally"


async def test_ac33_filters_by_date_range_method_status_and_type(api: Api) -> None:
    account, _ = await seeded(api)
    year = year_of(account)
    await api.pay(bill_payment(account, "1.00", payment_date=f"{year}-04-01", method="Cash"))
    await api.pay(bill_payment(account, "2.00", payment_date=f"{year}-04-10"))
    await api.pay(
        bill_payment(
            account, "3.00", payment_date=f"{year}-04-20", payment_type="service", item_reference=f"SC-{account}-1"
        )
    )

    async def amounts(**params: Any) -> list[str]:
        rows = (await api.get("/payments", q=account, **params)).json()["payments"]
        return sorted(r["amount"]["amount"] for r in rows)

    assert await amounts(date_from=f"{year}-04-05", date_to=f"{year}-04-15") == ["2.00"]
    assert await amounts(method="Cash") == ["1.00"]
    assert await amounts(type="service") == ["3.00"]
    assert await amounts(status="Posted") == ["1.00", "2.00", "3.00"]
    assert await amounts(status="Cancelled") == []
    bad = await api.get("/payments", date_from="2025-05-01", date_to="2025-04-01")
    assert bad.status_code == 422 and bad.json()["field"] == "date_from"


async def test_keyset_paging_walks_every_payment_once_in_order(api: Api) -> None:
    account, _ = await seeded(api)
    for cents in range(1, 8):
        await api.pay(bill_payment(account, f"0.{cents:02d}"))
    for sort, expected in (
        ("-date", [f"0.{c:02d}" for c in range(7, 0, -1)]),
        ("amount", [f"0.{c:02d}" for c in range(1, 8)]),
    ):
        seen: list[str] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"q": account, "limit": 3, "sort": sort} | ({"cursor": cursor} if cursor else {})
            page = (await api.get("/payments", **params)).json()
            seen += [p["amount"]["amount"] for p in page["payments"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == expected, sort
    garbage = await api.get("/payments", cursor="not-a-cursor")
    assert garbage.status_code == 422 and garbage.json()["field"] == "cursor"


async def test_export_streams_the_filtered_list_as_csv_and_xlsx(api: Api) -> None:
    account, name = await seeded(api)
    for amount in ("1.00", "2.50"):
        await api.pay(bill_payment(account, amount))
    forbidden = await api.get("/payments/export", q=account)
    assert forbidden.status_code == 403, "export is a billing manager's tool"

    response = await api.get("/payments/export", Role.BILLING_MANAGER, q=account, format="csv")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert sorted(r["Amount"] for r in rows) == ["1.00", "2.50"] and {r["Consumer"] for r in rows} == {name}

    xlsx = await api.get("/payments/export", Role.BILLING_MANAGER, q=account, format="xlsx")
    assert xlsx.status_code == 200
    sheet = zipfile.ZipFile(io.BytesIO(xlsx.content)).read("xl/worksheets/sheet1.xml").decode()
    assert sheet.count("<row ") == 3 and sheet.count(account) == 2  # a header and two payments


# --- verify and cancel ---


async def test_cancel_is_admin_only_needs_a_reason_reverses_the_allocation_and_tells_everyone(api: Api) -> None:
    account, _ = await seeded(api)
    posted = (await api.pay(bill_payment(account, "145.50"))).json()
    path = f"/payments/{posted['receipt_number']}/cancel"
    clerk = await api.client.post(path, json={"reason": "keyed twice"}, headers=api.auth())
    assert clerk.status_code == 403
    no_reason = await api.client.post(path, json={"reason": ""}, headers=api.auth(Role.ADMIN))
    assert no_reason.status_code == 422

    cancelled = await api.client.post(path, json={"reason": "keyed twice"}, headers=api.auth(Role.ADMIN, "Ada Admin"))
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "Cancelled"
    assert cancelled.json()["cancellation"]["cancelled_by"] == "Ada Admin"
    details = await api.consumer(account)
    assert details["unpaid_bills"][0]["outstanding"]["amount"] == "145.50", "the bill is open again"
    again = await api.client.post(path, json={"reason": "again"}, headers=api.auth(Role.ADMIN))
    assert again.status_code == 422 and again.json()["code"] == "not_cancellable"

    async def cancellation_published() -> bool:
        records = await read_topic(api.bootstrap, Topic.PAYMENTS_EVENTS)
        return any(r.key == account.encode() and b'"payment.cancelled"' in r.value for r in records)

    await eventually(cancellation_published)


async def test_a_counter_payment_cannot_be_verified_and_needs_an_approver(api: Api) -> None:
    account, _ = await seeded(api)
    posted = (await api.pay(bill_payment(account, "1.00"))).json()
    path = f"/payments/{posted['payment_id']}/verify"
    assert (await api.client.post(path, headers=api.auth())).status_code == 403
    refused = await api.client.post(path, headers=api.auth(Role.BILLING_MANAGER))
    assert refused.status_code == 422 and refused.json()["code"] == "not_online"


async def test_ac13_ac14_ac15_a_posted_payment_offers_its_receipt_another_payment_and_the_dashboard(api: Api) -> None:
    account, _ = await seeded(api)
    posted = (await api.pay(bill_payment(account, "5.00"))).json()
    receipt = posted["receipt_number"]
    assert posted["links"] == {
        "self": f"/payments/{posted['payment_id']}",
        "receipt_print": f"/receipts/{receipt}",
        "receipt_pdf": f"/receipts/{receipt}.pdf",
        "record_another": "/payments",
        "dashboard": "/",
    }
    again = await api.pay(bill_payment(account, "5.00"))  # "record another payment" is the same form again
    assert again.status_code == 201 and again.json()["receipt_number"] != receipt
