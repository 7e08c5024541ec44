"""The collections service on the real broker and database, on a simulated clock: a plan through on time, late
within grace, missed, broken, re-aged and completed; exactly once under redelivery and a restarted scheduler;
bad input; approvals; the worklist; activities, promises and alerts; reports."""

from __future__ import annotations

import asyncio
import csv
import io
import random
import uuid
from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from paydesk.cli import app as cli
from services.collections import compliance
from services.collections.storage import arrangements
from shared.auth import Role
from shared.contracts import Topic
from tests.conftest import Infra
from tests.support.collections import EXECUTIVE, MANAGER, Desk, at, collections_desk
from tests.support.helpers import eventually, publish, read_topic, settled, unique_account

pytestmark = pytest.mark.kafka
D = Decimal


@pytest.fixture(scope="module")
async def desk(infra: Infra) -> AsyncIterator[Desk]:
    async for created in collections_desk(infra):
        yield created


def year() -> int:
    """A year of its own for each test, far from real data, so passes for other tests' dates do not interfere."""
    return random.randrange(2300, 2900)


async def plan(desk: Desk, account: str, **body: Any) -> dict[str, Any]:
    response = await desk.post("/arrangements", {"account_number": account, **body})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def types_of(desk: Desk, account: str) -> list[str]:
    return [e.type for e in await desk.events(account)]


async def wait_types(desk: Desk, account: str, expected: list[str]) -> list[str]:
    """Waits until the account's events on collections.events.v1 are exactly `expected`, in order."""

    async def check() -> bool:
        return [t for t in await types_of(desk, account) if not t.startswith("approval.")] == expected

    try:
        await eventually(check)
    except AssertionError:
        raise AssertionError(f"events {await types_of(desk, account)} != {expected}") from None
    return expected


async def paid_installments(desk: Desk, arrangement_id: str, count: int) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        found = await desk.arrangement(arrangement_id)
        paid = [i for i in found["installments"] if i["paid"]["amount"] == i["amount"]["amount"]]
        return found if len(paid) >= count else None

    return await eventually(check)


