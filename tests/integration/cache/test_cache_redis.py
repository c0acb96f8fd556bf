"""The engine and the lock against a real Redis (Lua scripts, pub/sub, TTLs, pipelines)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from sqlalchemy import text

from cache import CacheAside, CacheMetrics, Codec, Load, RedisLock, SideCommand, create_redis
from cache.pipelining import PipelineBatcher

INT = Codec(int)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    # generous timeouts: these tests are about semantics, and the machine may be busy
    c = create_redis(redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
    yield c
    await c.aclose()


@pytest.fixture
def cache(client: Redis) -> CacheAside:
    return CacheAside(
        client, metrics=CacheMetrics(CollectorRegistry()), lock_wait=2.0, op_timeout=2.0
    )


async def test_lock_tokens_extend_release(client: Redis, key_prefix: str) -> None:
    name = f"{key_prefix}:v1:lock:job"
    a = RedisLock(client, name, lease=1.0)
    b = RedisLock(client, name, lease=1.0)
    assert await a.acquire()
    assert not await b.acquire()
    assert not await b.release()  # not b's token: nothing deleted
    assert not await b.extend()
    assert await client.get(name) == a.token
    assert await a.extend(5.0)
    assert 4000 < await client.pttl(name) <= 5000
    assert await a.release()
    assert await client.get(name) is None
    assert await b.acquire()
    assert not await a.release()
    assert await client.get(name) == b.token


async def test_crashed_holder_lease_expires(client: Redis, key_prefix: str) -> None:
    name = f"{key_prefix}:v1:lock:crash"
    assert await RedisLock(client, name, lease=0.2).acquire()  # "crashes": never releases
    other = RedisLock(client, name, lease=0.2)
    assert not await other.acquire()
    await asyncio.sleep(0.25)
    assert await other.acquire()


async def test_hold_extends_while_body_runs(client: Redis, key_prefix: str) -> None:
    name = f"{key_prefix}:v1:lock:hold"
    lock = RedisLock(client, name, lease=0.3)
    async with lock.hold() as held:
        assert held
        await asyncio.sleep(0.8)  # well past the lease
        assert await client.get(name) == lock.token
        assert not lock.lost
    assert await client.get(name) is None
    async with (
        RedisLock(client, name).hold() as leader,
        RedisLock(client, name).hold() as second,
    ):
        assert leader and not second


async def test_waiter_woken_by_publish_not_polling(
    cache: CacheAside, client: Redis, key_prefix: str
) -> None:
    key = f"{key_prefix}:v1:ns:wake"
    holder = RedisLock(client, key + ":lock", lease=5)
    assert await holder.acquire()
    other = CacheAside(client, metrics=CacheMetrics(CollectorRegistry()), op_timeout=2.0)
    calls = 0

    async def loader() -> int:
        nonlocal calls
        calls += 1
        return 1

    async def finish() -> None:
        await asyncio.sleep(0.3)
        await other._commit(
            holder, key, "ns", other._envelope(0x56, 60_000, 5, INT.encode(7)), 60_000
        )

    start = time.perf_counter()
    value, _ = await asyncio.gather(cache.get_or_load(key, loader, ttl=60, codec=INT), finish())
    elapsed = time.perf_counter() - start
    assert value == 7 and calls == 0
    assert 0.25 < elapsed < 1.0  # woken by the message, well before lock_wait (2 s)
    assert await client.get(key + ":lock") is None


async def test_waiter_falls_back_after_lock_wait(client: Redis, key_prefix: str) -> None:
    key = f"{key_prefix}:v1:ns:stuck"
    await client.set(key + ":lock", b"crashed-holder", px=10_000)
    cache = CacheAside(
        client, metrics=CacheMetrics(CollectorRegistry()), lock_wait=0.3, op_timeout=2.0
    )

    async def loader() -> int:
        return 5

    start = time.perf_counter()
    assert await cache.get_or_load(key, loader, ttl=60, codec=INT) == 5
    assert 0.3 <= time.perf_counter() - start < 1.0
    assert await client.get(key) is None  # did not hold the lock: did not write


async def test_long_loader_extends_lease(client: Redis, key_prefix: str) -> None:
    key = f"{key_prefix}:v1:ns:long"
    cache = CacheAside(
        client, metrics=CacheMetrics(CollectorRegistry()), lock_lease=0.3, op_timeout=2.0
    )

    async def slow() -> int:
        await asyncio.sleep(0.8)
        assert await client.exists(key + ":lock")
        return 3

    assert await cache.get_or_load(key, slow, ttl=60, codec=INT) == 3
    assert await client.get(key + ":lock") is None
    assert await cache.get_or_load(key, slow, ttl=60, codec=INT) == 3


async def test_ttl_negative_ttl_and_side_commands(
    cache: CacheAside, client: Redis, key_prefix: str
) -> None:
    key = f"{key_prefix}:v1:ns:1"
    views = f"{key_prefix}:v1:views"

    async def found() -> int:
        return 1

    async def missing() -> int | None:
        return None

    also = [SideCommand(("HINCRBY", views, "aries", 1))]
    assert await cache.get_or_load(key, found, ttl=100, codec=INT, also=also) == 1
    assert 89_000 <= await client.pttl(key) <= 110_000
    assert await cache.get_or_load(key, found, ttl=100, codec=INT, also=also) == 1
    assert await client.hget(views, "aries") == b"2"
    assert await client.ttl(views) == -1  # buffers carry no TTL
    nf = f"{key_prefix}:v1:ns:2"
    assert await cache.get_or_load(nf, missing, ttl=100, codec=INT, negative_ttl=5) is None
    assert 4000 <= await client.pttl(nf) <= 5600
    res = await cache.load_many([Load(key, found, INT, 100), Load(nf, found, INT, 100)], also=also)
    assert res == [1, None]
    assert await client.hget(views, "aries") == b"3"


async def test_invalidation_race_does_not_write_back(
    cache: CacheAside, client: Redis, key_prefix: str
) -> None:
    key = f"{key_prefix}:v1:ns:race"
    gate = asyncio.Event()

    async def old() -> int:
        await gate.wait()
        return 1

    async def new() -> int:
        return 2

    reader = asyncio.create_task(cache.get_or_load(key, old, ttl=60, codec=INT))
    await asyncio.sleep(0.05)
    other = CacheAside(
        client, metrics=CacheMetrics(CollectorRegistry()), op_timeout=2.0
    )  # another process
    await other.invalidate(key)
    gate.set()
    assert await reader == 1
    assert await client.get(key) is None  # the stale load could not write back
    assert await other.get_or_load(key, new, ttl=60, codec=INT) == 2


async def test_after_commit_with_postgres(
    cache: CacheAside, client: Redis, key_prefix: str, session_factory: Any
) -> None:
    key = f"{key_prefix}:v1:ns:user"
    await cache.set(key, 1, ttl=60, codec=INT)
    async with session_factory() as session:
        await session.execute(text("SELECT 1"))
        cache.invalidate_after_commit(session, key)
        assert await client.get(key) is not None
        await session.commit()
        await cache.flush_invalidations(session)
        assert await client.get(key) is None
    await cache.set(key, 1, ttl=60, codec=INT)
    async with session_factory() as session:
        await session.execute(text("SELECT 1"))
        cache.invalidate_after_commit(session, key)
        await session.rollback()
        await cache.flush_invalidations(session)
    await cache.wait_background()
    assert await client.get(key) is not None


async def test_pipeline_error_reply_stays_in_place(client: Redis, key_prefix: str) -> None:
    """A command Redis rejects comes back as its error where it stood; the others still ran."""
    text_key, counter = f"{key_prefix}:v1:t:text", f"{key_prefix}:v1:t:n"
    await client.set(text_key, b"not a number")
    batcher = PipelineBatcher(timeout=1.0)
    replies = await batcher.execute(
        client, [("INCR", counter), ("INCR", text_key), ("GET", text_key), ("INCR", counter)]
    )
    assert replies[0] == 1 and replies[2] == b"not a number" and replies[3] == 2
    assert isinstance(replies[1], ResponseError)


async def test_pipeline_cut_off_mid_reply_never_leaks_into_the_next(
    client: Redis, key_prefix: str
) -> None:
    """A timeout after sending leaves a reply on the wire: that connection must not be reused,
    or the next caller would read the previous caller's answer."""
    key, empty = f"{key_prefix}:v1:t:value", f"{key_prefix}:v1:t:empty"
    await client.set(key, b"mine")
    batcher = PipelineBatcher(timeout=0.05)
    with pytest.raises(TimeoutError):
        await batcher.execute(client, [("BLPOP", empty, 0.3)])  # answers (nil) after 0.3 s
    for _ in range(5):  # whichever pooled connection comes next
        assert await batcher.execute(client, [("GET", key)]) == [b"mine"]
    await asyncio.sleep(0.35)
    assert await batcher.execute(client, [("GET", key)]) == [b"mine"]


async def test_pipeline_keeps_its_connection_and_survives_a_killed_one(
    client: Redis, key_prefix: str, redis_url: str
) -> None:
    """Sequential pipelines reuse one kept connection; one closed by the server meanwhile is
    reconnected before sending (a dead kept connection must not turn into an ambiguous
    "sent, no reply" that would drop side commands)."""
    key = f"{key_prefix}:v1:t:kept"
    await client.set(key, b"v")
    batcher = PipelineBatcher(timeout=1.0)
    ids = {(await batcher.execute(client, [("CLIENT", "ID")]))[0] for _ in range(20)}
    assert len(ids) == 1  # one connection, kept between pipelines
    killer = Redis.from_url(redis_url)
    try:
        await killer.execute_command("CLIENT", "KILL", "ID", ids.pop())
    finally:
        await killer.aclose()
    await asyncio.sleep(0.05)
    assert await batcher.execute(client, [("GET", key)]) == [b"v"]
    await batcher.aclose()
    pool: Any = client.connection_pool
    assert not pool._in_use_connections  # kept connections went back to the pool
