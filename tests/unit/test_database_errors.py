"""Which database errors mean "retry later" (503) and which are bugs (500), by SQLSTATE, on the real exception types."""

from __future__ import annotations

import asyncpg.exceptions as pg
import pytest
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi
from sqlalchemy.exc import DBAPIError

from shared.db import is_infrastructure_down


def wrapped(error: Exception) -> DBAPIError:
    """What SQLAlchemy's asyncpg dialect raises for `error` (its generic `Error` adapter, as for any PostgresError)."""
    adapted = AsyncAdapt_asyncpg_dbapi.Error(str(error), error)  # type: ignore[no-untyped-call]
    return DBAPIError("SELECT 1", None, adapted)


@pytest.mark.parametrize(
    "error",
    [
        pg.CannotConnectNowError("the database system is starting up"),
        pg.AdminShutdownError("terminating connection due to administrator command"),
        pg.CrashShutdownError("terminating connection because of crash of another server process"),
        pg.TooManyConnectionsError("sorry, too many clients already"),
        pg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    ],
)
def test_a_server_that_cannot_serve_is_infrastructure_down(error: Exception) -> None:
    assert is_infrastructure_down(wrapped(error))


@pytest.mark.parametrize(
    "error",
    [
        pg.UniqueViolationError("duplicate key value violates unique constraint"),
        pg.UndefinedTableError('relation "nope" does not exist'),
        pg.SerializationError("could not serialize access"),
    ],
)
def test_a_statement_the_server_refused_is_not(error: Exception) -> None:
    assert not is_infrastructure_down(wrapped(error))


def test_anything_else_is_not() -> None:
    assert not is_infrastructure_down(ValueError("a bug"))
