"""Child-process body of the cross-process stampede test (spawned; must be importable)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from cache import CacheAside, CacheMetrics, Codec, create_redis


class CommandCounter:
    """Counts every command a client sends: plain, pipelined and pub/sub."""

    def __init__(self, client: Redis) -> None:
        self.count = 0
        self.names: list[str] = []
        orig_exec = client.execute_command
        orig_pipe = client.pipeline
        orig_pubsub = client.pubsub

        async def execute_command(*args: Any, **kw: Any) -> Any:
            self.count += 1
            self.names.append(str(args[0]))
            return await orig_exec(*args, **kw)

        def pipeline(*a: Any, **kw: Any) -> Any:
            pipe = orig_pipe(*a, **kw)
            orig = pipe.execute

            async def execute(*ea: Any, **ekw: Any) -> Any:
                self.count += len(pipe.command_stack)
                self.names.extend(str(c[0][0]) for c in pipe.command_stack)
                return await orig(*ea, **ekw)

            pipe.execute = execute  # type: ignore[method-assign]
            return pipe

        def pubsub(*a: Any, **kw: Any) -> Any:
            ps = orig_pubsub(*a, **kw)
            orig = ps.execute_command

            async def ps_exec(*args: Any) -> Any:
                self.count += 1
                self.names.append(str(args[0]))
                return await orig(*args)

            ps.execute_command = ps_exec  # type: ignore[method-assign]
            return ps

        client.execute_command = execute_command  # type: ignore[method-assign]
        client.pipeline = pipeline  # type: ignore[method-assign]
        client.pubsub = pubsub  # type: ignore[method-assign]

    def reset(self) -> None:
        self.count = 0
        self.names.clear()


async def _run(
    url: str, key: str, counter_key: str, callers: int, barrier: Any, loader_delay: float
) -> dict[str, Any]:
    client = create_redis(url, max_connections=50)
    side = Redis.from_url(url)  # the loader's own client, not counted
    await client.ping()
    await side.ping()
    counter = CommandCounter(client)
    cache = CacheAside(client, metrics=CacheMetrics(CollectorRegistry()))

    async def loader() -> int:
        await side.incr(counter_key)
        await asyncio.sleep(loader_delay)
        return 42

    barrier.wait()
    counter.reset()
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
        "commands": counter.count,
        "names": counter.names,
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
