"""Child-process body of the cross-process stampede test (spawned; must be importable)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from cache import CacheAside, CacheMetrics, Codec, create_redis
from devtools.traffic import RedisTraffic


async def _run(
    url: str, key: str, counter_key: str, callers: int, barrier: Any, loader_delay: float
) -> dict[str, Any]:
    client = create_redis(url, max_connections=50)
    side = Redis.from_url(url)  # the loader's own client, not counted
    await client.ping()
    await side.ping()
    # counted at the connection: plain commands, the engine's pipelines, pub/sub
    traffic = RedisTraffic(client)
    cache = CacheAside(client, metrics=CacheMetrics(CollectorRegistry()))

    async def loader() -> int:
        await side.incr(counter_key)
        await asyncio.sleep(loader_delay)
        return 42

    barrier.wait()
    traffic.reset()
    start = time.perf_counter()

    async def one() -> tuple[int | None, float]:
        t0 = time.perf_counter()
        value = await cache.get_or_load(key, loader, ttl=60, codec=Codec(int))
        return value, time.perf_counter() - t0

    results = await asyncio.gather(*(one() for _ in range(callers)))
    total = time.perf_counter() - start
    snapshot = cache.metrics.snapshot().get("stampede", {})
    await cache.aclose()
    await client.aclose()
    await side.aclose()
    return {
        "values": sorted({v for v, _ in results}, key=repr),
        "latencies": [t for _, t in results],
        "commands": len(traffic.commands),
        "names": [str(c[0]) for c in traffic.commands],
        "loads": snapshot.get("load", 0.0),
        "total": total,
    }


def worker(
    url: str,
    key: str,
    counter_key: str,
    callers: int,
    barrier: Any,
    queue: Any,
    loader_delay: float = 0.1,
) -> None:
    queue.put(asyncio.run(_run(url, key, counter_key, callers, barrier, loader_delay)))
