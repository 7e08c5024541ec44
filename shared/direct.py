"""One transaction on the driver (asyncpg) connection under a pooled SQLAlchemy connection, for a hot path.

Why: on the counter's path SQLAlchemy's session, its statement execution and its result rows cost the service more
CPU than Postgres spends on the statements (issue 17). Here the statements are still SQLAlchemy Core, compiled once
(`prepare`) to asyncpg's SQL and bound positionally; asyncpg prepares each once per connection and keeps it.

What stays as on any other path: the connection comes from the service's pool; errors come out as SQLAlchemy's
(`DBAPIError` and its kinds, so the service answers 503 when Postgres is down) and a broken connection is invalidated
in the pool; every statement passes the engine's `before_cursor_execute` event (hooks that count statements see it);
events are staged in the outbox in the same transaction with the columns and headers `shared.outbox.stage_all`
writes, and the relay is woken after a commit that staged some.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import asyncpg
from sqlalchemy import Insert, LargeBinary, Table, Text, bindparam, cast, func, select
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from shared.outbox import Outgoing, staged_rows

_DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]
# Errors the driver raises for the server's refusals and for a lost connection.
_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A Core statement compiled once for asyncpg: its SQL, and how to bind named values to its positions."""

    sql: str
    names: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]
    defaults: tuple[Any, ...]

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        """The positional arguments, each processed as SQLAlchemy would (JSON serialized, arrays item by item)."""
        args = []
        for name, process, default in zip(self.names, self.processors, self.defaults, strict=True):
            value = params.get(name, default)
            args.append(value if process is None or value is None else process(value))
        return args


def prepare(statement: ClauseElement) -> Prepared:
    """Compile `statement` for asyncpg once; bind parameters are given by name at each execution."""
    compiled = statement.compile(dialect=_DIALECT)
    assert isinstance(compiled, SQLCompiler)
    names = tuple(compiled.positiontup or ())
    binds = [compiled.binds[name] for name in names]
    return Prepared(
        sql=compiled.string,
        names=names,
        processors=tuple(bind.type.dialect_impl(_DIALECT).bind_processor(_DIALECT) for bind in binds),
        defaults=tuple(None if bind.required else bind.effective_value for bind in binds),
    )


def outbox_insert(outbox: Table) -> Insert:
    """The insert of a list of events into `outbox` (arrays unnested, rows in the order given, so the identity ids,
    the relay's order, follow it): what `DirectTransaction.stage_all` runs, or a CTE of a larger statement bound
    with `DirectTransaction.staging`."""
    rows = select(
        func.unnest(bindparam("outbox_event_ids", type_=ARRAY(UUID(as_uuid=True)))),
        func.unnest(bindparam("outbox_topics", type_=ARRAY(Text))),
        func.unnest(bindparam("outbox_keys", type_=ARRAY(Text))),
        cast(func.unnest(bindparam("outbox_headers", type_=ARRAY(Text))), JSONB),
        func.unnest(bindparam("outbox_values", type_=ARRAY(LargeBinary))),
    )
    return outbox.insert().from_select(["event_id", "topic", "key", "headers", "value"], rows)


def outbox_rows(events: Sequence[Outgoing]) -> dict[str, list[Any]]:
    """The bind values of `outbox_insert` for `events`: the rows `shared.outbox.stage_all` writes (trace context in
    the headers, business ids on the span), as one array per column."""
    rows = staged_rows(events)
    return {
        "outbox_event_ids": [row["event_id"] for row in rows],
        "outbox_topics": [row["topic"] for row in rows],
        "outbox_keys": [row["key"] for row in rows],
        "outbox_headers": [json.dumps(row["headers"]) for row in rows],
        "outbox_values": [row["value"] for row in rows],
    }


@functools.cache
def _stage_statement(outbox: Table) -> Prepared:
    return prepare(outbox_insert(outbox))


