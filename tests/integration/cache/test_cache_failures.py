"""Redis failures never reach the caller and cost at most one timeout per call."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from _cache_servers import OwnServer
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from cache import CacheAside, CacheMetrics, CircuitBreaker, Codec, SideCommand, create_redis
from cache.breaker import CLOSED, OPEN

INT = Codec(int)
KEY = "fail:v1:ns:1"


async def loader() -> int:
    return 42


async def test_hung_server_each_call_bounded_then_breaker(hung_url: str) -> None:
    redis = create_redis(hung_url)
    metrics = CacheMetrics(CollectorRegistry())
    cache = CacheAside(redis, metrics=metrics, breaker=CircuitBreaker(3, cooldown=30))
    try:
        for _ in range(3):
            start = time.perf_counter()
            assert await cache.get_or_load(KEY, loader, ttl=60, codec=INT) == 42
            assert time.perf_counter() - start < 0.5
        assert cache.breaker.state == OPEN
        for _ in range(20):
            start = time.perf_counter()
            assert await cache.get_or_load(KEY, loader, ttl=60, codec=INT) == 42
            assert time.perf_counter() - start < 0.01
        assert metrics.snapshot()["ns"]["redis_error"] == 3
        assert not await cache.healthy()
    finally:
        await redis.aclose()


async def test_hung_server_side_fallbacks_and_writes_bounded(hung_url: str) -> None:
    redis = create_redis(hung_url)
    cache = CacheAside(redis, metrics=CacheMetrics(CollectorRegistry()))
    hits: list[int] = []

    async def fb() -> None:
        hits.append(1)

    try:
        start = time.perf_counter()
        also = [SideCommand(("HINCRBY", "fail:v1:v", "a", 1), fb)]
        assert await cache.get_or_load(KEY, loader, ttl=60, codec=INT, also=also) == 42
        await cache.set(KEY, 1, ttl=60, codec=INT)
        await cache.invalidate(KEY)
        assert time.perf_counter() - start < 1.5
        assert hits == [1]
    finally:
        await redis.aclose()


async def test_connect_outlasting_op_timeout_counts_as_not_sent(hung_url: str) -> None:
    """A client whose own connect/handshake timeouts exceed op_timeout: the engine's timeout
    fires while the connection is still being made. Nothing was sent, so the side commands
    are replayed through their fallbacks (not counted as unknown and dropped)."""
    redis = Redis.from_url(hung_url, socket_connect_timeout=5, socket_timeout=5)
    metrics = CacheMetrics(CollectorRegistry())
    cache = CacheAside(redis, metrics=metrics, op_timeout=0.2)
    hits: list[int] = []

    async def fb() -> None:
        hits.append(1)

    also = [SideCommand(("HINCRBY", "fail:v1:v", "a", 1), fb)]
    try:
        start = time.perf_counter()
        assert await cache.get_or_load(KEY, loader, ttl=60, codec=INT, also=also) == 42
        await cache.send(*also)
        assert time.perf_counter() - start < 1.5
        assert hits == [1, 1]
        assert metrics.snapshot()["v"]["side_unknown"] == 0
    finally:
        await cache.aclose()
        await redis.aclose()


async def test_dead_port_is_fast(dead_url: str) -> None:
    redis = create_redis(dead_url)
    cache = CacheAside(redis, metrics=CacheMetrics(CollectorRegistry()))
    try:
        start = time.perf_counter()
        for _ in range(10):
            assert await cache.get_or_load(KEY, loader, ttl=60, codec=INT) == 42
        assert time.perf_counter() - start < 0.5
    finally:
        await redis.aclose()


async def test_redis_stopped_and_restarted_mid_test(own_redis: OwnServer) -> None:
    redis = create_redis(own_redis.url)
    metrics = CacheMetrics(CollectorRegistry())
    breaker = CircuitBreaker(3, cooldown=0.3)
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
        results: list[Any] = []
        for _ in range(6):
            start = time.perf_counter()
            results.append(await cache.get_or_load(KEY, counted, ttl=60, codec=INT))
            assert time.perf_counter() - start < 0.5
        assert results == [2, 3, 4, 5, 6, 7]  # served by the loader, no exception
        assert breaker.state == OPEN
        # single-flight still protects the loader while the breaker is open
        before = calls

        async def slow() -> int:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.05)
            return 0

        await asyncio.gather(*(cache.get_or_load(KEY, slow, ttl=60, codec=INT) for _ in range(50)))
        assert calls == before + 1
        own_redis.start()  # same port, empty
        await asyncio.sleep(0.35)
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
