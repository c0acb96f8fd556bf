"""Opening and closing the two stores the bot needs.

`open_stores` is the one place that decides where Postgres and Redis are: DATABASE_URL /
REDIS_URL. Without them it needs ``local``, a factory of local servers that the composition
root passes in a source checkout (devtools.embedded: embedded Postgres and Valkey under
DATA_DIR, kept between runs, stopped with the bot). The installed package has no such
factory, so a production process without the URLs stops with one line instead of quietly
starting servers of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog
from redis.asyncio import Redis
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.config import ConfigError, Settings
from bot.ops.metrics import DB_BREAKER_STATE, DB_REJECTED
from bot.ops.outages import OUTAGES, POSTGRES
from cache.breaker import CircuitBreaker
from cache.client import create_redis, is_cluster
from cache.keys import KeySpace
from db.engine import create_engine, create_session_factory
from db.guard import PostgresGuard

log = structlog.get_logger(__name__)


class LocalServers(Protocol):
    """Starts the servers whose URL is missing; the context's value has the URLs."""

    def __call__(
        self, data_dir: Path, /, *, need_postgres: bool, need_redis: bool
    ) -> AbstractContextManager[Any]: ...


@dataclass
class Stores:
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    redis: Redis
    database_url: str
    redis_url: str
    embedded: Any = None


def keyspace_for(settings: Settings, redis: Redis) -> KeySpace:
    """The deployment's cache key space (the app and the CLI's jobs alike). On a Redis Cluster
    every key carries a hash tag (cache/keys.py): what one script touches shares a slot. One
    server or Sentinel: the names stay as they always were."""
    return KeySpace(
        settings.cache_prefix, settings.cache_schema_version, hash_tags=is_cluster(redis)
    )


#: Seconds the pools get to close at the end; a hung Postgres must not keep the process alive.
CLOSE_TIMEOUT = 1.5


def build_guard(settings: Settings) -> PostgresGuard:
    """The Postgres breaker and bulkhead of the bot's engine, reporting to metrics and to the
    outage log (bot/ops/outages.py)."""
    breaker = CircuitBreaker(failure_threshold=3, cooldown=5.0)
    hook = OUTAGES.breaker_hook(POSTGRES)

    def on_change(state: int) -> None:
        DB_BREAKER_STATE.set(state)
        hook(state)

    breaker.on_change = on_change
    return PostgresGuard(
        breaker=breaker,
        limit=settings.db_bulkhead,
        wait=settings.db_bulkhead_wait,
        on_reject=lambda reason: DB_REJECTED.labels(reason).inc(),
    )


def bot_engine(database_url: str, settings: Settings) -> AsyncEngine:
    """The engine with the bot's pool, timeouts and guard (the app, the jobs, the CLI)."""
    return create_engine(
        database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_recycle=settings.db_pool_recycle,
        pool_timeout=settings.db_pool_timeout,
        connect_timeout=settings.db_connect_timeout,
        command_timeout=settings.db_command_timeout,
        statement_timeout=settings.db_statement_timeout,
        guard=build_guard(settings),
        pgbouncer=settings.db_pgbouncer,
    )


async def close_quietly(
    what: str,
    close: Callable[[], Awaitable[Any]],
    timeout: float = CLOSE_TIMEOUT,  # noqa: ASYNC109
) -> None:
    """Await ``close()`` for at most ``timeout`` s: a store that hangs is left behind (its
    sockets die with the process) rather than keeping the process from exiting."""
    try:
        async with asyncio.timeout(timeout):
            await close()
    except TimeoutError:
        log.warning("store_close_timed_out", store=what, seconds=timeout)
    except Exception as exc:
        log.warning("store_close_failed", store=what, error=repr(exc))


def _safe(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # a Redis URL
        return url.split("@")[-1]


@contextlib.asynccontextmanager
async def open_stores(
    settings: Settings, *, migrate: bool | None = None, local: LocalServers | None = None
) -> AsyncIterator[Stores]:
    database_url = settings.database_url_with_password()
    redis_url = settings.redis_url
    stack: Any = None
    if database_url is None or redis_url is None:
        if local is None:
            missing = " and ".join(
                name
                for name, url in (("DATABASE_URL", database_url), ("REDIS_URL", redis_url))
                if url is None
            )
            raise ConfigError(
                f"configuration error: {missing} not set (embedded servers exist only in a"
                " source checkout: make run)"
            )
        stack = local(
            settings.data_dir, need_postgres=database_url is None, need_redis=redis_url is None
        )
        # Entered on the event loop's own thread on purpose: the embedded servers' parent-death
        # signal is tied to the starting thread, and nothing else runs yet at start-up.
        stack.__enter__()
        database_url = database_url or stack.postgres_url
        redis_url = redis_url or stack.redis_url
    assert database_url is not None and redis_url is not None
    engine: AsyncEngine | None = None
    redis: Redis | None = None
    try:
        if settings.run_migrations if migrate is None else migrate:
            from db.migrate import upgrade

            await upgrade(database_url, pgbouncer=settings.db_pgbouncer)
        engine = bot_engine(database_url, settings)
        redis = create_redis(
            redis_url,
            socket_timeout=settings.redis_socket_timeout,
            socket_connect_timeout=settings.redis_socket_timeout,
            max_connections=settings.redis_max_connections,
        )
        log.info("stores_opened", database=_safe(database_url), redis=_safe(redis_url))
        yield Stores(
            engine=engine,
            session_factory=create_session_factory(engine),
            redis=redis,
            database_url=database_url,
            redis_url=redis_url,
            embedded=stack,
        )
    finally:
        if redis is not None:
            await close_quietly("redis", redis.aclose)
        if engine is not None:
            await close_quietly("postgres", engine.dispose)
        if stack is not None:
            stack.__exit__(None, None, None)
        log.info("stores_closed")
