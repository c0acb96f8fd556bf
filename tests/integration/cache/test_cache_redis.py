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
from cache.envelope import seal
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
        await other._commit(holder, key, "ns", seal(60_000, 5, INT.encode(7)), 60_000)

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


async def _until_locked(client: Redis, key: str) -> None:
    """Wait until a holder has taken ``key``'s load lock."""
    async with asyncio.timeout(5):
        while not await client.exists(key + ":lock"):  # noqa: ASYNC110 (state in Redis)
            await asyncio.sleep(0.01)


async def _until_subscribed(client: Redis, key: str) -> None:
    """Wait until a waiter listens on ``key``'s channel."""
    channel = key + ":chan"
    async with asyncio.timeout(5):
        while not dict(await client.pubsub_numsub(channel)).get(channel.encode()):  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def _process(client: Redis, lock_wait: float = 5.0) -> CacheAside:
    """Another process' engine on the same Redis (its own single-flight and pipelines)."""
    return CacheAside(
        client, metrics=CacheMetrics(CollectorRegistry()), lock_wait=lock_wait, op_timeout=2.0
    )


async def test_waiter_takes_the_freed_lock_and_writes(client: Redis, key_prefix: str) -> None:
    """A holder crashed and its lease ran out: after lock_wait the waiter takes the now free
    lock and loads as the holder, so its value is cached for everyone (not loaded unwritten)."""
    key = f"{key_prefix}:v1:ns:expired"
    await client.set(key + ":lock", b"crashed-holder", px=200)
    cache = _process(client, lock_wait=0.4)
    calls = 0

    async def loader() -> int:
        nonlocal calls
        calls += 1
        return 5

    assert await cache.get_or_load(key, loader, ttl=60, codec=INT) == 5
    assert await client.exists(key) == 1  # written under the lock it took
    assert await client.get(key + ":lock") is None  # and released
    assert await _process(client).get_or_load(key, loader, ttl=60, codec=INT) == 5
    assert calls == 1


async def test_holder_loader_error_wakes_waiters_at_once(client: Redis, key_prefix: str) -> None:
    """The holder's loader fails: it releases the lock *and* publishes, so a waiter in another
    process takes over at once instead of sitting out lock_wait."""
    key = f"{key_prefix}:v1:ns:holder-fails"
    holder, waiter = _process(client), _process(client, lock_wait=3.0)
    gate = asyncio.Event()

    async def failing() -> int:
        await gate.wait()
        raise LookupError("db down")

    async def ok() -> int:
        return 8

    holding = asyncio.create_task(holder.get_or_load(key, failing, ttl=60, codec=INT))
    await _until_locked(client, key)
    waiting = asyncio.create_task(waiter.get_or_load(key, ok, ttl=60, codec=INT))
    await _until_subscribed(client, key)
    start = time.perf_counter()
    gate.set()
    with pytest.raises(LookupError):
        await holding
    assert await waiting == 8
    assert time.perf_counter() - start < 1.5  # woken, not after lock_wait (3 s)
    assert await client.exists(key) == 1  # the waiter took the lock and wrote


async def test_dropped_write_still_wakes_waiters(client: Redis, key_prefix: str) -> None:
    """An invalidation deleted the lock while the holder loaded: the holder's (maybe old) value
    is not written, but its waiters are woken anyway and load themselves at once."""
    key = f"{key_prefix}:v1:ns:dropped"
    holder, waiter = _process(client), _process(client, lock_wait=3.0)
    gate = asyncio.Event()

    async def old() -> int:
        await gate.wait()
        return 1

    async def new() -> int:
        return 2

    holding = asyncio.create_task(holder.get_or_load(key, old, ttl=60, codec=INT))
    await _until_locked(client, key)
    waiting = asyncio.create_task(waiter.get_or_load(key, new, ttl=60, codec=INT))
    await _until_subscribed(client, key)
    await _process(client).invalidate(key)  # a write committed elsewhere
    start = time.perf_counter()
    gate.set()
    assert await holding == 1
    assert await waiting == 2
    assert time.perf_counter() - start < 1.5  # woken by the holder, not after lock_wait (3 s)
    assert await _process(client).get_or_load(key, old, ttl=60, codec=INT) == 2


async def test_waiter_gets_not_found_from_the_holder_without_loading(
    client: Redis, key_prefix: str
) -> None:
    """The holder found nothing and cached NOT_FOUND: the waiter answers None from it."""
    key = f"{key_prefix}:v1:ns:nobody"
    holder, waiter = _process(client), _process(client, lock_wait=3.0)
    gate = asyncio.Event()
    calls = 0

    async def missing() -> int | None:
        await gate.wait()
        return None

    async def loader() -> int:
        nonlocal calls
        calls += 1
        return 9

    holding = asyncio.create_task(
        holder.get_or_load(key, missing, ttl=60, codec=INT, negative_ttl=30)
    )
    await _until_locked(client, key)
    waiting = asyncio.create_task(
        waiter.get_or_load(key, loader, ttl=60, codec=INT, negative_ttl=30)
    )
    await _until_subscribed(client, key)
    gate.set()
    assert await holding is None
    assert await waiting is None
    assert calls == 0


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
