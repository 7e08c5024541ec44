"""The back-office kit's database pieces (idempotency keys, audit trail) on the real PostgreSQL.

Each test module run gets a schema of its own, made from the same table factories the services use.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import Table, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.audit import audit_table, history, record
from shared.db import create_engine, service_metadata, session_factory
from shared.errors import Conflict
from shared.idempotency import claim, idempotency_table, once, remember, request_fingerprint
from tests.conftest import Infra


@dataclass
class Kit:
    sessions: async_sessionmaker[AsyncSession]
    keys: Table
    audit: Table


@pytest.fixture(scope="module")
async def kit(infra: Infra) -> AsyncIterator[Kit]:
    schema = f"kit_{uuid.uuid4().hex[:8]}"
    metadata = service_metadata(schema)
    kit_tables = (idempotency_table(metadata), audit_table(metadata))
    engine = create_engine(infra.database_url, pool_size=4)
    async with engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        await conn.run_sync(metadata.create_all)
    try:
        yield Kit(session_factory(engine), *kit_tables)
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await engine.dispose()


@dataclass(frozen=True)
class IssueCreditNote:
    receipt_number: str
    amount: Decimal
    reason: str


def new_key() -> str:
    return f"key-{uuid.uuid4()}"


async def issue(kit: Kit, key: str, request: IssueCreditNote, runs: list[str], *, hold: float = 0.0) -> str:
    """A command behind an idempotency key; `runs` counts how often its effect really happened."""

    async def effect() -> str:
        runs.append(key)
        await asyncio.sleep(hold)  # keep the transaction open so a racing request meets it
        return f"CN-{len(runs)}"

    async with kit.sessions() as session, session.begin():
        return await once(session, kit.keys, operation="issue", key=key, request=request, run=effect)


REQUEST = IssueCreditNote("R-5001", Decimal("4.50"), "Overpayment")


class TestIdempotencyKeys:
    async def test_the_first_use_runs_the_command_and_returns_its_result(self, kit: Kit) -> None:
        runs: list[str] = []
        assert await issue(kit, new_key(), REQUEST, runs) == "CN-1"
        assert len(runs) == 1

    async def test_a_retry_with_the_same_body_replays_the_first_result_without_running_again(self, kit: Kit) -> None:
        """INVARIANT: a retried request never takes effect twice."""
        runs: list[str] = []
        key = new_key()
        first = await issue(kit, key, REQUEST, runs)
        again = await issue(kit, key, IssueCreditNote("R-5001", Decimal("4.50"), "Overpayment"), runs)
        assert (first, again, len(runs)) == ("CN-1", "CN-1", 1)

    async def test_the_same_key_with_a_different_body_is_a_409_with_a_stable_code(self, kit: Kit) -> None:
        runs: list[str] = []
        key = new_key()
        await issue(kit, key, REQUEST, runs)
        with pytest.raises(Conflict) as refused:
            await issue(kit, key, IssueCreditNote("R-5001", Decimal("4.51"), "Overpayment"), runs)
        assert (refused.value.status, refused.value.code) == (409, "idempotency_key_reused")
        assert len(runs) == 1

    async def test_the_same_key_for_another_operation_is_a_separate_key(self, kit: Kit) -> None:
        key = new_key()
        async with kit.sessions() as session, session.begin():
            assert await claim(session, kit.keys, operation="issue", key=key, fingerprint="a" * 64) is None
            await remember(session, kit.keys, operation="issue", key=key, result="CN-1")
            assert await claim(session, kit.keys, operation="apply", key=key, fingerprint="b" * 64) is None

    async def test_a_failed_request_leaves_the_key_free_for_the_next_try(self, kit: Kit) -> None:
        key = new_key()

        async def failing() -> str:
            raise RuntimeError("refused halfway")

        with pytest.raises(RuntimeError):
            async with kit.sessions() as session, session.begin():
                await once(session, kit.keys, operation="issue", key=key, request=REQUEST, run=failing)
        runs: list[str] = []
        assert await issue(kit, key, REQUEST, runs) == "CN-1"

    async def test_concurrent_first_uses_run_the_command_once_and_all_get_its_result(self, kit: Kit) -> None:
        """INVARIANT: two requests racing with one key never both take effect."""
        runs: list[str] = []
        key = new_key()
        results = await asyncio.gather(*(issue(kit, key, REQUEST, runs, hold=0.3) for _ in range(3)))
        assert results == ["CN-1", "CN-1", "CN-1"]
        assert runs == [key]

    async def test_one_row_per_key_holds_the_result(self, kit: Kit) -> None:
        key = new_key()
        await issue(kit, key, REQUEST, [])
        async with kit.sessions() as session:
            row = (await session.execute(select(kit.keys).where(kit.keys.c.key == key))).one()
        assert (row.operation, row.request_hash, row.result) == ("issue", request_fingerprint(REQUEST), "CN-1")


class TestAuditTrail:
    async def test_records_who_when_what_before_after_and_why(self, kit: Kit) -> None:
        subject = f"CN-{uuid.uuid4().hex[:6]}"
        at = datetime(2025, 3, 1, 10, 0, tzinfo=timezone(timedelta(hours=-5)))
        async with kit.sessions() as session, session.begin():
            await record(
                session,
                kit.audit,
                actor="jane.doe",
                action="credit_note.applied",
                subject=subject,
                before={"remaining": Decimal("4.50"), "status": "Active"},
                after={"remaining": Decimal("0.00"), "status": "Applied", "on": date(2025, 3, 1)},
                reason="Customer request",
                at=at,
            )
        async with kit.sessions() as session:
            (entry,) = await history(session, kit.audit, subject)
        assert (entry.actor, entry.action, entry.subject, entry.reason) == (
            "jane.doe",
            "credit_note.applied",
            subject,
            "Customer request",
        )
        assert entry.at == at and entry.at.tzinfo == UTC
        assert entry.before == {"remaining": "4.50", "status": "Active"}
        assert entry.after == {"remaining": "0.00", "status": "Applied", "on": "2025-03-01"}

    async def test_history_is_oldest_first_and_only_about_its_subject(self, kit: Kit) -> None:
        subject, other = f"S-{uuid.uuid4().hex[:6]}", f"S-{uuid.uuid4().hex[:6]}"
        start = datetime(2025, 3, 1, tzinfo=UTC)
        async with kit.sessions() as session, session.begin():
            for minutes, action in ((5, "second"), (0, "first"), (9, "third")):
                await record(
                    session, kit.audit, actor="a", action=action, subject=subject, at=start + timedelta(minutes=minutes)
                )
            await record(session, kit.audit, actor="a", action="elsewhere", subject=other)
        async with kit.sessions() as session:
            entries = await history(session, kit.audit, subject)
        assert [e.action for e in entries] == ["first", "second", "third"]

    async def test_an_entry_without_a_time_is_stamped_now_in_utc(self, kit: Kit) -> None:
        subject = f"S-{uuid.uuid4().hex[:6]}"
        async with kit.sessions() as session, session.begin():
            entry = await record(session, kit.audit, actor="System", action="settings.changed", subject=subject)
            now = (await session.execute(select(func.now()))).scalar_one()
        assert entry.at.tzinfo == UTC
        assert abs(entry.at - now) < timedelta(seconds=5)
        assert entry.as_json()["before"] is None

    async def test_is_written_in_the_callers_transaction(self, kit: Kit) -> None:
        """INVARIANT: an audited change that rolls back leaves no audit entry behind."""
        subject = f"S-{uuid.uuid4().hex[:6]}"
        with pytest.raises(RuntimeError):
            async with kit.sessions() as session, session.begin():
                await record(session, kit.audit, actor="a", action="payment.cancelled", subject=subject)
                raise RuntimeError("the change failed")
        async with kit.sessions() as session:
            assert await history(session, kit.audit, subject) == []

    async def test_refuses_a_naive_time_and_floats(self, kit: Kit) -> None:
        async with kit.sessions() as session:
            with pytest.raises(ValueError, match="timezone-aware"):
                await record(session, kit.audit, actor="a", action="x", subject="s", at=datetime(2025, 3, 1))
            with pytest.raises(TypeError, match="no floats"):
                await record(session, kit.audit, actor="a", action="x", subject="s", after={"amount": 4.5})
