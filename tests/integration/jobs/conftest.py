"""Fixtures for the job tests: JobDeps on the shared Redis/Postgres under the test's key prefix,
a pinned clock, and a generator that counts (and can fail or hang) per key."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from jobs.deps import JobDeps
from tests.integration.jobs.jobs_support import (
    CountingGenerator,
    PinnedClock,
    make_deps,
    make_settings,
)


@pytest.fixture
def clock() -> PinnedClock:
    return PinnedClock(dt.datetime(2026, 3, 10, 10, 30, tzinfo=dt.UTC))


@pytest.fixture
def generator() -> CountingGenerator:
    return CountingGenerator()


@pytest.fixture
async def deps(
    key_prefix: str,
    redis: Redis,
    session_factory: async_sessionmaker[AsyncSession],
    db_clean: None,
    clock: PinnedClock,
    generator: CountingGenerator,
) -> AsyncIterator[JobDeps]:
    d = make_deps(
        make_settings(key_prefix), redis, session_factory, generator=generator, clock=clock
    )
    yield d
    await d.cache.aclose()
