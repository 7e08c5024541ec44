"""The database wiring every service shares, on the real PostgreSQL."""

from __future__ import annotations

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