class TestSimulatedClock:
    async def test_a_plan_through_on_time_late_missed_broken_reaged_completed(self, desk: Desk) -> None:
        """INVARIANT: at every step the events, the hold and the worklist tell the same story, each event once."""
        y = year()
        account = unique_account()
        desk.set_today(date(y, 3, 1))
        await desk.delinquent(
            account,
            "Orla Delinquent",
            [(f"INV-{account}-1", "300.00", date(y, 1, 15)), (f"INV-{account}-2", "300.00", date(y, 2, 15))],
        )
        row = await desk.row(account)
        assert row is not None
        assert (row["amount_overdue"]["amount"], row["days_overdue"], row["aging_bucket"]) == (
            "600.00",
            (date(y, 3, 1) - date(y, 1, 15)).days,
            "31-60",
        )
        assert (await desk.disconnection(account))["state"] == "clear"

        created = await plan(
            desk, account, installments=4, frequency="monthly", first_due_date=f"{y}-03-10", grace_days=5
        )
        arrangement_id = created["arrangement_id"]
        assert created["status"] == "Active"
        assert [i["amount"]["amount"] for i in created["installments"]] == ["150.00"] * 4
        assert [i["due_date"] for i in created["installments"]] == [f"{y}-0{m}-10" for m in (3, 4, 5, 6)]
        await wait_types(desk, account, ["arrangement.created", "disconnection.hold_placed"])
        row = await desk.row(account)
        assert row is not None
        assert (row["has_plan"], row["plan_status"], row["amount_overdue"]["amount"]) == (True, "Active", "0.00")
        answer = await desk.disconnection(account)
        assert (answer["state"], answer["may_disconnect"]) == ("hold", False)
        assert arrangement_id in answer["reason"]
        billed = [r for r in await read_topic(desk.bootstrap, Topic.BILLING_RECEIVABLES) if r.key == account.encode()]
        assert any(b"installment_plan.created" in r.value and arrangement_id.encode() in r.value for r in billed)

        # 1. On time.
        desk.set_today(date(y, 3, 10))
        await desk.pay(account, f"{arrangement_id}/1", "150.00", date(y, 3, 10))
        found = await paid_installments(desk, arrangement_id, 1)
        assert found["installments"][0]["status"] == "on_time"
        applied = (await desk.events(account, "arrangement.payment_applied"))[0]
        assert applied.data["compliance"] == "on_time"

        # 2. Late within grace: past due the worklist shows it, the pass marks nothing, then it is paid.
        desk.set_today(date(y, 4, 12))
        await desk.service.check_compliance()
        row = await desk.row(account)
        assert row is not None
        assert (row["amount_overdue"]["amount"], row["days_overdue"]) == ("150.00", 2)
        await desk.pay(account, f"{arrangement_id}/2", "150.00", date(y, 4, 13))
        found = await paid_installments(desk, arrangement_id, 2)
        assert found["installments"][1]["status"] == "late_within_grace"
        await wait_types(
            desk,
            account,
            [
                "arrangement.created",
                "disconnection.hold_placed",
                "arrangement.payment_applied",
                "arrangement.payment_applied",
            ],
        )

        # 3. Missed: one `installment.missed` and an alert, however many passes run; the hold stays.
        await desk.service.check_compliance(at(date(y, 5, 15)))
        assert await desk.events(account, "installment.missed") == []
        for _ in range(2):
            await desk.service.check_compliance(at(date(y, 5, 16)))
        missed = await eventually(lambda: desk.events(account, "installment.missed"))
        assert [(m.data["item_reference"], m.data["missed_count"]) for m in missed] == [(f"{arrangement_id}/3", 1)]
        alerts = (await desk.get("/alerts")).json()["items"]
        assert any(a["arrangement_id"] == arrangement_id and a["kind"] == "installment_missed" for a in alerts)
        assert (await desk.disconnection(account))["state"] == "hold"

        # 4. Broken after the second miss: the hold is released, the account is eligible, arrears are back.
        await desk.service.check_compliance(at(date(y, 6, 16)))
        await wait_types(
            desk,
            account,
            [
                "arrangement.created",
                "disconnection.hold_placed",
                "arrangement.payment_applied",
                "arrangement.payment_applied",
                "installment.missed",
                "collections.alert_raised",
                "installment.missed",
                "collections.alert_raised",
                "arrangement.broken",
                "collections.alert_raised",
                "disconnection.hold_released",
                "disconnection.eligible",
            ],
        )
        assert (await desk.arrangement(arrangement_id))["status"] == "Broken"
        row = await desk.row(account)
        assert row is not None
        assert (row["plan_status"], row["amount_overdue"]["amount"], row["disconnection"]) == (
            "Broken",
            "300.00",
            "eligible",
        )
        answer = await desk.disconnection(account)
        assert answer["may_disconnect"] is True
        assert "broken" in answer["reason"]

        # 5. Re-aged into a settlement plan: the old one keeps its history, the hold comes back.
        response = await desk.post(
            f"/arrangements/{arrangement_id}/reage",
            {"installments": 2, "frequency": "fortnightly", "first_due_date": f"{y}-06-20", "reason": "job found"},
        )
        assert response.status_code == 201, response.text
        settlement = response.json()
        assert (settlement["reaged_from"], settlement["total"]["amount"]) == (arrangement_id, "300.00")
        assert (await desk.arrangement(arrangement_id))["status"] == "Re-aged"
        history = (await desk.get(f"/arrangements/{arrangement_id}/history")).json()
        assert {"arrangement.requested", "arrangement.activated", "arrangement.broken", "arrangement.reaged"} <= {
            h["action"] for h in history
        }
        assert (await desk.disconnection(account))["state"] == "hold"

        # 6. Completed, paid early: both installments at once.
        await desk.pay(account, f"{settlement['arrangement_id']}/1", "300.00", date(y, 6, 18))
        await paid_installments(desk, settlement["arrangement_id"], 2)
        tail = await eventually(lambda: desk.events(account, "arrangement.completed"))
        assert len(tail) == 1
        await eventually(lambda: _state_is(desk, account, "clear"))
        row = await desk.row(account)
        assert row is None or row["amount_owed"]["amount"] == "0.00"
        all_types = await types_of(desk, account)
        assert all_types.count("disconnection.hold_placed") == 2
        assert all_types.count("disconnection.hold_released") == 2
        assert all_types.count("installment.missed") == 2


