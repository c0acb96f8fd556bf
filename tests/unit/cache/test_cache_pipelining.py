"""Auto-pipelining of reads that carry side commands (cache/pipelining.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import fakeredis
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from cache import CacheAside, CacheMetrics, Codec, SideCommand
from cache.breaker import CLOSED
from cache.pipelining import NotSentError, PipelineBatcher
from devtools.traffic import RedisTraffic

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


async def test_each_caller_gets_its_own_slice_of_a_shared_pipeline(fake: Any) -> None:
    """Groups of different sizes share one pipeline; each caller gets exactly its own replies,
    in its own order (replies are distinct per caller, so a swapped slice shows)."""
    await fake.mset({f"t:v1:p:{j}": f"v{j}" for j in range(60)})
    batcher = PipelineBatcher(timeout=1.0, max_in_flight=1)
    groups = [[("GET", f"t:v1:p:{i + k}") for k in range(1 + i % 3)] for i in range(40)]
    results = await asyncio.gather(*(batcher.execute(fake, g) for g in groups))
    for group, replies in zip(groups, results, strict=True):
        assert replies == [f"v{cmd[1].rsplit(':', 1)[1]}".encode() for cmd in group]
    assert batcher.pipelines <= 3  # they did share: one alone, then the queued ones together
    await batcher.aclose()


async def test_two_clients_never_share_a_pipeline_or_a_kept_connection() -> None:
    """One batcher, two Redis servers: commands only ever reach the client they were given for,
    whether sent one after the other (kept connections) or queued together."""
    a = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    b = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    await a.set("t:v1:k", "a")
    await b.set("t:v1:k", "b")
    batcher = PipelineBatcher(timeout=1.0, max_in_flight=2)
    try:
        for _ in range(3):
            assert await batcher.execute(a, [("GET", "t:v1:k")]) == [b"a"]
            assert await batcher.execute(b, [("GET", "t:v1:k")]) == [b"b"]
        clients = [a, b] * 20
        res = await asyncio.gather(*(batcher.execute(c, [("GET", "t:v1:k")]) for c in clients))
        assert res == [[b"a"], [b"b"]] * 20
    finally:
        await batcher.aclose()
        await a.aclose()
        await b.aclose()


async def test_failed_shared_pipeline_fails_every_caller_in_it() -> None:
    """A pipeline cut off after sending fails all the groups it carried (none hangs), and the
    batcher goes on serving."""

    class ResetConnection:
        def pack_commands(self, commands: Any) -> list[Any]:
            return []

        async def check_health(self) -> None:
            pass

        async def send_packed_command(self, packed: Any, check_health: bool = True) -> None:
            pass

        async def read_response(self, **_kw: Any) -> Any:
            await asyncio.sleep(0.01)
            raise RedisConnectionError("Connection reset by peer")

        async def disconnect(self, nowait: bool = False) -> None:
            pass

    class FakeRedis:
        class connection_pool:
            @staticmethod
            async def get_connection() -> ResetConnection:
                return ResetConnection()

            @staticmethod
            async def release(conn: Any) -> None:
                pass

    batcher = PipelineBatcher(timeout=5.0, max_in_flight=1)
    redis: Any = FakeRedis()
    async with asyncio.timeout(2):  # a caller left without an answer would hang here
        res = await asyncio.gather(
            *(batcher.execute(redis, [("GET", f"k{i}")]) for i in range(10)),
            return_exceptions=True,
        )
    assert all(isinstance(r, RedisConnectionError) for r in res), res
    assert not any(isinstance(r, NotSentError) for r in res)  # sent: not replayable
    assert batcher.pipelines == 2  # the first alone, the nine queued meanwhile together


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


class _GatedConnection:
    """Sends at once; each reply waits for ``gate`` (never set: a reply that never comes)."""

    def __init__(self, gate: asyncio.Event) -> None:
        self.gate = gate
        self.disconnected = False

    def pack_commands(self, commands: Any) -> list[Any]:
        return []

    async def check_health(self) -> None:
        pass

    async def send_packed_command(self, packed: Any, check_health: bool = True) -> None:
        pass

    async def read_response(self, **_kw: Any) -> Any:
        await self.gate.wait()
        return b"ok"

    async def disconnect(self, nowait: bool = False) -> None:
        self.disconnected = True


class _GatedRedis:
    """A client whose pool hands out _GatedConnections (or, ``connect_gate`` given, waits for
    it before handing one out) and knows which of them are out."""

    def __init__(self, gate: asyncio.Event, connect_gate: asyncio.Event | None = None) -> None:
        outer = self
        self.out: set[_GatedConnection] = set()

        class Pool:
            max_connections = 16

            async def get_connection(self) -> _GatedConnection:
                if connect_gate is not None:
                    await connect_gate.wait()
                conn = _GatedConnection(gate)
                outer.out.add(conn)
                return conn

            async def release(self, conn: Any) -> None:
                outer.out.discard(conn)

        self.connection_pool = Pool()


async def _queued_behind_a_direct_caller(
    batcher: PipelineBatcher, redis: Any
) -> tuple[asyncio.Task[list[Any]], list[asyncio.Task[list[Any]]]]:
    """One caller sending from its own task, two queued ones in the batcher's pipeline task."""
    direct = asyncio.create_task(batcher.execute(redis, [("GET", "a")]))
    await asyncio.sleep(0)
    queued = [asyncio.create_task(batcher.execute(redis, [("INCR", k)])) for k in ("b", "c")]
    await asyncio.sleep(0.05)
    return direct, queued


async def test_aclose_tells_callers_of_a_sent_pipeline_the_outcome_is_unknown() -> None:
    """Shutdown cancels a shared pipeline waiting for its reply: its callers are answered at
    once, and not with NotSentError (the commands may have run: no replay, no double count)."""
    batcher = PipelineBatcher(timeout=10.0, max_in_flight=2)
    redis: Any = _GatedRedis(asyncio.Event())
    direct, queued = await _queued_behind_a_direct_caller(batcher, redis)
    await batcher.aclose()
    async with asyncio.timeout(1):  # answered, not left hanging
        res = await asyncio.gather(*queued, return_exceptions=True)
    assert all(isinstance(r, RedisTimeoutError) for r in res), res
    assert not any(isinstance(r, NotSentError) for r in res)
    direct.cancel()
    with pytest.raises(asyncio.CancelledError):
        await direct


async def test_aclose_tells_callers_of_an_unsent_pipeline_nothing_ran() -> None:
    batcher = PipelineBatcher(timeout=10.0, max_in_flight=2)
    redis: Any = _GatedRedis(asyncio.Event(), connect_gate=asyncio.Event())  # no connection
    direct, queued = await _queued_behind_a_direct_caller(batcher, redis)
    await batcher.aclose()
    async with asyncio.timeout(1):
        res = await asyncio.gather(*queued, return_exceptions=True)
    assert all(isinstance(r, NotSentError) for r in res), res  # replayable
    direct.cancel()
    with pytest.raises(asyncio.CancelledError):
        await direct


async def test_pipeline_finishing_after_aclose_gives_its_connection_back() -> None:
    """A caller's own pipeline still running at aclose completes, and its connection goes back
    to the pool instead of being kept by a closed batcher (where nobody would release it)."""
    gate = asyncio.Event()
    batcher = PipelineBatcher(timeout=10.0)
    redis: Any = _GatedRedis(gate)
    task = asyncio.create_task(batcher.execute(redis, [("GET", "a")]))
    await asyncio.sleep(0.01)
    await batcher.aclose()
    gate.set()
    assert await task == [b"ok"]
    assert redis.out == set()
