"""Modifying or re-aging an arrangement into terms above the limits waits for a billing manager (maker-checker),
on the real broker and database: nothing changes until it is approved, the requester never decides, a
rejection leaves the arrangement as it was, and an approval applies the change as asked, once."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import pytest

from shared.auth import Role
from tests.conftest import Infra
from tests.support.collections import EXECUTIVE, MANAGER, Desk, collections_desk
from tests.support.helpers import eventually, unique_account

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
async def desk(infra: Infra) -> AsyncIterator[Desk]:
    async for created in collections_desk(infra):  # approval above 1000.00 or 12 installments
        yield created


async def decide(desk: Desk, approval_id: str, decision: str, user: str = MANAGER) -> Any:
    return await desk.post(
        f"/approvals/{approval_id}/{decision}", {"reason": "checked"}, headers=desk.auth(Role.BILLING_MANAGER, user)
    )


async def modified_events(desk: Desk, account: str) -> list[Any]:
    return await desk.events(account, "arrangement.modified")


class TestChangesAboveTheLimits:
    async def test_a_modification_above_the_installment_limit_waits_for_a_billing_manager(self, desk: Desk) -> None:
        y = random.randrange(2300, 2900)
        account = unique_account()
        desk.set_today(date(y, 3, 1))
        await desk.delinquent(account, "Ap Prove", [(f"INV-{account}", "600.00", date(y, 2, 1))])
        created = await desk.post(
            "/arrangements",
            {"account_number": account, "installments": 3, "frequency": "monthly", "first_due_date": f"{y}-03-10"},
        )
        assert created.status_code == 201, created.text
        plan = created.json()["arrangement_id"]
        asked = {"reason": "lost a job", "installments": 13, "frequency": "weekly"}

        waiting = await desk.post(f"/arrangements/{plan}/modify", asked)
        assert waiting.status_code == 202, waiting.text
        approval_id = waiting.json()["approval_id"]
        assert (waiting.json()["plan_id"], waiting.json()["installments_count"]) == (plan, 3)
        again = await desk.post(f"/arrangements/{plan}/modify", asked | {"installments": 14})
        assert (again.status_code, again.json()["code"]) == (409, "change_awaiting_approval")
        requested = await eventually(lambda: desk.events(account, "approval.requested"))
        assert [
            (e.data["approval_id"], e.data["kind"], e.data["subject"], e.data["amount"]["amount"]) for e in requested
        ] == [(approval_id, "arrangement_modification", plan, "600.00")]
        own = await decide(desk, approval_id, "approve", user=EXECUTIVE)
        assert (own.status_code, own.json()["code"]) == (403, "own_request")
        assert await modified_events(desk, account) == []

        approved = await decide(desk, approval_id, "approve")
        assert approved.status_code == 200, approved.text
        shown = approved.json()["arrangement"]
        assert (shown["plan_id"], shown["installments_count"], shown["frequency"]) == (f"{plan}.2", 13, "weekly")
        twice = await decide(desk, approval_id, "approve", user="Other Manager")
        assert twice.status_code == 409
        events = await eventually(lambda: modified_events(desk, account))
        assert len(events) == 1
        assert events[0].data["modified_by"] == EXECUTIVE
        history = (await desk.get(f"/arrangements/{plan}/history")).json()
        actions = [h["action"] for h in history]
        assert "arrangement_modification.requested" in actions
        done = [h for h in history if h["action"] == "arrangement.modified"]
        assert (done[0]["actor"], done[0]["after"]["approved_by"]) == (EXECUTIVE, MANAGER)

    async def test_a_reage_above_the_total_limit_is_made_only_once_approved(self, desk: Desk) -> None:
        y = random.randrange(2300, 2900)
        account = unique_account()
        desk.set_today(date(y, 3, 1))
        bills = [(f"INV-{account}-1", "700.00", date(y, 1, 5)), (f"INV-{account}-2", "500.00", date(y, 2, 5))]
        await desk.delinquent(account, "Re Age", bills)
        created = await desk.post(
            "/arrangements",
            {
                "account_number": account,
                "items": [f"INV-{account}-1"],
                "installments": 2,
                "frequency": "monthly",
                "first_due_date": f"{y}-03-10",
            },
        )
        assert created.status_code == 201, created.text
        plan = created.json()["arrangement_id"]
        assert created.json()["status"] == "Active"
        # The settlement plan would take the 700.00 left and the other 500.00 overdue: above 1000.00.
        terms = {
            "reason": "both bills together",
            "installments": 6,
            "frequency": "monthly",
            "first_due_date": f"{y}-04-01",
        }

        waiting = await desk.post(f"/arrangements/{plan}/reage", terms)
        assert waiting.status_code == 202, waiting.text
        assert waiting.json()["status"] == "Active"
        rejected = await decide(desk, waiting.json()["approval_id"], "reject")
        assert rejected.status_code == 200, rejected.text
        assert rejected.json()["arrangement"]["status"] == "Active"
        history = [h["action"] for h in (await desk.get(f"/arrangements/{plan}/history")).json()]
        assert "arrangement_reage.rejected" in history

        asked = await desk.post(f"/arrangements/{plan}/reage", terms)
        assert asked.status_code == 202, asked.text
        approved = await decide(desk, asked.json()["approval_id"], "approve")
        assert approved.status_code == 200, approved.text
        settlement = approved.json()["arrangement"]
        assert (settlement["reaged_from"], settlement["total"]["amount"], settlement["status"]) == (
            plan,
            "1200.00",
            "Active",
        )
        assert settlement["approved_by"] == MANAGER
        assert (await desk.arrangement(plan))["status"] == "Re-aged"
        reaged = await eventually(lambda: desk.events(account, "arrangement.reaged"))
        assert len(reaged) == 1
