"""Redis failures never reach the caller and cost at most one attempt per call.

"Bounded" is shown by what was sent, not by a stopwatch: each call makes at most one
connection (no retries, so at most one timeout), an open breaker sends nothing at all, and a
call that could hang is wrapped in ``HANG_GUARD`` (only a real hang reaches it).
"""

from __future__ import annotations

import asyncio
from typing import Any

from _cache_servers import HANG_GUARD, HungServer, OwnServer, count_connects
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from cache import CacheAside, CacheMetrics, CircuitBreaker, Codec, SideCommand, create_redis
from cache.breaker import CLOSED, OPEN

INT = Codec(int)
KEY = "fail:v1:ns:1"


async def loader() -> int:
    return 42


class Clock:
    """The breaker's clock, moved by hand: a cool-down passes without waiting for it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_hung_server_each_call_bounded_then_breaker(hung: HungServer) -> None:
    """Each call costs one connection attempt (no retries: one timeout at most); after the
    threshold the breaker is open and a call sends nothing: no connection, not a byte."""
    redis = create_redis(hung.url)
    metrics = CacheMetrics(CollectorRegistry())
    cache = CacheAside(redis, metrics=metrics, breaker=CircuitBreaker(3, cooldown=30))
    try:
        for _ in range(3):
            before = await hung.settle()
            async with asyncio.timeout(HANG_GUARD):
                assert await cache.get_or_load(KEY, loader, ttl=60, codec=INT) == 42
            after = await hung.settle()
            assert after.connections == before.connections + 1  # one attempt, not retried
        assert cache.breaker.state == OPEN
        before = await hung.settle()
        for _ in range(20):
            assert await cache.get_or_load(KEY, loader, ttl=60, codec=INT) == 42
        assert await hung.settle() == before  # no Redis command was sent
        assert metrics.snapshot()["ns"]["redis_error"] == 3
        assert not await cache.healthy()
    finally:
        await redis.aclose()


async def test_hung_server_side_fallbacks_and_writes_bounded(hung: HungServer) -> None:
    """A read with a side command, a write and an invalidation: one connection attempt each,
    the side command replayed through its fallback, nothing raised and nothing left hanging."""
    redis = create_redis(hung.url)
    cache = CacheAside(redis, metrics=CacheMetrics(CollectorRegistry()))
    hits: list[int] = []

    async def fb() -> None:
        hits.append(1)

    also = [SideCommand(("HINCRBY", "fail:v1:v", "a", 1), fb)]
    try:
        for step in (
            lambda: cache.get_or_load(KEY, loader, ttl=60, codec=INT, also=also),
            lambda: cache.set(KEY, 1, ttl=60, codec=INT),
            lambda: cache.invalidate(KEY),
        ):
            before = await hung.settle()
            async with asyncio.timeout(HANG_GUARD):
                await step()
            assert (await hung.settle()).connections == before.connections + 1
        assert hits == [1]
    finally:
        await redis.aclose()


async def test_connect_outlasting_op_timeout_counts_as_not_sent(hung: HungServer) -> None:
    """A client whose own connect/handshake timeouts exceed op_timeout: the engine's timeout
    fires while the connection is still being made. Nothing was sent, so the side commands
    are replayed through their fallbacks (not counted as unknown and dropped).

    The client's timeouts are an hour: only the engine's op_timeout can end these calls within
    the hang guard."""
    redis = Redis.from_url(hung.url, socket_connect_timeout=3600, socket_timeout=3600)
    metrics = CacheMetrics(CollectorRegistry())
    cache = CacheAside(redis, metrics=metrics, op_timeout=0.2)
    hits: list[int] = []

    async def fb() -> None:
        hits.append(1)

    also = [SideCommand(("HINCRBY", "fail:v1:v", "a", 1), fb)]
    try:
        async with asyncio.timeout(HANG_GUARD):
            assert await cache.get_or_load(KEY, loader, ttl=60, codec=INT, also=also) == 42
            await cache.send(*also)
        assert hits == [1, 1]
        assert metrics.snapshot()["v"]["side_unknown"] == 0
    finally:
        await cache.aclose()
        await redis.aclose()


async def test_dead_port_costs_one_attempt_per_call_until_the_breaker_opens(
    dead_url: str,
) -> None:
    """A refused connection is not retried, and once the breaker is open (3 failures) the
    remaining calls do not even try to connect."""
    redis = create_redis(dead_url)
    cache = CacheAside(redis, metrics=CacheMetrics(CollectorRegistry()))
    connects = count_connects(redis)
    try:
        async with asyncio.timeout(HANG_GUARD):
            for _ in range(10):
                assert await cache.get_or_load(KEY, loader, ttl=60, codec=INT) == 42
        assert len(connects) == 3
        assert cache.breaker.state == OPEN
    finally:
        await redis.aclose()


async def test_redis_stopped_and_restarted_mid_test(own_redis: OwnServer) -> None:
    # generous timeouts: a refused connection fails at once anyway, and a read of the running
    # server must not time out on a busy machine (the loader would then run once too often)
    redis = create_redis(own_redis.url, socket_timeout=2.0, socket_connect_timeout=2.0)
    metrics = CacheMetrics(CollectorRegistry())
    clock = Clock()
    breaker = CircuitBreaker(3, cooldown=30, clock=clock)
    cache = CacheAside(redis, metrics=metrics, breaker=breaker)
    calls = 0

    async def counted() -> int:
        nonlocal calls
        calls += 1
        return calls

    try:
        assert await cache.get_or_load(KEY, counted, ttl=60, codec=INT) == 1
        assert await cache.get_or_load(KEY, counted, ttl=60, codec=INT) == 1  # cached
        own_redis.stop()
        connects = count_connects(redis)
        results: list[Any] = []
        for i in range(6):
            attempts = len(connects)
            async with asyncio.timeout(HANG_GUARD):
                results.append(await cache.get_or_load(KEY, counted, ttl=60, codec=INT))
            # At most one attempt per call: the first may instead find the kept connection dead
            # only after sending on it (whether the kill was seen before is a race: no count).
            assert len(connects) - attempts <= 1
            if i >= 3:  # three failures opened the breaker: no attempt at all
                assert len(connects) == attempts
        assert results == [2, 3, 4, 5, 6, 7]  # served by the loader, no exception
        assert breaker.state == OPEN
        assert metrics.snapshot()["ns"]["redis_error"] == 3
        tried = len(connects)
        # single-flight still protects the loader while the breaker is open
        before = calls
        gate, started = asyncio.Event(), asyncio.Event()

        async def gated() -> int:
            nonlocal calls
            calls += 1
            started.set()
            await gate.wait()
            return 0

        waiting = [
            asyncio.create_task(cache.get_or_load(KEY, gated, ttl=60, codec=INT)) for _ in range(50)
        ]
        async with asyncio.timeout(HANG_GUARD):
            await started.wait()  # the load started; every caller has arrived by then
            gate.set()
            await asyncio.gather(*waiting)
        assert calls == before + 1
        assert len(connects) == tried  # still nothing sent
        own_redis.start()  # same port, empty
        clock.now += 30  # the cool-down is over: the next call is the probe
        assert await cache.get_or_load(KEY, counted, ttl=60, codec=INT) == calls  # probe loads
        assert breaker.state == CLOSED
        value = await cache.get_or_load(KEY, counted, ttl=60, codec=INT)
        assert value == calls - 1 or value == calls
        assert await cache.get_or_load(KEY, counted, ttl=60, codec=INT) == value  # cached again
        assert await cache.healthy()
    finally:
        await redis.aclose()


async def test_server_errors_are_swallowed(redis_url: str, key_prefix: str, redis: Any) -> None:
    """OOM-like write refusals (via a READONLY-style ResponseError) never reach the caller."""
    client = create_redis(redis_url)
    cache = CacheAside(client, metrics=CacheMetrics(CollectorRegistry()))
    key = f"{key_prefix}:v1:ns:1"
    try:
        await redis.hset(key, "a", "b")  # GET on a hash: WRONGTYPE
        assert await cache.get_or_load(key, loader, ttl=60, codec=INT) == 42
        assert cache.breaker.state == CLOSED
    finally:
        await client.aclose()
