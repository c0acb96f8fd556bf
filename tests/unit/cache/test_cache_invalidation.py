"""invalidate_after_commit on a real AsyncSession (no statement runs, so no DB is needed)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from cache import CacheAside, Codec
from cache.invalidation import pending_keys
from devtools.traffic import RedisTraffic

INT = Codec(int)


@pytest.fixture
async def session() -> AsyncIterator[AsyncSession]:
    engine = create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    s = AsyncSession(engine)
    yield s
    await s.close()
    await engine.dispose()


async def test_deleted_only_after_commit(
    cache: CacheAside, fake: Any, session: AsyncSession
) -> None:
    await cache.set("t:v1:u:1", 1, ttl=60, codec=INT)
    await session.begin()
    cache.invalidate_after_commit(session, "t:v1:u:1")
    cache.invalidate_after_commit(session, "t:v1:u:1")  # deduplicated
    assert pending_keys(session) == ["t:v1:u:1"]
    traffic = RedisTraffic(fake)
    await cache.wait_background()  # nothing was scheduled either
    assert traffic.count == 0
    assert await fake.get("t:v1:u:1") is not None  # not before the commit
    await session.commit()
    await cache.flush_invalidations(session)
    assert await fake.get("t:v1:u:1") is None  # gone once flush returned
    assert pending_keys(session) == []


async def test_rollback_deletes_nothing(
    cache: CacheAside, fake: Any, session: AsyncSession
) -> None:
    await cache.set("t:v1:u:2", 2, ttl=60, codec=INT)
    await session.begin()
    cache.invalidate_after_commit(session, "t:v1:u:2")
    await session.rollback()
    traffic = RedisTraffic(fake)
    await cache.flush_invalidations(session)
    await cache.wait_background()
    assert traffic.count == 0  # no DEL, now or in the background
    assert await fake.get("t:v1:u:2") is not None
    # the next transaction starts clean: committing it deletes nothing either
    await session.begin()
    await session.commit()
    await cache.flush_invalidations(session)
    await cache.wait_background()
    assert await fake.get("t:v1:u:2") is not None


async def test_savepoint_rollback_keeps_outer_keys(
    cache: CacheAside, fake: Any, session: AsyncSession
) -> None:
    from sqlalchemy.orm import Session

    sync: Session = session.sync_session
    await cache.set("t:v1:u:3", 3, ttl=60, codec=INT)
    cache.invalidate_after_commit(session, "t:v1:u:3")
    # simulate a savepoint's soft rollback: the root transaction is not affected
    from cache import invalidation

    class Nested:
        parent = object()

    invalidation._after_soft_rollback(sync, Nested())  # type: ignore[arg-type]
    assert pending_keys(session) == ["t:v1:u:3"]
    await session.commit()
    await cache.flush_invalidations(session)
    assert await fake.get("t:v1:u:3") is None


async def test_background_safety_net_without_flush(
    cache: CacheAside, fake: Any, session: AsyncSession
) -> None:
    await cache.set("t:v1:u:4", 4, ttl=60, codec=INT)
    cache.invalidate_after_commit(session, "t:v1:u:4")
    await session.commit()  # nobody calls flush_invalidations
    await cache.wait_background()
    assert await fake.get("t:v1:u:4") is None
