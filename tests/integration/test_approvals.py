"""Approvals (maker-checker) on the real PostgreSQL: the requester never decides, and an approval applies once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

import pytest
from sqlalchemy import Column, String, Table, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.approvals import ApprovalStatus, approvals_table, decide, pending_approvals, request_approval
from shared.db import create_engine, service_metadata, session_factory
from shared.errors import Conflict, Forbidden
from shared.outbox import OUTBOX_TABLE, outbox_tables
from tests.conftest import Infra

TOPIC = "approvals.test.v1"


@dataclass
class Desk:
    sessions: async_sessionmaker[AsyncSession]
    approvals: Table
    outbox: Table
    applied: Table


@pytest.fixture(scope="module")
async def desk(infra: Infra) -> AsyncIterator[Desk]:
    schema = f"approvals_{uuid.uuid4().hex[:8]}"
    metadata = service_metadata(schema)
    approvals = approvals_table(metadata)
    outbox, _ = outbox_tables(metadata)

    applied = Table("applied", metadata, Column("approval_id", String(40)))
    engine = create_engine(infra.database_url, pool_size=6)
    async with engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        await conn.run_sync(metadata.create_all)
    try:
        yield Desk(session_factory(engine, info={OUTBOX_TABLE: outbox}), approvals, outbox, applied)
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await engine.dispose()


async def ask(desk: Desk, requested_by: str = "Jane Smith") -> str:
    async with desk.sessions() as session, session.begin():
        approval = await request_approval(
            session,
            desk.approvals,
            topic=TOPIC,
            source="test",
            kind="payment_adjustment",
            subject="PAY-2025-004521",
            account_number="WU-10001",
            payload={"amount": "120.00"},
            requested_by=requested_by,
            reason="typed 150 for 120",
            amount=Decimal("120.00"),
            currency="USD",
        )
    return approval.approval_id


async def approve_and_apply(desk: Desk, approval_id: str, approver: str) -> str:
    """What a service does: decide, and apply what was approved in the same transaction."""
    try:
        async with desk.sessions() as session, session.begin():
            decided = await decide(
                session, desk.approvals, approval_id, topic=TOPIC, source="test", approver=approver, approve=True
            )
            await session.execute(desk.applied.insert().values(approval_id=decided.approval_id))
            await asyncio.sleep(0.1)  # hold the row lock so the racing approval really waits on it
        return "applied"
    except Conflict as refused:
        return refused.code


async def test_a_request_is_pending_and_announced(desk: Desk) -> None:
    approval_id = await ask(desk)
    async with desk.sessions() as session:
        pending = {a.approval_id: a for a in await pending_approvals(session, desk.approvals)}
        staged = (await session.execute(select(desk.outbox.c.value).where(desk.outbox.c.topic == TOPIC))).scalars()
        announced = [v for v in staged if approval_id.encode() in v]
    assert pending[approval_id].status is ApprovalStatus.PENDING
    assert pending[approval_id].amount == Decimal("120.00")
    assert len(announced) == 1 and b"approval.requested" in announced[0]


async def test_the_requester_cannot_approve_their_own_request(desk: Desk) -> None:
    """INVARIANT: no change above its limit is applied on one person's word."""
    approval_id = await ask(desk, requested_by="Jane Smith")
    with pytest.raises(Forbidden) as refused:
        await approve_and_apply(desk, approval_id, approver="Jane Smith")
    assert refused.value.code == "own_request" and refused.value.status == 403
    async with desk.sessions() as session:
        status = (
            await session.execute(select(desk.approvals.c.status).where(desk.approvals.c.approval_id == approval_id))
        ).scalar_one()
    assert status == ApprovalStatus.PENDING.value, "a refused decision changes nothing"


async def test_two_managers_approving_at_once_apply_it_exactly_once(desk: Desk) -> None:
    """INVARIANT: an approved request is applied exactly once, however many approvals race."""
    approval_id = await ask(desk)
    outcomes = await asyncio.gather(*(approve_and_apply(desk, approval_id, f"Manager {n}") for n in range(4)))
    async with desk.sessions() as session:
        applied = (
            await session.execute(
                select(func.count()).select_from(desk.applied).where(desk.applied.c.approval_id == approval_id)
            )
        ).scalar_one()
    assert sorted(outcomes) == ["already_decided"] * 3 + ["applied"]
    assert applied == 1


async def test_a_rejected_request_cannot_be_approved_later(desk: Desk) -> None:
    approval_id = await ask(desk)
    async with desk.sessions() as session, session.begin():
        rejected = await decide(
            session, desk.approvals, approval_id, topic=TOPIC, source="test", approver="Bill Manager", approve=False
        )
    assert rejected.status is ApprovalStatus.REJECTED and rejected.decided_by == "Bill Manager"
    assert await approve_and_apply(desk, approval_id, approver="Other Manager") == "already_decided"
