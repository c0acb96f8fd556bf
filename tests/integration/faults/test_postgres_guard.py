"""Postgres fails fast (issue 12.2): the breaker stops trying, the bulkhead bounds updates.

A proxy in front of the real Postgres hangs (accepts, never forwards) or resets; nothing here
depends on how long anything takes: the tests count connections reaching the proxy and
rejections, and wait for events.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from cache import CircuitBreaker
from db.engine import create_engine, guard_of
from db.guard import DatabaseUnavailable, PostgresGuard, update_scope
from tests.faults import FaultProxy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture
async def quick_engine(proxied_url: str) -> AsyncIterator[AsyncEngine]:
    """Short timeouts, a breaker that stays open for the whole test once it opens."""
    guard = PostgresGuard(breaker=CircuitBreaker(failure_threshold=3, cooldown=3600), limit=2)
    engine = create_engine(
        proxied_url,
        pool_size=1,
        max_overflow=0,
        connect_timeout=0.3,
        command_timeout=0.3,
        guard=guard,
    )
    yield engine
    await engine.dispose()


async def _select_one(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(text("SELECT 1")) or 0)


async def test_breaker_opens_after_three_timeouts_and_stops_trying(
    quick_engine: AsyncEngine, pg_proxy: FaultProxy
) -> None:
    assert await _select_one(quick_engine) == 1  # healthy: one pooled connection
    pg_proxy.hang()
    reasons = []
    for _ in range(3):
        with pytest.raises(DatabaseUnavailable) as caught:
            await _select_one(quick_engine)
        reasons.append(caught.value.reason)
    assert all(r in {"connect", "timeout"} for r in reasons), reasons
    assert guard_of(quick_engine).breaker.is_open
    tried = pg_proxy.accepted
    for _ in range(5):
        with pytest.raises(DatabaseUnavailable) as caught:
            await _select_one(quick_engine)
        assert caught.value.reason == "open"
    assert pg_proxy.accepted == tried  # an open breaker does not even connect


async def test_bulkhead_bounds_updates_and_frees_slots(
    proxied_url: str, pg_proxy: FaultProxy
) -> None:
    guard = PostgresGuard(breaker=CircuitBreaker(100, 3600), limit=2, wait=0.05)
    engine = create_engine(
        proxied_url,
        pool_size=5,
        max_overflow=5,
        connect_timeout=60,
        command_timeout=60,
        guard=guard,
    )
    try:
        pg_proxy.hang()

        async def update() -> int:
            with update_scope():
                return await _select_one(engine)

        stuck = [asyncio.create_task(update()) for _ in range(2)]
        await pg_proxy.wait_accepted(2)  # both are connecting, and hang there
        assert guard.in_use == 2
        # A third update is refused at once: it must not hold an update slot waiting.
        with pytest.raises(DatabaseUnavailable) as caught:
            await update()
        assert caught.value.reason == "busy"
        assert pg_proxy.accepted == 2
        # Work outside updates (jobs) is not limited by the bulkhead.
        job = asyncio.create_task(_select_one(engine))
        await pg_proxy.wait_accepted(3)
        # Postgres goes away for good: everyone fails, and the slots are free again.
        pg_proxy.refuse()
        pg_proxy.reset()
        results = await asyncio.gather(*stuck, job, return_exceptions=True)
        assert all(isinstance(r, DatabaseUnavailable) for r in results), results
        assert guard.in_use == 0
        pg_proxy.resume()
        with update_scope():
            assert await _select_one(engine) == 1
        assert guard.in_use == 0
    finally:
        await engine.dispose()


async def test_slot_is_handed_to_a_waiting_update(proxied_url: str, pg_proxy: FaultProxy) -> None:
    """A healthy burst beyond the limit waits for a slot instead of failing."""
    guard = PostgresGuard(breaker=CircuitBreaker(3, 3600), limit=1, wait=30)
    engine = create_engine(proxied_url, pool_size=2, max_overflow=0, guard=guard)
    try:
        pg_proxy.hang()

        async def update() -> int:
            with update_scope():
                return await _select_one(engine)

        first = asyncio.create_task(update())
        await pg_proxy.wait_accepted(1)
        second = asyncio.create_task(update())
        while not guard._waiters:  # noqa: ASYNC110 (no I/O to await: the waiter queues itself)
            await asyncio.sleep(0)
        pg_proxy.resume()
        assert await asyncio.gather(first, second) == [1, 1]
        assert guard.in_use == 0
    finally:
        await engine.dispose()


async def test_statement_timeout_is_unavailable_not_a_bug(database_url: str) -> None:
    engine = create_engine(database_url, statement_timeout=0.05, command_timeout=5)
    try:
        with pytest.raises(DatabaseUnavailable) as caught:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT pg_sleep(1)"))
        assert caught.value.reason == "timeout"
        assert await _select_one(engine) == 1  # the connection is still usable
    finally:
        await engine.dispose()