async def _state_is(desk: Desk, account: str, state: str) -> bool:
    return bool((await desk.disconnection(account))["state"] == state)


class TestExactlyOnce:
    async def test_a_redelivered_or_reannounced_payment_is_applied_once(self, desk: Desk) -> None:
        """INVARIANT: a payment reaches an installment once, whatever is redelivered or announced again."""
        y = year()
        account = unique_account()
        desk.set_today(date(y, 3, 1))
        await desk.delinquent(account, "Dup Licate", [(f"INV-{account}", "200.00", date(y, 2, 1))])
        created = await plan(desk, account, installments=2, frequency="weekly", first_due_date=f"{y}-03-02")
        posted = await desk.pay(
            account, f"{created['arrangement_id']}/1", "100.00", date(y, 3, 2), receipt=f"R-{account}"
        )
        again = posted.model_copy(update={"id": uuid.uuid4()})
        await publish(desk.bootstrap, Topic.PAYMENTS_EVENTS, [posted, again, posted])
        await paid_installments(desk, created["arrangement_id"], 1)
        await settled(desk.service)  # every duplicate consumed, and whatever it staged published
        found = await desk.arrangement(created["arrangement_id"])
        assert (found["paid"]["amount"], found["installments"][1]["paid"]["amount"]) == ("100.00", "0.00")
        assert len(await desk.events(account, "arrangement.payment_applied")) == 1
        assert len(await desk.events(account, "disconnection.hold_placed")) == 1

    async def test_a_scheduler_restarted_mid_run_stages_no_second_miss(
        self, desk: Desk, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """INVARIANT: a pass that dies half-way and runs again (or runs twice at once) misses each installment once."""
        y = year()
        accounts = [unique_account() for _ in range(3)]
        desk.set_today(date(y, 3, 1))
        ids = []
        for account in accounts:
            await desk.delinquent(account, "Restart Case", [(f"INV-{account}", "100.00", date(y, 2, 1))])
            ids.append(
                (await plan(desk, account, installments=2, frequency="monthly", first_due_date=f"{y}-03-05"))[
                    "arrangement_id"
                ]
            )
        real = compliance.check_arrangement
        calls = 0

        async def dies_after_first(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise RuntimeError("killed mid-run")
            return await real(*args, **kwargs)

        monkeypatch.setattr(compliance, "check_arrangement", dies_after_first)
        with pytest.raises(RuntimeError):
            await desk.service.check_compliance(at(date(y, 3, 7)))
        monkeypatch.setattr(compliance, "check_arrangement", real)
        await asyncio.gather(
            compliance.run_compliance_pass(desk.service.sessions, desk.service.desk),
            compliance.run_compliance_pass(desk.service.sessions, desk.service.desk),
        )
        await desk.service.check_compliance()
        for account, arrangement_id in zip(accounts, ids, strict=True):
            await eventually(lambda: desk.events(account, "installment.missed"))  # noqa: B023 - awaited here
            await asyncio.sleep(0.2)
            missed = await desk.events(account, "installment.missed")
            assert [m.data["item_reference"] for m in missed] == [f"{arrangement_id}/1"]
            assert len(await desk.events(account, "disconnection.hold_placed")) == 1


class TestBadInput:
    async def given(self, desk: Desk, y: int, amount: str = "300.00", due: date | None = None) -> str:
        account = unique_account()
        desk.set_today(date(y, 3, 1))
        await desk.delinquent(account, "Bad Input", [(f"INV-{account}", amount, due or date(y, 2, 1))])
        return account

    async def rejected(self, desk: Desk, account: str, status: int, field: str, **body: Any) -> None:
        terms = {"installments": 3, "frequency": "monthly", "first_due_date": "2999-01-01"} | body
        response = await desk.post("/arrangements", {"account_number": account, **terms})
        assert response.status_code == status, response.text
        problem = response.json()
        named = problem.get("field") or ",".join(e["field"] for e in problem.get("errors", []))
        assert field in named, problem

    async def nothing_written(self, desk: Desk, account: str) -> None:
        async with desk.service.sessions() as session:
            count = (
                await session.execute(select(func.count()).where(arrangements.c.account_number == account))
            ).scalar_one()
        assert count == 0
        assert await desk.events(account) == []

    async def test_installments_that_do_not_divide(self, desk: Desk) -> None:
        y = year()
        account = await self.given(desk, y, amount="0.02")
        await self.rejected(desk, account, 422, "installments", first_due_date=f"{y}-03-10")
        await self.nothing_written(desk, account)

    async def test_a_first_due_date_in_the_past(self, desk: Desk) -> None:
        y = year()
        account = await self.given(desk, y)
        await self.rejected(desk, account, 422, "first_due_date", first_due_date=f"{y}-02-28")
        await self.nothing_written(desk, account)

    async def test_an_account_with_nothing_overdue(self, desk: Desk) -> None:
        y = year()
        account = await self.given(desk, y, due=date(y, 4, 1))
        await self.rejected(desk, account, 422, "account_number", first_due_date=f"{y}-03-10")
        await self.nothing_written(desk, account)

    async def test_an_account_that_already_has_an_active_plan(self, desk: Desk) -> None:
        y = year()
        account = await self.given(desk, y)
        first = await plan(desk, account, installments=3, frequency="monthly", first_due_date=f"{y}-03-10")
        before = await desk.events(account)
        await self.rejected(desk, account, 409, "account_number", first_due_date=f"{y}-03-10")
        assert (await desk.arrangement(first["arrangement_id"]))["status"] == "Active"
        await settled(desk.service)
        assert len(await desk.events(account)) == len(before)

    async def test_an_unknown_frequency_names_the_field(self, desk: Desk) -> None:
        y = year()
        account = await self.given(desk, y)
        await self.rejected(desk, account, 422, "frequency", frequency="daily", first_due_date=f"{y}-03-10")
        await self.nothing_written(desk, account)


class TestApproval:
    async def test_above_the_limit_a_billing_manager_approves_never_the_requester(self, desk: Desk) -> None:
        y = year()
        account = unique_account()
        desk.set_today(date(y, 3, 1))
        await desk.delinquent(account, "Big Debt", [(f"INV-{account}", "1200.00", date(y, 2, 1))])
        created = await plan(desk, account, installments=6, frequency="monthly", first_due_date=f"{y}-03-10")
        assert (created["status"], created["approval_id"]) == ("Pending approval", created["approval_id"])
        assert created["approval_id"]
        assert (await desk.disconnection(account))["state"] == "clear"
        listed = (await desk.get("/approvals", Role.BILLING_MANAGER, user=MANAGER)).json()["items"]
        assert any(a["approval_id"] == created["approval_id"] for a in listed)
        own = await desk.post(
            f"/approvals/{created['approval_id']}/approve", {}, headers=desk.auth(Role.BILLING_MANAGER, EXECUTIVE)
        )
        assert (own.status_code, own.json()["code"]) == (403, "own_request")
        assert (await desk.post(f"/approvals/{created['approval_id']}/approve", {})).status_code == 403  # role
        approved = await desk.post(
            f"/approvals/{created['approval_id']}/approve",
            {"reason": "ok"},
            headers=desk.auth(Role.BILLING_MANAGER, MANAGER),
        )
        assert approved.status_code == 200, approved.text
        assert approved.json()["arrangement"]["status"] == "Active"
        assert approved.json()["arrangement"]["approved_by"] == MANAGER
        again = await desk.post(
            f"/approvals/{created['approval_id']}/approve", {}, headers=desk.auth(Role.BILLING_MANAGER, "Other Manager")
        )
        assert again.status_code == 409
        await eventually(lambda: _state_is(desk, account, "hold"))
        assert len(await desk.events(account, "arrangement.created")) == 1
        tracked = await desk.tracked("payment_plan_created")
        mine = [t for t in tracked if t.data["properties"]["plan_id"] == created["arrangement_id"]]
        assert mine[0].data["properties"]["approval_required"] == "true"


class TestModify:
    async def test_modify_reschedules_the_remaining_with_a_reason_and_an_audit_record(self, desk: Desk) -> None:
        y = year()
        account = unique_account()
        desk.set_today(date(y, 3, 1))
        await desk.delinquent(account, "Mod Ify", [(f"INV-{account}", "400.00", date(y, 2, 1))])
        created = await plan(desk, account, installments=4, frequency="monthly", first_due_date=f"{y}-03-10")
        arrangement_id = created["arrangement_id"]
        await desk.pay(account, f"{arrangement_id}/1", "100.00", date(y, 3, 9))
        await paid_installments(desk, arrangement_id, 1)
        missing_reason = await desk.post(f"/arrangements/{arrangement_id}/modify", {"installments": 2})
        assert missing_reason.status_code == 422
        assert "reason" in missing_reason.text
        bad_amounts = await desk.post(
            f"/arrangements/{arrangement_id}/modify", {"reason": "x", "amounts": ["100.00", "100.00"]}
        )
        assert (bad_amounts.status_code, bad_amounts.json()["field"]) == (422, "amounts")
        response = await desk.post(
            f"/arrangements/{arrangement_id}/modify",
            {
                "reason": "hours cut",
                "amounts": ["50.00", "50.00", "200.00"],
                "frequency": "weekly",
                "first_due_date": f"{y}-04-01",
            },
        )
        assert response.status_code == 200, response.text
        body = response.json()
        live = [i for i in body["installments"] if not i["superseded"]]
        assert [i["amount"]["amount"] for i in live if i["item_reference"].startswith(f"{arrangement_id}.2/")] == [
            "50.00",
            "50.00",
            "200.00",
        ]
        assert body["plan_id"] == f"{arrangement_id}.2"
        history = (await desk.get(f"/arrangements/{arrangement_id}/history")).json()
        modified = [h for h in history if h["action"] == "arrangement.modified"]
        assert modified[0]["reason"] == "hours cut"
        assert modified[0]["before"]["installments"] == 4
        event = (await eventually(lambda: desk.events(account, "arrangement.modified")))[0]
        assert sorted(event.data["withdrawn_references"]) == [f"{arrangement_id}/{n}" for n in (2, 3, 4)]
        # A payment on a withdrawn reference still reaches the arrangement: the earliest open installment.
        await desk.pay(account, f"{arrangement_id}/3", "50.00", date(y, 4, 1))
        found = await paid_installments(desk, arrangement_id, 2)
        assert found["paid"]["amount"] == "150.00"

    async def test_cancel_releases_the_hold_and_returns_the_balance_to_arrears(self, desk: Desk) -> None:
        y = year()
        account = unique_account()
        desk.set_today(date(y, 3, 1))
        await desk.delinquent(account, "Can Cel", [(f"INV-{account}", "90.00", date(y, 2, 1))])
        created = await plan(desk, account, installments=3, frequency="weekly", first_due_date=f"{y}-03-02")
        response = await desk.post(f"/arrangements/{created['arrangement_id']}/cancel", {"reason": "customer moved"})
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "Cancelled"
        await wait_types(
            desk,
            account,
            [
                "arrangement.created",
                "disconnection.hold_placed",
                "arrangement.cancelled",
                "disconnection.hold_released",
            ],
        )
        desk.set_today(date(y, 3, 3))
        await desk.service.check_compliance()
        row = await desk.row(account)
        assert row is not None
        assert (row["amount_overdue"]["amount"], row["plan_status"]) == ("90.00", "Cancelled")


class TestWorklist:
    async def test_filters_sort_keyset_paging_and_case_insensitive_search(self, desk: Desk) -> None:
        y = year()
        desk.set_today(date(y, 6, 1))
        tag = uuid.uuid4().hex[:6]
        shapes = [
            ("10.00", date(y, 5, 20)),
            ("200.00", date(y, 4, 10)),
            ("50.00", date(y, 2, 1)),
            ("75.00", date(y, 1, 1)),
        ]
        made = []
        for n, (amount, due) in enumerate(shapes):
            account = unique_account()
            made.append(account)
            await desk.delinquent(account, f"Worklist {tag} Person{n}", [(f"INV-{account}", amount, due)])
        pages, cursor = [], None
        while True:
            params: dict[str, Any] = {"q": f"WORKLIST {tag.upper()}", "sort": "amount_overdue", "limit": 3}
            response = await desk.get("/collections/accounts", **(params | ({"cursor": cursor} if cursor else {})))
            assert response.status_code == 200, response.text
            pages.append([r["amount_overdue"]["amount"] for r in response.json()["items"]])
            cursor = response.json()["next_cursor"]
            if cursor is None:
                break
        assert pages == [["200.00", "75.00", "50.00"], ["10.00"]]
        by_days = (await desk.get("/collections/accounts", q=tag, sort="days_overdue")).json()["items"]
        assert [r["account_number"] for r in by_days] == [made[3], made[2], made[1], made[0]]
        bucket = (await desk.get("/collections/accounts", q=tag, bucket="31-60")).json()["items"]
        assert [r["account_number"] for r in bucket] == [made[1]]
        assert bucket[0]["days_overdue"] == 52
        old = (await desk.get("/collections/accounts", q=tag, days_overdue_min=100, amount_min="60")).json()["items"]
        assert [r["account_number"] for r in old] == [made[3]]
        await plan(desk, made[1], installments=2, frequency="monthly", first_due_date=f"{y}-06-05")
        with_plan = (await desk.get("/collections/accounts", q=tag, has_plan="true")).json()["items"]
        assert [r["account_number"] for r in with_plan] == [made[1]]
        assert with_plan[0]["executive"] == EXECUTIVE
        mine = (await desk.get("/collections/accounts", q=tag, executive=EXECUTIVE.lower())).json()["items"]
        assert [r["account_number"] for r in mine] == [made[1]]
        active = (await desk.get("/collections/accounts", q=tag, plan_status="active")).json()["items"]
        assert [r["account_number"] for r in active] == [made[1]]
        bad = await desk.get("/collections/accounts", cursor="garbage")
        assert (bad.status_code, bad.json()["field"]) == (422, "cursor")
        # Past the threshold with no plan the account becomes eligible for disconnection on the next pass.
        await desk.service.check_compliance()
        eligible = (await desk.get("/collections/accounts", q=tag, disconnection="eligible")).json()["items"]
        assert sorted(r["account_number"] for r in eligible) == sorted([made[2], made[3]])
        assert len(await desk.events(made[3], "disconnection.eligible")) == 1
        export = await desk.get("/collections/accounts/export", Role.BILLING_MANAGER, q=tag)
        lines = list(csv.reader(io.StringIO(export.text)))
        assert lines[0][0] == "Account"
        assert len(lines) == 5


class TestActivities:
    async def test_a_broken_promise_raises_an_alert_and_follow_ups_queue_per_executive(self, desk: Desk) -> None:
        y = year()
        account = unique_account()
        desk.set_today(date(y, 3, 1))
        await desk.delinquent(account, "Pro Miser", [(f"INV-{account}", "120.00", date(y, 2, 1))])
        no_amount = await desk.post("/activities", {"account_number": account, "activity_type": "promise_to_pay"})
        assert (no_amount.status_code, no_amount.json()["field"]) == (422, "promise_amount")
        response = await desk.post(
            "/activities",
            {
                "account_number": account,
                "activity_type": "promise_to_pay",
                "promise_amount": "120.00",
                "promise_date": f"{y}-03-05",
                "follow_up_on": f"{y}-03-06",
                "outcome": "promised",
                "customer_response": "cooperative",
            },
        )
        assert response.status_code == 201, response.text
        activity = response.json()
        assert activity["promise_status"] == "Open"
        row = await desk.row(account)
        assert row is not None
        assert row["last_contact_at"] is not None
        queue = (await desk.get("/activities/follow-ups", due_by=f"{y}-03-06")).json()["items"]
        assert any(q["activity_id"] == activity["activity_id"] for q in queue)
        other = await desk.get("/activities/follow-ups", executive="Someone Else")
        assert other.status_code == 403
        await desk.service.check_compliance(at(date(y, 3, 6)))
        broken = await eventually(lambda: desk.events(account, "promise.broken"))
        assert len(broken) == 1
        alert = next(a for a in (await desk.get("/alerts")).json()["items"] if a["account_number"] == account)
        assert alert["kind"] == "promise_broken"
        ack = await desk.post(f"/alerts/{alert['alert_id']}/acknowledge", {"action_taken": "called back"})
        assert ack.status_code == 200, ack.text
        checks = await eventually(lambda: desk.tracked("compliance_check"))
        assert any(c.data["properties"]["action_taken"] == "called back" for c in checks)
        activities_tracked = await desk.tracked("collection_activity")
        assert any(t.data["properties"]["follow_up_scheduled"] == "true" for t in activities_tracked)
        await desk.service.check_compliance()
        assert len(await desk.events(account, "promise.broken")) == 1

    async def test_field_systems_log_activities_over_the_commands_topic(self, desk: Desk) -> None:
        from shared.contracts import new_envelope
        from shared.contracts.events import CollectionActivityRecordRequested

        y = year()
        account = unique_account()
        desk.set_today(date(y, 3, 1))
        await desk.delinquent(account, "Field Visit", [(f"INV-{account}", "20.00", date(y, 2, 1))])
        command = new_envelope(
            "collection_activity.record_requested",
            source="field-ops",
            subject=account,
            data=CollectionActivityRecordRequested(
                account_number=account, activity_type="visit", executive="Tech Tom", outcome="no one home"
            ),
        )
        await publish(desk.bootstrap, Topic.COLLECTIONS_COMMANDS, [command, command])

        async def logged() -> list[Any]:
            return list((await desk.get("/activities", account_number=account)).json()["items"])

        found = await eventually(logged)
        await settled(desk.service)  # the duplicate command consumed too
        assert [(a["activity_type"], a["executive"]) for a in await logged()] == [("visit", "Tech Tom")]
        assert found


class TestReports:
    async def test_recovered_by_period_and_executive_kept_rate_and_the_cli_pass(self, desk: Desk) -> None:
        y = year()
        account = unique_account()
        desk.set_today(date(y, 3, 1))
        await desk.delinquent(account, "Re Port", [(f"INV-{account}", "80.00", date(y, 2, 1))])
        created = await plan(desk, account, installments=2, frequency="weekly", first_due_date=f"{y}-03-03")
        await desk.pay(account, f"{created['arrangement_id']}/1", "40.00", date(y, 3, 3))
        await paid_installments(desk, created["arrangement_id"], 1)
        desk.set_today(date(y, 3, 20))
        report = (await desk.get("/collections/reports", Role.BILLING_MANAGER, period=f"{y}-03")).json()
        assert {"executive": EXECUTIVE, "amount": report["recovered_by_executive"][0]["amount"]} in report[
            "recovered_by_executive"
        ]
        assert report["recovered_total"]["amount"] == "40.00"
        assert report["installments_due"] == {"on_time": 1, "missed": 1}
        assert report["kept_rate"] == "50.0"
        export = await desk.get("/collections/reports/recovered/export", Role.BILLING_MANAGER, period=f"{y}-03")
        rows = list(csv.reader(io.StringIO(export.text)))
        assert rows[1][1:] == [created["arrangement_id"], account, rows[1][3], EXECUTIVE, "40.00"]
        xlsx = await desk.get(
            "/collections/reports/recovered/export", Role.BILLING_MANAGER, period=f"{y}-03", format="xlsx"
        )
        assert xlsx.content[:2] == b"PK"
        result = await asyncio.to_thread(
            CliRunner().invoke, cli, ["check-collections", "--at", at(date(y, 3, 20)).isoformat()]
        )
        assert result.exit_code == 0, result.output
        assert "missed" in result.output
        missed = await eventually(lambda: desk.events(account, "installment.missed"))
        assert len(missed) == 1
