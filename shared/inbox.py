"""Inbox: a consumer records each event id in the same transaction as the effect, so redelivery is harmless."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import Column, DateTime, MetaData, String, Table, func
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession


def inbox_table(metadata: MetaData) -> Table:
    return Table(
        "inbox",
        metadata,
        Column("consumer", String(100), primary_key=True),
        Column("event_id", UUID(as_uuid=True), primary_key=True),
        Column("event_type", String(100), nullable=False),
        Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


async def claim(session: AsyncSession, inbox: Table, consumer: str, event_id: uuid.UUID, event_type: str) -> bool:
    """Record the event as processed by `consumer`; False if it already was (a redelivery)."""
    statement = (
        pg_insert(inbox)
        .values(consumer=consumer, event_id=event_id, event_type=event_type)
        .on_conflict_do_nothing()
        .returning(inbox.c.event_id)
    )
    return (await session.execute(statement)).first() is not None


async def claim_many(
    session: AsyncSession, inbox: Table, consumer: str, events: Sequence[tuple[uuid.UUID, str]]
) -> set[uuid.UUID]:
    """Record several events in one statement; returns the ids newly claimed (the rest are redeliveries)."""
    # Rows as executemany parameters, not `.values(rows)`: SQLAlchemy then compiles the statement once and sends it
    # as one multi-row INSERT ("insertmanyvalues"); a `.values(rows)` statement was compiled anew for every batch,
    # bind by bind, which cost more CPU than Postgres spent running it.
    statement = pg_insert(inbox).on_conflict_do_nothing().returning(inbox.c.event_id)
    rows = [{"consumer": consumer, "event_id": event_id, "event_type": kind} for event_id, kind in events]
    return set((await session.execute(statement, rows)).scalars())
