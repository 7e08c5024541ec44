"""How receipts' PDF files are stored: as they are, since their streams are compressed already."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import make_url

from paydesk.migrations import alembic_config, upgrade
from shared.db import create_engine
from tests.conftest import Infra

pytestmark = pytest.mark.kafka

_STORAGE = text(
    "SELECT attrelid::regclass::text, attstorage::text FROM pg_attribute "
    "WHERE attrelid IN ('receipts.documents'::regclass, 'receipts.receipt_versions'::regclass) AND attname = 'pdf'"
)


async def _admin(database_url: str, statement: str) -> None:
    admin = create_engine(make_url(database_url).set(database="postgres").render_as_string(hide_password=False))
    try:
        async with admin.connect() as connection:
            await (await connection.execution_options(isolation_level="AUTOCOMMIT")).execute(text(statement))
    finally:
        await admin.dispose()


async def _pdf_storage(url: str) -> dict[str, str]:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as connection:
            return {table: storage for table, storage in (await connection.execute(_STORAGE)).all()}
    finally:
        await engine.dispose()


async def test_pdf_files_are_stored_uncompressed_and_the_downgrade_compresses_them_again(infra: Infra) -> None:
    database = f"receipts_storage_{uuid.uuid4().hex[:8]}"
    await _admin(infra.database_url, f'CREATE DATABASE "{database}"')
    url = make_url(infra.database_url).set(database=database).render_as_string(hide_password=False)
    try:
        await asyncio.to_thread(upgrade, "receipts", url)  # alembic runs its own event loop
        # EXTERNAL ("e"): out of line without compression, where pglz was most of Postgres's CPU per render.
        assert await _pdf_storage(url) == {"receipts.documents": "e", "receipts.receipt_versions": "e"}
        await asyncio.to_thread(command.downgrade, alembic_config("receipts", url), "receipts_0013")
        # EXTENDED ("x"), bytea's default, as before.
        assert await _pdf_storage(url) == {"receipts.documents": "x", "receipts.receipt_versions": "x"}
    finally:
        await _admin(infra.database_url, f'DROP DATABASE "{database}" WITH (FORCE)')
