"""Engine and session factory (SQLAlchemy 2 async on asyncpg), pool settings of seed 003.

Behind PgBouncer in transaction pooling (``DB_PGBOUNCER=true``), consecutive transactions of
one client connection may run on different server connections, and one server connection
serves many clients in turn. Prepared statements live on a *server* connection, so asyncpg's
defaults break there: its statement cache reuses a statement prepared in an earlier
transaction (``prepared statement "__asyncpg_stmt_7__" does not exist`` on another server
connection), and its per-connection counter names collide between clients sharing a server
connection (``... already exists``). ``pgbouncer_connect_args`` turns off both caches (asyncpg's
``statement_cache_size`` and SQLAlchemy's ``prepared_statement_cache_size``) and names every
statement uniquely (``prepared_statement_name_func``), as the SQLAlchemy asyncpg dialect's docs
advise. SQLAlchemy still prepares each statement, inside the transaction it runs in (it begins
one explicitly, for PgBouncer's sake), so prepare and execute land on the same server connection.

Cost: one extra round trip per statement (no cached plan), and each server connection keeps
the uniquely named statements it saw until PgBouncer recycles it (``server_lifetime``, 1 h by
default) or, on PgBouncer 1.21+, use ``max_prepared_statements`` and leave DB_PGBOUNCER off.
The client-side pool stays (``DB_POOL_SIZE`` client connections to PgBouncer are cheap to keep
and bound what one process may hold); the Postgres connection count is PgBouncer's pool size.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


def create_engine(
    url: str,
    *,
    pool_size: int = 5,
    max_overflow: int = 10,
    pool_recycle: int = 3600,
    pool_timeout: float = 10.0,
    echo: bool = False,
    application_name: str = "horoscope-bot",
    pgbouncer: bool = False,
) -> AsyncEngine:
    """``pgbouncer=True``: the URL points at PgBouncer in transaction (or statement) pooling;
    see the module docstring."""
    connect_args: dict[str, Any] = {"server_settings": {"application_name": application_name}}
    if pgbouncer:
        connect_args.update(pgbouncer_connect_args())
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,
        pool_recycle=pool_recycle,
        pool_timeout=pool_timeout,
        echo=echo,
        connect_args=connect_args,
    )


def _unique_statement_name() -> str:
    return f"__asyncpg_{uuid.uuid4().hex}__"


def pgbouncer_connect_args() -> dict[str, Any]:
    """asyncpg/SQLAlchemy connect arguments for PgBouncer's transaction pooling: no statement
    caches, a unique name for every prepared statement."""
    return {
        "statement_cache_size": 0,
        "prepared_statement_cache_size": 0,
        "prepared_statement_name_func": _unique_statement_name,
    }


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: objects read in a unit of work stay usable after its commit
    # (the middleware commits before the handler's return value is used).
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
