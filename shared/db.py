"""Database wiring: SQLAlchemy 2 async over asyncpg; each service owns one schema."""

from __future__ import annotations

from typing import Any

from sqlalchemy import MetaData
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session

# Stable constraint names so Alembic migrations diff cleanly.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def service_metadata(schema: str) -> MetaData:
    """The MetaData of one service: every table lives in the service's own schema."""
    return MetaData(schema=schema, naming_convention=NAMING_CONVENTION)


def create_engine(database_url: str, *, pool_size: int = 10) -> AsyncEngine:
    """The service's engine: at most `pool_size` connections, each kept in the pool once opened."""
    url = make_url(database_url)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+asyncpg")
    # No pre-ping: with asyncpg it costs three round trips per checkout (begin, ping, rollback), a third of a
    # webhook's. A connection broken by a database restart fails its one request (callers retry: Stripe,
    # Kafka redelivery, the counter's Idempotency-Key), and SQLAlchemy then recycles the whole pool.
    # hide_parameters: database errors end up in logs and DLQ headers; names, addresses and amounts stay out.
    # No overflow: every connection opened is kept. With 5 kept and 5 more on demand, 16 tellers made payments open
    # and close about five connections a second (a backend started, the driver's setup queries, every prepared
    # statement prepared again), a quarter of Postgres's CPU per payment; the most connections stays what it was.
    return create_async_engine(url, pool_size=pool_size, max_overflow=0, hide_parameters=True)


def session_factory(engine: AsyncEngine, info: dict[str, Any] | None = None) -> async_sessionmaker[AsyncSession]:
    """Sessions of one service: their own Session class (so commit hooks attach to this service only) and
    `info` every session starts with (the outbox table, so any code can stage an event in its transaction)."""
    service_session = type("ServiceSession", (Session,), {})
    return async_sessionmaker(engine, expire_on_commit=False, sync_session_class=service_session, info=info or {})


# SQLSTATE classes that say the server, not the statement, is the problem: 08 connection exception, 53 insufficient
# resources (e.g. 53300 too many connections), 57 operator intervention (57P01 terminated by an administrator,
# 57P02 crash shutdown, 57P03 "the database system is starting up").
UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "53", "57"})


def is_infrastructure_down(exc: BaseException) -> bool:
    """True when the database (or the network to it) failed, not the request: the caller should retry later.

    SQLAlchemy's asyncpg dialect turns most server errors into a plain `DBAPIError` (not `OperationalError`), and a
    refused connection attempt has no connection to invalidate: without the SQLSTATE, a restarting Postgres was a
    500 (found by the chaos harness)."""
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeout | OSError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    sqlstate = str(getattr(exc.orig, "sqlstate", None) or "")
    return exc.connection_invalidated or sqlstate[:2] in UNAVAILABLE_SQLSTATE_CLASSES
