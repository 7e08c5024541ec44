"""The body of every service's `migrations/env.py`: one Alembic history per service, in its own schema.

Running the histories is start-up work and lives in `paydesk.migrations`."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection

from shared.db import create_engine


def run_env(metadata: MetaData) -> None:
    """Body of every service's `migrations/env.py`."""
    schema = metadata.schema
    assert schema, "service metadata must name its schema"

    def migrate(connection: Connection) -> None:
        connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table_schema=schema,
            include_schemas=True,
            include_name=lambda name, type_, _: type_ != "schema" or name == schema,
        )
        with context.begin_transaction():
            context.run_migrations()

    async def run() -> None:
        engine = create_engine(context.config.get_main_option("sqlalchemy.url") or "", pool_size=1)
        async with engine.begin() as connection:
            await connection.run_sync(migrate)
        await engine.dispose()

    asyncio.run(run())
