"""Shared fixtures: real Postgres and Redis, isolated per run and per test.

DATABASE_URL / REDIS_URL, when set, point at servers to use (CI uses this machine's); a
uniquely named database is created on that Postgres server for the run, migrated with Alembic and
dropped at the end, and every test gets its own Redis key prefix, deleted after the test (never
FLUSHALL). When they are unset, embedded servers (devtools.embedded) start in a temporary directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from db.engine import create_engine, create_session_factory
from db.testing import temporary_database, truncate_all

# Real-server topologies (cluster, sentinel, pgbouncer, load balancer, fault proxy, fake LLM).
pytest_plugins = ["tests.servers.fixtures"]

ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by folder so `-m unit` / `-m integration` / `-m e2e` select them."""
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
        if parts and parts[0] in {"unit", "integration", "e2e"}:
            item.add_marker(getattr(pytest.mark, parts[0]))


@pytest.fixture(scope="session")
def embedded_stack() -> Iterator[Any]:
    need_pg = not os.environ.get("DATABASE_URL")
    need_redis = not os.environ.get("REDIS_URL")
    if not (need_pg or need_redis):
        yield None
        return
    from devtools.embedded import EmbeddedStack

    # Not under pytest's basetemp: a concurrent pytest session rotates old basetemp folders away,
    # which would delete a running server's data directory.
    base = Path(tempfile.mkdtemp(prefix="horo-test-embedded-"))
    try:
        with EmbeddedStack(
            base, need_postgres=need_pg, need_redis=need_redis, persist=False
        ) as stack:
            yield stack
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url(embedded_stack: Any) -> str:
    return os.environ.get("REDIS_URL") or embedded_stack.redis_url


@pytest.fixture(scope="session")
def postgres_server_url(embedded_stack: Any) -> str:
    url = os.environ.get("DATABASE_URL") or embedded_stack.postgres_url
    return str(make_url(url).set(drivername="postgresql+asyncpg"))


@pytest.fixture(scope="session")
async def database_url(postgres_server_url: str) -> AsyncIterator[str]:
    """A database of our own for this run, created, migrated to head, and dropped at the end."""
    async with temporary_database(postgres_server_url, "horo_test") as url:
        yield url


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(database_url, pool_size=5, max_overflow=20)
    yield eng
    await eng.dispose()


@pytest.fixture(scope="session")
def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_session_factory(engine)


@pytest.fixture
async def db_clean(engine: AsyncEngine) -> AsyncIterator[None]:
    """Empty tables before and after the test (tests share the run's database)."""

    await truncate_all(engine)
    yield
    await truncate_all(engine)


class SQLCounter:
    """Counts SQL statements sent by an engine (a SQLAlchemy event, not timing)."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    @property
    def count(self) -> int:
        return len(self.statements)

    def reset(self) -> None:
        self.statements.clear()


@pytest.fixture
def sql_counter(engine: AsyncEngine) -> Iterator[SQLCounter]:
    counter = SQLCounter()

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        counter.statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", on_execute)
    yield counter
    event.remove(engine.sync_engine, "before_cursor_execute", on_execute)


@pytest.fixture
async def key_prefix(redis_url: str) -> AsyncIterator[str]:
    """A Redis key prefix of this test's own; every key under it is deleted afterwards,
    whichever client wrote it (engine, buffers, locks, a test's private client)."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    yield prefix
    client = Redis.from_url(redis_url, decode_responses=False)
    try:
        await delete_prefix(client, prefix)
    finally:
        await client.aclose()


async def delete_prefix(client: Redis, prefix: str) -> None:
    batch: list[bytes] = []
    async for key in client.scan_iter(match=f"{prefix}:*", count=500):
        batch.append(key)
        if len(batch) >= 500:
            await client.delete(*batch)
            batch.clear()
    if batch:
        await client.delete(*batch)


@pytest.fixture
async def redis(redis_url: str, key_prefix: str) -> AsyncIterator[Redis]:
    """A client on the test Redis; the test's keys go under ``key_prefix`` (cleaned by it)."""
    client = Redis.from_url(redis_url, decode_responses=False)
    try:
        yield client
    finally:
        await client.aclose()