class DirectTransaction:
    """`async with DirectTransaction(engine, outbox) as tx`: one transaction, committed when the block ends well and
    rolled back when it raises; `after_commit` runs after a commit that staged events (the relay's wake-up)."""

    def __init__(self, engine: AsyncEngine, outbox: Table, *, after_commit: Callable[[], None] | None = None) -> None:
        self.engine = engine
        self.after_commit = after_commit
        self._stage = _stage_statement(outbox)
        self.staged = False
        self._connection: AsyncConnection | None = None
        self._adapted: Any = None
        self._driver: asyncpg.Connection | None = None
        self._transaction: Any = None

    async def __aenter__(self) -> DirectTransaction:
        connection = await self.engine.connect()
        try:
            pooled = await connection.get_raw_connection()
            self._adapted, driver = pooled.dbapi_connection, pooled.driver_connection
            assert driver is not None
            self._driver, self._connection = driver, connection
            transaction = driver.transaction()
            await self._run("BEGIN", [], transaction.start(), statement=False)
            self._transaction = transaction
        except BaseException:
            await self._release(connection)
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        connection, transaction = self._connection, self._transaction
        assert connection is not None, "not entered"
        try:
            if exc_type is None:
                await self._run("COMMIT", [], transaction.commit(), statement=False)
                if self.staged and self.after_commit is not None:
                    self.after_commit()
            else:
                try:
                    await transaction.rollback()
                except Exception:
                    # A connection that cannot even roll back (lost, or left mid-statement) must not serve again.
                    await connection.invalidate()
        finally:
            self._connection = self._transaction = None
            await self._release(connection)

    async def _release(self, connection: AsyncConnection) -> None:
        if self._driver is not None and self._driver.is_closed() and not connection.invalidated:
            await connection.invalidate()
        await connection.close()

    async def fetchrow(self, statement: Prepared, params: Mapping[str, Any]) -> asyncpg.Record | None:
        """The first row of `statement` (None if none)."""
        args = statement.args(params)
        assert self._driver is not None, "not entered"
        return await self._run(statement.sql, args, self._driver.fetchrow(statement.sql, *args))

    async def fetch(self, statement: Prepared, params: Mapping[str, Any]) -> list[asyncpg.Record]:
        """Every row of `statement`."""
        args = statement.args(params)
        assert self._driver is not None, "not entered"
        return list(await self._run(statement.sql, args, self._driver.fetch(statement.sql, *args)))

    def staging(self, events: Sequence[Outgoing]) -> dict[str, list[Any]]:
        """The bind values that stage `events` through an `outbox_insert` CTE of the caller's statement."""
        self.staged = self.staged or bool(events)
        return outbox_rows(events)

    async def stage_all(self, events: Sequence[Outgoing]) -> None:
        """Stage `events` (any topics, in the order given) in this transaction's outbox, in one insert."""
        if events:
            await self.fetch(self._stage, self.staging(events))

    async def _run(self, sql: str, args: Sequence[Any], operation: Any, *, statement: bool = True) -> Any:
        assert self._connection is not None, "not entered"
        dispatch = self.engine.sync_engine.dispatch
        if statement and dispatch.before_cursor_execute:  # as SQLAlchemy: statements, not BEGIN and COMMIT
            dispatch.before_cursor_execute(self._connection.sync_connection, None, sql, args, None, False)
        try:
            return await operation
        except _DRIVER_ERRORS as error:
            raise self._translated(error, sql, args) from error

    def _translated(self, error: Exception, sql: str, args: Sequence[Any]) -> Exception:
        """The error as SQLAlchemy would have raised it from the same statement (IntegrityError, an invalidated
        OperationalError, ...), so the service's handlers treat this path like every other one."""
        dbapi_error: Exception = error
        try:
            self._adapted._handle_exception(error)  # raises SQLAlchemy's DB-API error wrapping the driver's
        except Exception as adapted:
            dbapi_error = adapted
        assert self._driver is not None
        return DBAPIError.instance(
            sql,
            list(args),
            dbapi_error,
            self.engine.dialect.loaded_dbapi.Error,
            hide_parameters=True,
            connection_invalidated=self._driver.is_closed(),
            dialect=self.engine.dialect,
        )
