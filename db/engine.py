"""Engine and session factory (SQLAlchemy 2 async on asyncpg): pool, timeouts and the guard.

Every way Postgres can make us wait is bounded, as it is for Redis:

* ``connect_timeout``: opening a connection (asyncpg ``timeout``) - a hung server accepts TCP
  and never answers the start-up;
* ``command_timeout``: any one command, the pool's pre-ping included (asyncpg
  ``command_timeout``) - the client side, for a server or network that stopped answering;
* ``statement_timeout``: the server cancels a statement that runs longer (a little shorter than
  the command timeout, so a merely slow statement is cancelled by the server and the
  connection stays usable);
* ``pool_timeout``: waiting for a free connection of our own pool.

``guard`` (db/guard.py) adds the circuit breaker and the bulkhead on every checkout; it is
created here when not given, so every engine of the bot (app, jobs, CLI) fails fast.

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

Behind PgBouncer the statement timeout is not sent as a start-up parameter (PgBouncer refuses
unknown ones unless ``ignore_startup_parameters`` lists them): set it on the role or the
database instead (``ALTER ROLE bot SET statement_timeout = '2500ms'``); the client-side
command timeout applies either way.
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

from db.guard import GuardedPool, PostgresGuard

__all__ = ["create_engine", "create_session_factory", "guard_of", "pgbouncer_connect_args"]


def create_engine(
    url: str,
    *,
    pool_size: int = 5,
    max_overflow: int = 10,
    pool_recycle: int = 3600,
    pool_timeout: float = 2.0,
    connect_timeout: float = 2.0,
    command_timeout: float | None = 3.0,
    statement_timeout: float | None = 2.5,
    guard: PostgresGuard | None = None,
    echo: bool = False,
    application_name: str = "horoscope-bot",
    pgbouncer: bool = False,
) -> AsyncEngine:
    """An engine whose every wait is bounded (see the module docstring); None turns the
    command or statement timeout off. ``pgbouncer=True``: the URL points at PgBouncer in
    transaction (or statement) pooling."""
    server_settings = {"application_name": application_name}
    if statement_timeout is not None and not pgbouncer:
        server_settings["statement_timeout"] = str(max(1, int(statement_timeout * 1000)))
    connect_args: dict[str, Any] = {
        "timeout": connect_timeout,
        "server_settings": server_settings,
    }
    if command_timeout is not None:
        connect_args["command_timeout"] = command_timeout
    if pgbouncer:
        connect_args.update(pgbouncer_connect_args())
    engine = create_async_engine(
        url,
        poolclass=GuardedPool,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,
        pool_recycle=pool_recycle,
        pool_timeout=pool_timeout,
        echo=echo,
        connect_args=connect_args,
    )
    (guard or PostgresGuard()).attach(engine.sync_engine)
    return engine


def guard_of(engine: AsyncEngine) -> PostgresGuard:
    """The guard an engine made by ``create_engine`` checks out through."""
    pool = engine.sync_engine.pool
    assert isinstance(pool, GuardedPool) and pool.guard is not None
    return pool.guard


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
