"""Fixtures for the job tests: JobDeps on the shared Redis/Postgres under the test's key prefix,
a pinned clock, and a generator that counts (and can fail or hang) per key."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from devtools.botapi import BotAPIServer
from jobs.deps import JobDeps
from tests.integration.jobs.jobs_support import (
    TOKEN,
    CountingGenerator,
    PinnedClock,
    make_deps,
    make_settings,
    push_deps_for,
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


@pytest.fixture
async def botapi() -> AsyncIterator[BotAPIServer]:
    server = BotAPIServer(tokens=[TOKEN])
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def push_deps(deps: JobDeps, botapi: BotAPIServer) -> AsyncIterator[JobDeps]:
    """``deps`` able to push (a Bot on the double, an image sender)."""
    with_bot = push_deps_for(deps, botapi)
    yield with_bot
    assert with_bot.bot is not None
    await with_bot.bot.session.close()
