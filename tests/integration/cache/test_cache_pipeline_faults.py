"""Reads riding shared pipelines on a real Redis: concurrency, cancellation, a connection cut
mid-batch, a Redis that stops answering on open connections. A reply never reaches the wrong
caller, a cut connection is never reused, and a hung Redis costs a bounded wait.

Faults are real: a TCP proxy (``FaultProxy``) between the client and Redis cuts a connection
in the middle of a pipeline's reply, or stops forwarding. Keys hold distinct values, so a reply
delivered to the wrong caller shows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlparse

import pytest
from _cache_servers import FaultProxy
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from cache import CacheAside, CacheMetrics, CircuitBreaker, Codec, SideCommand, create_redis
from cache.breaker import OPEN
from cache.pipelining import NotSentError, PipelineBatcher, _direct_writer, _hiredis_reader
from devtools.traffic import RedisTraffic

TEXT = Codec(str)
N = 20
VALUE_BYTES = 1000


def value(i: int) -> str:
    return f"{i:04d}" + "x" * (VALUE_BYTES - 4)


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[FaultProxy]:
    p = FaultProxy(urlparse(redis_url).port or 6379)
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
async def keys(redis: Redis, key_prefix: str) -> list[str]:
    names = [f"{key_prefix}:v1:pl:{i}" for i in range(N)]
    cache = CacheAside(redis, metrics=CacheMetrics(CollectorRegistry()))
    await cache.set_many([(k, value(i)) for i, k in enumerate(names)], ttl=600, codec=TEXT)
    await cache.aclose()
    return names


def engine(client: Redis, **kw: Any) -> CacheAside:
    return CacheAside(client, metrics=CacheMetrics(CollectorRegistry()), op_timeout=2.0, **kw)


async def never() -> str:
    raise AssertionError("warm keys: never loads")


async def test_concurrent_hits_ride_shared_pipelines(redis_url: str, keys: list[str]) -> None:
    """With redis-py's hiredis connections (replies taken from the reader's buffer): every
    caller gets its own value, in a few round trips on a few connections."""
    client = create_redis(redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
    cache = engine(client)
    try:
        conn = await client.connection_pool.get_connection()
        # the paths tested: replies taken from the reader's buffer, small writes put directly
        assert _hiredis_reader(conn) is not None
        assert _direct_writer(conn, [b"GET k"]) is not None
        await client.connection_pool.release(conn)
        trips = RedisTraffic(client)
        callers = [keys[i % N] for i in range(500)]
        got = await asyncio.gather(
            *(cache.get_or_load(k, never, ttl=600, codec=TEXT) for k in callers)
        )
        assert got == [value(i % N) for i in range(500)]
        assert trips.count <= 10, trips.count
        assert len(client.connection_pool._in_use_connections) <= cache._batcher.max_in_flight
    finally:
        await cache.aclose()
        await client.aclose()


async def test_cancelled_callers_of_shared_batches_leave_no_reply_behind(
    redis_url: str, keys: list[str]
) -> None:
    """A third of the callers are cancelled while their batch is out; the others get their
    own values, and the connections stay in step: every later read is answered correctly."""
    client = create_redis(redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
    cache = engine(client)
    try:
        for _ in range(5):
            tasks = [
                asyncio.create_task(cache.get_or_load(keys[i % N], never, ttl=600, codec=TEXT))
                for i in range(60)
            ]
            await asyncio.sleep(0)  # the first is out, the others queued or on their way
            for t in tasks[1::3]:
                t.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for i, r in enumerate(results):
                if i % 3 == 1:
                    assert r == value(i % N) or isinstance(r, asyncio.CancelledError)
                else:
                    assert r == value(i % N)
        for i, k in enumerate(keys):  # one by one: each on whatever connection is kept
            assert await cache.get_or_load(k, never, ttl=600, codec=TEXT) == value(i)
    finally:
        await cache.aclose()
        await client.aclose()


async def test_connection_cut_mid_batch_fails_that_batch_only(
    proxy: FaultProxy, keys: list[str], redis: Redis
) -> None:
    """The connection carrying a batch of GETs is cut in the middle of its replies: each of
    those callers gets a connection error (sent: not NotSentError), nobody gets a value meant
    for another, the cut connection is dropped, and the next reads are all correct."""
    stored = await redis.mget(keys)  # the envelopes, as the batcher returns them
    client = create_redis(proxy.url, socket_timeout=2.0, socket_connect_timeout=2.0)
    batcher = PipelineBatcher(timeout=2.0)
    try:
        assert await batcher.execute_one(client, ("GET", keys[0])) == stored[0]
        proxy.cut_after(VALUE_BYTES * 3 // 2)  # one reply passes, a batch's do not
        tasks = [asyncio.create_task(batcher.execute_one(client, ("GET", k))) for k in keys]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert results[0] == stored[0]  # sent alone, answered in full
        batch = results[1:]
        assert all(isinstance(r, RedisConnectionError) for r in batch), batch
        assert not any(isinstance(r, NotSentError) for r in batch)
        assert len(proxy.cut) == 1
        proxy.cut_after(None)
        for _ in range(3):
            again = await asyncio.gather(*(batcher.execute_one(client, ("GET", k)) for k in keys))
            assert again == stored
    finally:
        await batcher.aclose()
        await client.aclose()


async def test_engine_reads_in_a_cut_batch_fall_back_to_their_own_loaders(
    proxy: FaultProxy, keys: list[str]
) -> None:
    client = create_redis(proxy.url, socket_timeout=2.0, socket_connect_timeout=2.0)
    cache = engine(client)

    def own(i: int) -> Any:
        async def load() -> str:
            return f"loaded {i}"

        return load

    try:
        assert await cache.get_or_load(keys[0], never, ttl=600, codec=TEXT) == value(0)
        proxy.cut_after(VALUE_BYTES * 3 // 2)
        got = await asyncio.gather(
            *(cache.get_or_load(k, own(i), ttl=0, codec=TEXT) for i, k in enumerate(keys))
        )
        for i, g in enumerate(got):
            assert g in (value(i), f"loaded {i}")
        assert any(g.startswith("loaded") for g in got)
        assert cache.breaker.state != OPEN  # one cut pipeline is one failure, not nineteen
        proxy.cut_after(None)
        for i, k in enumerate(keys):
            assert await cache.get_or_load(k, never, ttl=600, codec=TEXT) == value(i)
    finally:
        await cache.aclose()
        await client.aclose()


async def test_redis_that_stops_answering_on_open_connections_costs_a_bounded_wait(
    proxy: FaultProxy, keys: list[str]
) -> None:
    """Connections are open and kept (warm); then Redis stops answering. The engine sets no
    timer of its own on a hit: the client's socket timeout must bound it. Each read answers
    from the loader, side commands of an ambiguous pipeline are not replayed, and the breaker
    opens after three failures; then Redis is not touched at all."""
    # Short enough that three hung reads are quick, long enough that the warm reads before the
    # hang never time out on a busy machine (the proxy shares this event loop).
    client = create_redis(proxy.url, socket_timeout=1.0, socket_connect_timeout=1.0)
    cache = engine(client, breaker=CircuitBreaker(3, cooldown=60))
    replayed: list[int] = []

    async def fb() -> None:
        replayed.append(1)

    async def load() -> str:
        return "from the loader"

    try:
        for i, k in enumerate(keys[:3]):  # warm: kept connections
            assert await cache.get_or_load(k, never, ttl=600, codec=TEXT) == value(i)
        proxy.hang = True
        also = [SideCommand(("HINCRBY", keys[0] + ":views", "f", 1), fb)]
        async with asyncio.timeout(30):  # a hang detector, not a performance bound
            assert await cache.get_or_load(keys[0], load, ttl=0, codec=TEXT, also=also) == (
                "from the loader"
            )
            for k in keys[1:3]:
                assert await cache.get_or_load(k, load, ttl=0, codec=TEXT) == "from the loader"
        assert cache.breaker.state == OPEN
        assert replayed == []  # sent, then no answer: ambiguous, not replayed
        counts = cache.metrics.snapshot()["pl"]
        assert counts["redis_error"] == 3
        trips = RedisTraffic(client)
        for k in keys:
            assert await cache.get_or_load(k, load, ttl=0, codec=TEXT) == "from the loader"
        assert trips.count == 0
    finally:
        await cache.aclose()
        await client.aclose()
