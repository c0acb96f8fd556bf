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
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from db.guard import GuardedPool, PostgresGuard

__all__ = ["create_engine", "create_session_factory", "guard_of"]


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
) -> AsyncEngine:
    """An engine whose every wait is bounded (see the module docstring); None turns the
    command or statement timeout off."""
    server_settings = {"application_name": application_name}
    if statement_timeout is not None:
        server_settings["statement_timeout"] = str(max(1, int(statement_timeout * 1000)))
    connect_args: dict[str, object] = {
        "timeout": connect_timeout,
        "server_settings": server_settings,
    }
    if command_timeout is not None:
        connect_args["command_timeout"] = command_timeout
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


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: objects read in a unit of work stay usable after its commit
    # (the middleware commits before the handler's return value is used).
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
