"""Each service's Alembic history builds exactly the tables its `storage.py` declares.

The code reads and writes through the declared tables, while production gets its schema from the migrations: if
the two drift apart, a query fails at run time on a column that is not there. Alembic's own comparison (the one
`alembic revision --autogenerate` uses) on the migrated test database must find nothing to change.
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection

from paydesk.registry import SERVICES
from shared.db import create_engine
from tests.conftest import Infra

pytestmark = pytest.mark.kafka


def _differences(connection: Connection, metadata: MetaData) -> list[Any]:
    schema = metadata.schema
    context = MigrationContext.configure(
        connection,
        opts={
            "include_schemas": True,
            "include_name": lambda name, type_, _: type_ != "schema" or name == schema,
            "version_table_schema": schema,
        },
    )
    return [
        difference
        for difference in compare_metadata(context, metadata)
        # Alembic's own bookkeeping table lives in the schema but is no service table.
        if not (difference[0] == "remove_table" and difference[1].name == "alembic_version")
    ]


@pytest.mark.parametrize("service", sorted(SERVICES))
async def test_the_migrations_build_exactly_the_declared_tables(infra: Infra, service: str) -> None:
    metadata = importlib.import_module(f"services.{service}.storage").metadata
    engine = create_engine(infra.database_url, pool_size=1)
    try:
        async with engine.connect() as connection:
            differences = await connection.run_sync(_differences, metadata)
    finally:
        await engine.dispose()
    assert differences == [], f"{service}: migrations and storage.py differ: {differences}"
