"""Idempotency keys: a retried request with the same key gets the first answer back; another body is a 409.

Each service keeps its own table (`idempotency_table(metadata)`), like the inbox. The key is claimed in the
caller's transaction with the state change, so a request that fails leaves the key free for the next try.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Column, DateTime, MetaData, String, Table, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.errors import Conflict

KEY_REUSED = "idempotency_key_reused"


def idempotency_table(metadata: MetaData) -> Table:
    """The `idempotency_keys` table of a service: one row per operation and key, with the first result."""
    return Table(
        "idempotency_keys",
        metadata,
        # Keys are per operation: a client may well reuse one key for two different kinds of request.
        Column("operation", String(30), primary_key=True),
        Column("key", String(200), primary_key=True),
        Column("request_hash", String(64), nullable=False),
        Column("result", String(100)),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


def request_fingerprint(request: Any) -> str:
    """SHA-256 of the request's content: a dataclass, a pydantic model or plain JSON-able data."""
    if isinstance(request, BaseModel):
        request = request.model_dump(mode="json")
    # The JSON of `dataclasses.asdict(request)`, so stored fingerprints still match their retries, without asdict's
    # deep copy of every value (most of the fingerprint's cost on the counter's path): a dataclass, at any depth,
    # becomes its fields as they are; default=str gives Decimal and date as their exact text, so "145.50" and
    # "145.5" are different requests.
    if dataclasses.is_dataclass(request) and not isinstance(request, type):
        request = _fields(request)
    return hashlib.sha256(json.dumps(request, default=_as_json, sort_keys=True).encode()).hexdigest()


def _as_json(value: Any) -> Any:
    """What JSON cannot encode: a nested dataclass as its fields, anything else as its text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _fields(value)
    return str(value)


# Field names per dataclass, looked up once: `dataclasses.fields` costs more than reading the values.
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _fields(instance: Any) -> dict[str, Any]:
    names = _FIELD_NAMES.get(type(instance))
    if names is None:
        names = _FIELD_NAMES[type(instance)] = tuple(field.name for field in dataclasses.fields(instance))
    return {name: getattr(instance, name) for name in names}


async def claim(session: AsyncSession, table: Table, *, operation: str, key: str, fingerprint: str) -> str | None:
    """Claim `key` for this request: None if it is new, else the first request's result (a replay).

    A concurrent first use waits on the row lock of the insert until the other transaction ends: if that one
    committed, this is a replay; if it rolled back, this request claims the key. A different body is a 409.
    """
    claimed = (
        await session.execute(
            pg_insert(table)
            .values(operation=operation, key=key, request_hash=fingerprint)
            .on_conflict_do_nothing()
            .returning(table.c.key)
        )
    ).first()
    if claimed is not None:
        return None
    earlier = (await session.execute(select(table).where(table.c.operation == operation, table.c.key == key))).one()
    return replayed(earlier.request_hash, earlier.result, operation=operation, key=key, fingerprint=fingerprint)


def replayed(request_hash: str, result: str | None, *, operation: str, key: str, fingerprint: str) -> str:
    """The first request's result for a retry of it (its stored hash and result); a different body is a 409."""
    if request_hash != fingerprint:
        raise Conflict(KEY_REUSED, "this Idempotency-Key was used with a different request")
    if result is None:
        # Only a caller that claimed and committed without `remember` leaves this; replaying nothing would lie.
        raise RuntimeError(f"idempotency key {operation}/{key} was committed without its result")
    return str(result)


async def remember(session: AsyncSession, table: Table, *, operation: str, key: str, result: str) -> None:
    """Store what the claimed request produced (an id to read the response back by), in its transaction."""
    await session.execute(update(table).where(table.c.operation == operation, table.c.key == key).values(result=result))


async def once(
    session: AsyncSession,
    table: Table,
    *,
    operation: str,
    key: str,
    request: Any,
    run: Callable[[], Awaitable[str]],
) -> str:
    """Run `run` once per `key`: its result the first time, the same result on every retry of the same request."""
    fingerprint = request_fingerprint(request)
    earlier = await claim(session, table, operation=operation, key=key, fingerprint=fingerprint)
    if earlier is not None:
        return earlier
    result = await run()
    await remember(session, table, operation=operation, key=key, result=result)
    return result
