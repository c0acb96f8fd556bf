"""Fixtures for repository tests: a DataContext on the shared Redis/Postgres, under the test's
key prefix, and one whose Redis is a closed port (Redis down)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from zoneinfo import ZoneInfo

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cache import CacheAside, CircuitBreaker, KeySpace, create_redis
from db.repositories import DataContext

BOT_TZ = ZoneInfo("Europe/Moscow")


@pytest.fixture
def cache(redis: Redis) -> CacheAside:
    return CacheAside(redis, jitter=0.1)


@pytest.fixture
def ctx(
    cache: CacheAside,
    key_prefix: str,
    session_factory: async_sessionmaker[AsyncSession],
    db_clean: None,
) -> DataContext:
    return DataContext(cache, KeySpace(key_prefix), session_factory, BOT_TZ)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def down_ctx(
    key_prefix: str, session_factory: async_sessionmaker[AsyncSession], db_clean: None
) -> AsyncIterator[DataContext]:
    """Redis on a port nobody listens on: every Redis call fails fast (connection refused)."""
    client = create_redis(f"redis://127.0.0.1:{_closed_port()}/0")
    cache = CacheAside(client, breaker=CircuitBreaker(failure_threshold=3, cooldown=30))
    try:
        yield DataContext(cache, KeySpace(key_prefix), session_factory, BOT_TZ)
    finally:
        await client.aclose()
