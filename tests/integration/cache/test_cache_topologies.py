"""The Redis client on the real topologies (tests/servers): Sentinel, followed across a
failover, by redis-py and by the cache engine; a Cluster client doing GET/SET on every master.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from prometheus_client import CollectorRegistry
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from cache import CacheAside, CacheMetrics, CircuitBreaker, Codec, create_redis
from cache.client import create_redis_cluster
from tests.servers.redis_servers import ClusterTopology, SentinelTopology

pytestmark = pytest.mark.timeout(180)

INT = Codec(int)
NS = "fo"


def key(i: int) -> str:
    return f"{NS}:v1:item:{i}"


async def test_sentinel_client_follows_the_failover(redis_sentinel: SentinelTopology) -> None:
    client = create_redis(redis_sentinel.url(), socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        assert await client.set("follow:k", "v1")
        assert client.connection_pool.master_address == redis_sentinel.primary.address
        redis_sentinel.wait_replicated()

        old = redis_sentinel.master_address()
        redis_sentinel.kill_primary()
        new = await redis_sentinel.await_failover(old)

        # The pooled connection to the dead primary fails once (no retries, by design); the
        # next call asks the sentinels again and reaches the new master.
        failures = 0
        for _ in range(3):
            try:
                assert await client.get("follow:k") == b"v1"
                break
            except (RedisConnectionError, RedisTimeoutError):
                failures += 1
        else:
            raise AssertionError("the client never reached the new master")
        assert failures <= 1
        assert client.connection_pool.master_address == new
        assert await client.set("follow:k", "v2")  # writable: it is the master
        with redis_sentinel.node_at(new).client() as direct:
            assert direct.get("follow:k") == "v2"
    finally:
        await client.aclose()


async def test_cache_engine_keeps_answering_across_a_failover(
    redis_sentinel: SentinelTopology,
) -> None:
    """A loop of get_or_load/set while the primary is killed: no call raises, every value is
    right (from Redis or from the loader), the failover is seen as Redis errors, and once the
    sentinels have promoted the replica, reads are hits again (data replicated before the
    kill is still there)."""
    client = create_redis(redis_sentinel.url(), socket_timeout=0.5, socket_connect_timeout=0.5)
    metrics = CacheMetrics(CollectorRegistry())
    cache = CacheAside(
        client, metrics=metrics, breaker=CircuitBreaker(3, cooldown=0.2), op_timeout=0.5
    )
    loads: Counter[int] = Counter()
    items = range(20)

    def loader(i: int):  # type: ignore[no-untyped-def]
        async def load() -> int:
            loads[i] += 1
            return i

        return load

    async def read(i: int) -> int | None:
        return await cache.get_or_load(key(i), loader(i), ttl=3600, codec=INT)

    try:
        for i in items:
            await cache.set(key(i), i, ttl=3600, codec=INT)
        assert [await read(i) for i in items] == list(items)
        assert sum(loads.values()) == 0  # all hits
        redis_sentinel.wait_replicated()

        calls = 0
        stop = asyncio.Event()
        flowing = asyncio.Event()

        async def traffic() -> None:
            nonlocal calls
            n = 0
            while not stop.is_set():
                i = n % len(items)
                n += 1
                assert await read(i) == i
                if n % 7 == 0:
                    await cache.set(key(i), i, ttl=3600, codec=INT)
                calls += 1
                if calls >= 40:
                    flowing.set()
                await asyncio.sleep(0.002)  # pacing only: keeps the loop from spinning

        tasks = [asyncio.create_task(traffic()) for _ in range(4)]
        await flowing.wait()  # traffic is flowing before the fault
        old = redis_sentinel.master_address()
        redis_sentinel.kill_primary()
        await redis_sentinel.await_failover(old)

        # Observed, bounded: keep reading until a read is served by Redis again.
        deadline = time.monotonic() + 60
        while True:
            before_loads = sum(loads.values())
            before_hits = metrics.snapshot().get("item", {}).get("hit", 0.0)
            assert await read(0) == 0
            hits = metrics.snapshot().get("item", {}).get("hit", 0.0)
            if hits > before_hits and sum(loads.values()) == before_loads:
                break
            assert time.monotonic() < deadline, "reads never hit Redis after the failover"
            await asyncio.sleep(0.05)

        stop.set()
        await asyncio.gather(*tasks)  # re-raises anything a call raised

        counts = metrics.snapshot()["item"]
        assert counts.get("redis_error", 0) >= 1  # the failover was felt ...
        assert sum(loads.values()) >= 1  # ... and served by the loader meanwhile
        loads.clear()
        assert [await read(i) for i in items] == list(items)
        assert sum(loads.values()) == 0  # replicated before the kill: still in Redis
    finally:
        await client.aclose()


async def test_cluster_client_get_set_on_every_master(redis_cluster: ClusterTopology) -> None:
    client = create_redis_cluster(redis_cluster.url, socket_timeout=2.0)
    try:
        keys = [f"cl:{i}" for i in range(50)]
        for i, k in enumerate(keys):
            assert await client.set(k, i)
        assert [await client.get(k) for k in keys] == [str(i).encode() for i in range(50)]
        served_by = {redis_cluster.master_for_key(k).port for k in keys}
        assert served_by == {node.port for node in redis_cluster.masters()}
        # Keys sharing a hash tag share a slot: one multi-key command works.
        await client.mset({"{user:1}:a": "1", "{user:1}:b": "2"})
        assert await client.mget(["{user:1}:a", "{user:1}:b"]) == [b"1", b"2"]
    finally:
        await client.aclose()
