"""The database wiring every service shares, on the real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from shared.db import create_engine
from tests.conftest import Infra


async def test_database_errors_do_not_carry_the_values_of_the_failed_statement(infra: Infra) -> None:
    """Errors reach logs and DLQ headers; a consumer's name and address must not go with them."""
    engine = create_engine(infra.database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            with pytest.raises(DBAPIError) as failed:
                await conn.execute(text("SELECT CAST(:name AS text), 1 / 0"), {"name": "Jane Doe, 1 Quiet Street"})
    finally:
        await engine.dispose()
    assert "division by zero" in str(failed.value)
    assert "Quiet Street" not in str(failed.value)
    assert "Quiet Street" not in repr(failed.value)


async def test_the_relay_is_woken_by_a_commit_that_staged_an_event_and_never_by_a_rollback(infra: Infra) -> None:
    """No route or consumer wakes the relay by hand: the unit of work does it after a commit that staged."""
    from services.receipts.app import create_service
    from services.receipts.settings import ReceiptsSettings
    from shared.contracts import Topic, new_envelope
    from shared.contracts.events import UsageTracked
    from shared.outbox import stage

    service = create_service(ReceiptsSettings(database_url=infra.database_url))
    woken = service.relay._wake
    envelope = new_envelope(
        "usage.tracked",
        source="test",
        subject="UOW-1",
        data=UsageTracked(event="t", user_id="u", properties={}, occurred_at=datetime.now(UTC)),
    )
    try:
        async with service.sessions() as session, session.begin():
            await session.execute(text("SELECT 1"))
        assert not woken.is_set(), "a commit that staged nothing leaves the relay asleep"

        with pytest.raises(RuntimeError):
            async with service.sessions() as session, session.begin():
                await stage(session, Topic.ANALYTICS_EVENTS, envelope)
                raise RuntimeError("rolled back")
        assert not woken.is_set(), "a rolled-back event is never announced"

        async with service.sessions() as session, session.begin():
            await session.execute(text("SELECT 1"))
        assert not woken.is_set(), "the rolled-back staging does not leak into the next transaction"

        async with service.sessions() as session, session.begin():
            await stage(session, Topic.ANALYTICS_EVENTS, envelope)
        assert woken.is_set()
    finally:
        await service.engine.dispose()
