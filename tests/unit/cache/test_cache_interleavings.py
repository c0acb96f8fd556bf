"""Hypothesis: interleaved reads, writes-with-invalidate-after-commit and expiries.

Property: once a write's commit + flush_invalidations has returned, no reader that starts
afterwards sees a value older than that write (the classic cache-aside race, where a slow
reader puts the old row back after the deletion, must not happen).
"""

from __future__ import annotations

import asyncio
from typing import Any

import fakeredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from cache import CacheAside, CacheMetrics, Codec

INT = Codec(int)
KEY = "t:v1:row:1"

ops = st.lists(
    st.tuples(
        st.sampled_from(["read", "read", "read", "write", "expire"]),
        st.integers(min_value=0, max_value=40),  # start delay (event-loop ticks)
        st.integers(min_value=0, max_value=40),  # work delay inside the op
    ),
    min_size=1,
    max_size=14,
)


async def ticks(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def scenario(plan: list[tuple[str, int, int]]) -> None:
    redis = fakeredis.FakeAsyncRedis()
    cache = CacheAside(redis, metrics=CacheMetrics(CollectorRegistry()))
    engine = create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    db = {"v": 0}
    flushed = {"v": 0}  # highest version whose invalidation has returned
    violations: list[str] = []

    async def read(start: int, work: int) -> None:
        await ticks(start)
        floor = flushed["v"]

        async def loader() -> int:
            seen = db["v"]
            await ticks(work)  # a write may commit and invalidate meanwhile
            return seen

        value = await cache.get_or_load(KEY, loader, ttl=60, codec=INT)
        if value is None or value < floor:
            violations.append(f"read {value} after version {floor} was invalidated")

    async def write(start: int, work: int) -> None:
        await ticks(start)
        session = AsyncSession(engine)
        try:
            await session.begin()
            cache.invalidate_after_commit(session, KEY)
            await ticks(work)
            db["v"] += 1
            version = db["v"]
            await session.commit()
            await cache.flush_invalidations(session)
            flushed["v"] = max(flushed["v"], version)
        finally:
            await session.close()

    async def expire(start: int, _work: int) -> None:
        await ticks(start)
        await redis.delete(KEY)

    actions: dict[str, Any] = {"read": read, "write": write, "expire": expire}
    try:
        await asyncio.gather(*(actions[name](s, w) for name, s, w in plan))
        await read(0, 0)  # a final read after everything settled
        assert not violations, violations
    finally:
        await cache.aclose()
        await redis.aclose()
        await engine.dispose()


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops)
def test_no_stale_read_after_invalidation(plan: list[tuple[str, int, int]]) -> None:
    asyncio.run(scenario(plan))
