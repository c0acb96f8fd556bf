"""Auto-pipelining of reads that carry side commands (cache/pipelining.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from cache import CacheAside, CacheMetrics, Codec, SideCommand
from cache.breaker import CLOSED
from cache.pipelining import NotSentError, PipelineBatcher
from cache.traffic import RedisTraffic

INT = Codec(int)


async def test_concurrent_side_reads_share_a_few_pipelines(cache: CacheAside, fake: Any) -> None:
    """500 concurrent counted reads: each gets its own reply, on at most a few connections."""
    await cache.set("t:v1:h:1", 7, ttl=60, codec=INT)
    trips = RedisTraffic(fake)
    replies: dict[int, int] = {}

    async def one(i: int) -> int | None:
        also = [
            SideCommand(("HINCRBY", "t:v1:buf:views", "d:leo", 1)),
            SideCommand(
                ("INCR", f"t:v1:throttle:{i}"), on_result=lambda r, i=i: replies.update({i: r})
            ),
        ]

        async def loader() -> int:
            raise AssertionError("warm: never loads")

        return await cache.get_or_load("t:v1:h:1", loader, ttl=60, codec=INT, also=also)

    results = await asyncio.gather(*(one(i) for i in range(500)))
    assert results == [7] * 500
    assert replies == {i: 1 for i in range(500)}  # every caller got its own INCR reply
    assert await fake.hget("t:v1:buf:views", "d:leo") == b"500"
    assert trips.count <= 20, trips.count  # not one pipeline (and connection) per caller


async def test_batcher_bounds_pipelines_in_flight() -> None:
    in_flight = peak = 0

    class SlowConnection:
        def pack_commands(self, commands: Any) -> list[Any]:
            self.n = len(list(commands))
            return []

        async def send_packed_command(self, packed: Any, check_health: bool = True) -> None:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.01)
            in_flight -= 1

        async def read_response(self, **_kw: Any) -> Any:
            return 1

        async def connect(self) -> None:
            pass

        async def can_read(self) -> bool:
            return False

        async def check_health(self) -> None:
            pass

    class FakeRedis:
        class connection_pool:
            @staticmethod
            async def get_connection() -> SlowConnection:
                return SlowConnection()

            @staticmethod
            async def release(conn: Any) -> None:
                pass

    batcher = PipelineBatcher(timeout=1.0, max_in_flight=3)
    redis: Any = FakeRedis()
    out = await asyncio.gather(*(batcher.execute(redis, [("A",), ("B",)]) for _ in range(300)))
    assert all(len(r) == 2 for r in out)
    assert peak <= 3
    assert batcher.pipelines < 300


async def test_no_connection_is_not_sent() -> None:
    class NoConn:
        class connection_pool:
            @staticmethod
            async def get_connection() -> object:
                raise RedisConnectionError("No connection available.")

    with pytest.raises(NotSentError):
        await PipelineBatcher(timeout=1.0).execute(NoConn(), [("GET", "k")])  # type: ignore[arg-type]


async def test_pool_exhaustion_does_not_open_the_breaker(
    cache: CacheAside, metrics: CacheMetrics
) -> None:
    """A busy local pool is a burst, not a dead Redis: count it, fall back, keep the breaker."""
    fallbacks: list[int] = []

    async def fb() -> None:
        fallbacks.append(1)

    async def boom(*_a: Any, **_k: Any) -> object:
        raise RedisConnectionError("No connection available.")

    cache.redis.connection_pool.get_connection = boom  # type: ignore[union-attr,method-assign]
    also = [SideCommand(("HINCRBY", "t:v1:buf:views", "d:leo", 1), fb)]

    async def loader() -> int:
        return 3

    for _ in range(10):
        assert await cache.get_or_load("t:v1:h:2", loader, ttl=60, codec=INT, also=also) == 3
    assert fallbacks == [1] * 10  # nothing was sent: every view replayed
    assert cache.breaker.state == CLOSED
