"""The engine and the lock against a real Redis (Lua scripts, pub/sub, TTLs, pipelines).

No stopwatch: "woken by the message" is shown by a lock_wait far beyond the hang guard, "not
polling" by the commands counted, "the lease was extended" by counted extensions, and a wait
for another task or for Redis is a wait for a condition under ``HANG_GUARD``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from _cache_servers import HANG_GUARD
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from sqlalchemy import text

from cache import CacheAside, CacheMetrics, Codec, Load, RedisLock, SideCommand, create_redis
from cache.envelope import seal
from cache.pipelining import PipelineBatcher
from devtools.traffic import RedisTraffic

INT = Codec(int)
#: lock_wait of a waiter that must be woken by the holder's message: if it were not, the call
#: would outlast the hang guard (and fail) instead of ending after a bound nobody notices.
FOREVER = 3600.0


async def until(condition: Callable[[], Awaitable[bool]], pace: float = 0.01) -> None:
    """Wait until ``condition()`` holds (state in Redis or in another task), under the hang
    guard; ``pace`` only keeps the loop from spinning."""
    async with asyncio.timeout(HANG_GUARD):
        while not await condition():  # noqa: ASYNC110 (state in Redis or another task)
            await asyncio.sleep(pace)


class Extensions:
    """Counts RedisLock.extend calls (every lock's) and lets a test wait for the n-th."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.ok = 0
        self.failed = 0
        original = RedisLock.extend

        async def extend(lock: RedisLock, lease: float | None = None) -> bool:
            done = await original(lock, lease)
            if done:
                self.ok += 1
            else:
                self.failed += 1
            return done

        monkeypatch.setattr(RedisLock, "extend", extend)

    async def wait(self, n: int) -> None:
        """Until ``n`` extensions found the lock still ours (a failed one ends the wait)."""

        async def reached() -> bool:
            return self.ok >= n or self.failed > 0

        await until(reached, pace=0.005)


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
    # leases far longer than the test: nothing here may depend on how fast it runs
    a = RedisLock(client, name, lease=30.0)
    b = RedisLock(client, name, lease=30.0)
    assert await a.acquire()
    assert not await b.acquire()
    assert not await b.release()  # not b's token: nothing deleted
    assert not await b.extend()
    assert await client.get(name) == a.token
    assert await a.extend(300.0)
    assert 30_000 < await client.pttl(name) <= 300_000  # reset to the new lease
    assert await a.release()
    assert await client.get(name) is None
    assert await b.acquire()
    assert not await a.release()
    assert await client.get(name) == b.token


async def test_crashed_holder_lease_expires(client: Redis, key_prefix: str) -> None:
    name = f"{key_prefix}:v1:lock:crash"
    crashed = RedisLock(client, name, lease=1.0)
    assert await crashed.acquire()  # "crashes": never releases
    other = RedisLock(client, name, lease=1.0)
    assert not await other.acquire()

    async def expired() -> bool:  # Redis' clock, not ours: wait until its lease ran out
        return not await client.exists(name)

    await until(expired)
    assert await other.acquire()
    assert not await crashed.release()  # the crashed holder cannot free the new one's lock


async def test_hold_extends_while_body_runs(
    client: Redis, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"{key_prefix}:v1:lock:hold"
    extensions = Extensions(monkeypatch)
    lock = RedisLock(client, name, lease=0.6)
    async with lock.hold() as held:
        assert held
        # Four renewals, each after lease/3 at least: the body has outlived the first lease.
        await extensions.wait(4)
        assert extensions.failed == 0  # every renewal found the lock still ours
        assert await client.get(name) == lock.token
        assert not lock.lost
    assert await client.get(name) is None
    async with (
        RedisLock(client, name).hold() as leader,
        RedisLock(client, name).hold() as second,
    ):
        assert leader and not second


async def test_waiter_woken_by_publish_not_polling(
    client: Redis, key_prefix: str, redis_url: str
) -> None:
    """The waiter subscribes, re-checks once and sleeps until the holder's message: a handful
    of commands, however long the holder takes (no GET per tick), and it never loads."""
    key = f"{key_prefix}:v1:ns:wake"
    holder = RedisLock(client, key + ":lock", lease=60)
    assert await holder.acquire()
    other = CacheAside(client, metrics=CacheMetrics(CollectorRegistry()), op_timeout=2.0)
    waiter_client = create_redis(redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
    traffic = RedisTraffic(waiter_client)
    waiter = _process(waiter_client, lock_wait=FOREVER)
    calls = 0

    async def loader() -> int:
        nonlocal calls
        calls += 1
        return 1

    try:
        waiting = asyncio.create_task(waiter.get_or_load(key, loader, ttl=60, codec=INT))

        async def waiting_for_the_message() -> bool:
            # GET (miss), SET NX (the lock is taken), SUBSCRIBE, GET (the re-check)
            return traffic.names["SUBSCRIBE"] == 1 and traffic.names["GET"] == 2

        await until(waiting_for_the_message, pace=0.001)
        sent = list(traffic.commands)
        # Time for a poller to give itself away. Not a synchronisation: a correct waiter
        # sends nothing here however long this takes, so the length only sets how sure we are.
        await asyncio.sleep(0.2)
        assert traffic.commands == sent
        await other._commit(holder, key, "ns", seal(60_000, 5, INT.encode(7)), 60_000)
        async with asyncio.timeout(HANG_GUARD):  # woken by the message, not by lock_wait
            assert await waiting == 7
        assert calls == 0
        assert traffic.commands == [*sent, ("GET", key)]  # one GET once woken
        assert await client.get(key + ":lock") is None
    finally:
        await waiter.aclose()
        await waiter_client.aclose()


async def test_waiter_falls_back_after_lock_wait(
    client: Redis, key_prefix: str, redis_url: str
) -> None:
    """No message comes (the holder crashed, its lease still runs): the waiter waits on the
    channel until lock_wait, tries the lock once more, and loads without writing."""
    key = f"{key_prefix}:v1:ns:stuck"
    await client.set(key + ":lock", b"crashed-holder", px=60_000)
    waiter_client = create_redis(redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
    traffic = RedisTraffic(waiter_client)
    metrics = CacheMetrics(CollectorRegistry())
    cache = CacheAside(waiter_client, metrics=metrics, lock_wait=0.3, op_timeout=2.0)

    async def loader() -> int:
        return 5

    try:
        async with asyncio.timeout(HANG_GUARD):
            assert await cache.get_or_load(key, loader, ttl=60, codec=INT) == 5
        assert metrics.snapshot()["ns"]["lock_waited"] == 1
        lock_attempts = [c for c in traffic.commands if c[0] == "SET"]
        assert lock_attempts == [("SET", key + ":lock")] * 2  # before and after the wait
        # the wait itself: SUBSCRIBE and one re-check, no polling, no GET after a message
        assert traffic.names["SUBSCRIBE"] == 1 and traffic.names["GET"] == 2
        assert await client.get(key) is None  # did not hold the lock: did not write
    finally:
        await cache.aclose()
        await waiter_client.aclose()


async def _until_locked(client: Redis, key: str) -> None:
    """Wait until a holder has taken ``key``'s load lock."""

    async def locked() -> bool:
        return bool(await client.exists(key + ":lock"))

    await until(locked)


async def _until_subscribed(client: Redis, key: str) -> None:
    """Wait until a waiter listens on ``key``'s channel."""
    channel = key + ":chan"

    async def subscribed() -> bool:
        return bool(dict(await client.pubsub_numsub(channel)).get(channel.encode()))

    await until(subscribed)


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
    holder, waiter = _process(client), _process(client, lock_wait=FOREVER)
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
    gate.set()
    with pytest.raises(LookupError):
        await holding
    async with asyncio.timeout(HANG_GUARD):  # woken by the holder, not by lock_wait
        assert await waiting == 8
    assert await client.exists(key) == 1  # the waiter took the lock and wrote


async def test_dropped_write_still_wakes_waiters(client: Redis, key_prefix: str) -> None:
    """An invalidation deleted the lock while the holder loaded: the holder's (maybe old) value
    is not written, but its waiters are woken anyway and load themselves at once."""
    key = f"{key_prefix}:v1:ns:dropped"
    holder, waiter = _process(client), _process(client, lock_wait=FOREVER)
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
    gate.set()
    assert await holding == 1
    async with asyncio.timeout(HANG_GUARD):  # woken by the holder, not by lock_wait
        assert await waiting == 2
    assert await _process(client).get_or_load(key, old, ttl=60, codec=INT) == 2


async def test_waiter_gets_not_found_from_the_holder_without_loading(
    client: Redis, key_prefix: str
) -> None:
    """The holder found nothing and cached NOT_FOUND: the waiter answers None from it."""
    key = f"{key_prefix}:v1:ns:nobody"
    holder, waiter = _process(client), _process(client, lock_wait=FOREVER)
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
    async with asyncio.timeout(HANG_GUARD):
        assert await waiting is None
    assert calls == 0


async def test_long_loader_extends_lease(
    client: Redis, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = f"{key_prefix}:v1:ns:long"
    extensions = Extensions(monkeypatch)
    cache = CacheAside(
        client, metrics=CacheMetrics(CollectorRegistry()), lock_lease=0.6, op_timeout=2.0
    )

    async def slow() -> int:
        # runs until the lease was renewed four times (each after lease/3 at least): the load
        # outlived its first lease and the lock is still there
        await extensions.wait(4)
        assert extensions.failed == 0
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
    # jitter bounds are exact in the unit tests (a still clock); here: this TTL, not another
    assert 50_000 < await client.pttl(key) <= 110_000
    assert await cache.get_or_load(key, found, ttl=100, codec=INT, also=also) == 1
    assert await client.hget(views, "aries") == b"2"
    assert await client.ttl(views) == -1  # buffers carry no TTL
    nf = f"{key_prefix}:v1:ns:2"
    assert await cache.get_or_load(nf, missing, ttl=100, codec=INT, negative_ttl=5) is None
    assert 0 < await client.pttl(nf) <= 5_500  # the negative TTL, not the value's
    res = await cache.load_many([Load(key, found, INT, 100), Load(nf, found, INT, 100)], also=also)
    assert res == [1, None]
    assert await client.hget(views, "aries") == b"3"


async def test_invalidation_race_does_not_write_back(
    cache: CacheAside, client: Redis, key_prefix: str
) -> None:
    key = f"{key_prefix}:v1:ns:race"
    gate = asyncio.Event()
    loading = asyncio.Event()

    async def old() -> int:
        loading.set()  # it holds the lock and reads the old row
        await gate.wait()
        return 1

    async def new() -> int:
        return 2

    reader = asyncio.create_task(cache.get_or_load(key, old, ttl=60, codec=INT))
    async with asyncio.timeout(HANG_GUARD):
        await loading.wait()
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
    client: Redis, key_prefix: str, redis_url: str
) -> None:
    """A caller cut off after sending leaves a reply due on the wire: that connection must not
    be reused, or the next caller would read the previous caller's answer.

    The BLPOP blocks until the test pushes: the cut-off happens while Redis holds it (seen in
    CLIENT LIST), and the late reply is made to exist on demand, not waited for."""
    key, empty = f"{key_prefix}:v1:t:value", f"{key_prefix}:v1:t:empty"
    name = f"cutoff-{uuid.uuid4().hex[:12]}"
    own = create_redis(
        redis_url, client_name=name, socket_timeout=FOREVER, socket_connect_timeout=2
    )
    await client.set(key, b"mine")
    batcher = PipelineBatcher(timeout=HANG_GUARD)

    async def blocked() -> bool:
        clients = await client.client_list()
        return any(c.get("name") == name and c.get("cmd") == "blpop" for c in clients)

    try:
        call = asyncio.create_task(batcher.execute(own, [("BLPOP", empty, 0)]))  # blocks
        await until(blocked)
        call.cancel()  # the caller gives up mid-exchange (as a timeout does: it cancels)
        with pytest.raises(asyncio.CancelledError):
            await call
        for _ in range(5):  # whichever pooled connection comes next
            assert await batcher.execute(own, [("GET", key)]) == [b"mine"]
        await client.rpush(empty, b"late")  # had the cut connection survived, it got this
        for _ in range(5):
            assert await batcher.execute(own, [("GET", key)]) == [b"mine"]
    finally:
        await batcher.aclose()
        await own.aclose()


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
    kept: Any = batcher._held[0][1]

    async def closed_by_server() -> bool:  # the kill's EOF has reached the kept connection
        return kept._reader is None or kept._reader.at_eof()

    await until(closed_by_server, pace=0.001)
    assert await batcher.execute(client, [("GET", key)]) == [b"v"]
    await batcher.aclose()
    pool: Any = client.connection_pool
    assert not pool._in_use_connections  # kept connections went back to the pool
