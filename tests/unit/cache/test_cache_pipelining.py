"""Auto-pipelining of reads that carry side commands (cache/pipelining.py).

The test doubles record what was sent; a test waits for that (``until``), not for a sleep to be
long enough for the batcher's task to have run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from cache import CacheAside, CacheMetrics, Codec, Load, SideCommand
from cache.breaker import CLOSED
from cache.pipelining import NotSentError, PipelineBatcher
from devtools.traffic import RedisTraffic

INT = Codec(int)
#: A wait for a condition that takes this long is a hang, not a slow machine.
HANG_GUARD = 30.0


async def until(condition: Callable[[], bool]) -> None:
    """Let other tasks run until ``condition()`` holds (under the hang guard)."""
    async with asyncio.timeout(HANG_GUARD):
        while not condition():  # noqa: ASYNC110 (state of other tasks, no event to wait on)
            await asyncio.sleep(0)


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
        self.asked = 0  # connections asked for (handed out or still waiting for connect_gate)

        class Pool:
            max_connections = 16

            async def get_connection(self) -> _GatedConnection:
                outer.asked += 1
                if connect_gate is not None:
                    await connect_gate.wait()
                conn = _GatedConnection(gate)
                outer.out.add(conn)
                return conn

            async def release(self, conn: Any) -> None:
                outer.out.discard(conn)

        self.connection_pool = Pool()


async def _queued_behind_a_direct_caller(
    batcher: PipelineBatcher, redis: Any, sent: bool
) -> tuple[asyncio.Task[list[Any]], list[asyncio.Task[list[Any]]]]:
    """One caller sending from its own task, two queued ones in the batcher's pipeline task;
    returns once that pipeline was sent (``sent``) or is waiting for its connection."""
    direct = asyncio.create_task(batcher.execute(redis, [("GET", "a")]))
    await asyncio.sleep(0)
    queued = [asyncio.create_task(batcher.execute(redis, [("INCR", k)])) for k in ("b", "c")]
    if sent:  # both pipelines hold a connection: they were sent and wait for their replies
        await until(lambda: len(redis.out) == 2)
    else:  # the pipeline task asked for its connection and waits for it
        await until(lambda: redis.asked == 2)
    return direct, queued


async def test_aclose_tells_callers_of_a_sent_pipeline_the_outcome_is_unknown() -> None:
    """Shutdown cancels a shared pipeline waiting for its reply: its callers are answered at
    once, and not with NotSentError (the commands may have run: no replay, no double count)."""
    batcher = PipelineBatcher(timeout=10.0, max_in_flight=2)
    redis: Any = _GatedRedis(asyncio.Event())
    direct, queued = await _queued_behind_a_direct_caller(batcher, redis, sent=True)
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
    direct, queued = await _queued_behind_a_direct_caller(batcher, redis, sent=False)
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
    await until(lambda: len(redis.out) == 1)  # sent, waiting for its reply
    await batcher.aclose()
    gate.set()
    assert await task == [b"ok"]
    assert redis.out == set()


# ---------------------------------------------------------------- every read rides the pipeline


class _EchoConnection:
    """Replies echo the commands (a GET of ``k`` answers ``b"k"``), so a reply that reached the
    wrong caller shows. Replies wait for ``gate``; a pipeline of more than one command is cut
    off (connection reset) after ``cut_after`` replies when that is set."""

    def __init__(self, owner: _EchoRedis) -> None:
        self.owner = owner
        self.queue: list[tuple[Any, ...]] = []
        self.disconnected = False
        self.read = 0

    def pack_commands(self, commands: Any) -> list[tuple[Any, ...]]:
        return [tuple(c) for c in commands]

    async def check_health(self) -> None:
        pass

    async def connect(self) -> None:
        pass

    async def can_read(self) -> bool:
        return False

    async def send_packed_command(self, packed: Any, check_health: bool = True) -> None:
        self.owner.sent.append(list(packed))
        self.owner.senders.append(asyncio.current_task())
        self.queue.extend(packed)
        self.read = 0
        self.batch = len(packed)

    async def read_response(self, **_kw: Any) -> Any:
        await self.owner.gate.wait()
        cut = self.owner.cut_after
        if cut is not None and self.batch > 1 and self.read >= cut:
            raise RedisConnectionError("Connection reset by peer")
        self.read += 1
        cmd = self.queue.pop(0)
        return str(cmd[1]).encode() if cmd[0] == "GET" else cmd

    async def disconnect(self, nowait: bool = False) -> None:
        self.disconnected = True
        self.queue.clear()


class _EchoRedis:
    def __init__(self) -> None:
        outer = self
        self.gate = asyncio.Event()
        self.gate.set()
        self.cut_after: int | None = None
        self.sent: list[list[tuple[Any, ...]]] = []
        self.senders: list[asyncio.Task[Any] | None] = []
        self.conns: list[_EchoConnection] = []

        class Pool:
            max_connections = 16

            async def get_connection(self) -> _EchoConnection:
                conn = _EchoConnection(outer)
                outer.conns.append(conn)
                return conn

            async def release(self, conn: Any) -> None:
                pass

        self.connection_pool = Pool()

    def register_script(self, script: str) -> Any:
        return None


async def test_a_lone_read_goes_out_from_the_callers_own_task() -> None:
    """Nothing in flight: no batch task, no loop hop; the caller's task writes the command."""
    redis: Any = _EchoRedis()
    batcher = PipelineBatcher(timeout=1.0)
    assert await batcher.execute_one(redis, ("GET", "a")) == b"a"
    assert await batcher.execute_one(redis, ("GET", "b")) == b"b"
    assert redis.senders == [asyncio.current_task()] * 2
    assert batcher.pipelines == 2 and not batcher._tasks
    await batcher.aclose()


async def test_reads_arriving_meanwhile_share_the_next_pipeline() -> None:
    redis: Any = _EchoRedis()
    redis.gate.clear()
    batcher = PipelineBatcher(timeout=5.0)
    first = asyncio.create_task(batcher.execute_one(redis, ("GET", "first")))
    await asyncio.sleep(0)  # sent, waiting for its reply
    rest = [asyncio.create_task(batcher.execute_one(redis, ("GET", f"k{i}"))) for i in range(20)]
    await until(lambda: len(redis.sent) == 2)
    assert [len(p) for p in redis.sent] == [1, 20]  # one pipeline for all twenty
    redis.gate.set()
    assert await first == b"first"
    assert await asyncio.gather(*rest) == [f"k{i}".encode() for i in range(20)]
    assert batcher.pipelines == 2
    await batcher.aclose()


async def test_cancelling_one_caller_of_a_shared_batch_leaves_the_others_their_replies() -> None:
    """Three callers in one pipeline, the middle one cancelled while the reply is on its way:
    the others get exactly their own replies, the cancelled one only its CancelledError, and
    its commands still ran (a view counted in the same pipeline is not lost)."""
    redis: Any = _EchoRedis()
    redis.gate.clear()
    batcher = PipelineBatcher(timeout=5.0)
    first = asyncio.create_task(batcher.execute_one(redis, ("GET", "first")))
    await asyncio.sleep(0)
    a = asyncio.create_task(batcher.execute(redis, [("GET", "a1"), ("GET", "a2")]))
    b = asyncio.create_task(batcher.execute(redis, [("GET", "b1"), ("HINCRBY", "v", "f", 1)]))
    c = asyncio.create_task(batcher.execute_one(redis, ("GET", "c")))
    await until(lambda: len(redis.sent) == 2)
    assert len(redis.sent) == 2 and len(redis.sent[1]) == 5  # a, b and c share a pipeline
    b.cancel()
    await asyncio.sleep(0)
    redis.gate.set()
    assert await a == [b"a1", b"a2"]
    assert await c == b"c"
    with pytest.raises(asyncio.CancelledError):
        await b
    assert await first == b"first"
    assert ("HINCRBY", "v", "f", 1) in redis.sent[1]
    await batcher.aclose()


async def test_a_caller_cancelled_before_its_batch_went_out_still_has_its_commands_sent() -> None:
    redis: Any = _EchoRedis()
    redis.gate.clear()
    batcher = PipelineBatcher(timeout=5.0)
    first = asyncio.create_task(batcher.execute_one(redis, ("GET", "first")))
    await asyncio.sleep(0)
    queued = asyncio.create_task(batcher.execute(redis, [("HINCRBY", "v", "f", 1)]))
    other = asyncio.create_task(batcher.execute_one(redis, ("GET", "other")))
    await asyncio.sleep(0)  # both queued; the batch is scheduled, not sent yet
    queued.cancel()
    redis.gate.set()
    assert await other == b"other" and await first == b"first"
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert [("HINCRBY", "v", "f", 1), ("GET", "other")] in redis.sent
    await batcher.aclose()


async def test_connection_cut_mid_batch_fails_its_callers_and_is_never_reused() -> None:
    """A batch of several GETs loses its connection after two replies: every caller of that
    batch gets the error (sent, so not NotSentError: side commands are not replayed), none
    gets a reply meant for another, the connection is dropped, and the next reads are
    answered correctly on a fresh one."""
    redis: Any = _EchoRedis()
    redis.gate.clear()
    redis.cut_after = 2
    batcher = PipelineBatcher(timeout=5.0)
    first = asyncio.create_task(batcher.execute_one(redis, ("GET", "first")))
    await asyncio.sleep(0)
    batch = [asyncio.create_task(batcher.execute_one(redis, ("GET", f"k{i}"))) for i in range(6)]
    await until(lambda: len(redis.sent) == 2)  # the six went out together
    assert len(redis.sent[1]) == 6
    redis.gate.set()
    res = await asyncio.gather(*batch, return_exceptions=True)
    assert await first == b"first"  # its own pipeline, one command: not cut
    assert all(isinstance(r, RedisConnectionError) for r in res), res
    assert not any(isinstance(r, NotSentError) for r in res)
    cut = [c for c in redis.conns if c.disconnected]
    assert len(cut) == 1
    redis.cut_after = None
    again = await asyncio.gather(*(batcher.execute_one(redis, ("GET", f"k{i}")) for i in range(6)))
    assert again == [f"k{i}".encode() for i in range(6)]
    assert cut[0].read == 2 and not cut[0].queue  # nothing more was read from the cut one
    await batcher.aclose()


async def test_hits_ride_a_few_pipelines(cache: CacheAside, fake: Any) -> None:
    """300 concurrent hits of distinct keys: each caller its own value, a few round trips."""
    await cache.set_many([(f"t:v1:h:{i}", i) for i in range(300)], ttl=60, codec=INT)
    trips = RedisTraffic(fake)

    async def never() -> int:
        raise AssertionError("warm: never loads")

    got = await asyncio.gather(
        *(cache.get_or_load(f"t:v1:h:{i}", never, ttl=60, codec=INT) for i in range(300))
    )
    assert got == list(range(300))
    assert trips.count <= 10, trips.count
    assert all(name == "GET" for name in trips.names)


async def test_every_read_path_shares_the_pipelines(cache: CacheAside, fake: Any) -> None:
    """get_or_load, get_or_load with a side command, get_many and load_many, concurrently."""
    await cache.set_many([(f"t:v1:h:{i}", i) for i in range(40)], ttl=60, codec=INT)
    trips = RedisTraffic(fake)

    async def never() -> int:
        raise AssertionError("warm: never loads")

    side = [SideCommand(("HINCRBY", "t:v1:buf:views", "d", 1))]
    reads = [
        *(cache.get_or_load(f"t:v1:h:{i}", never, ttl=60, codec=INT) for i in range(10)),
        *(
            cache.get_or_load(f"t:v1:h:{i}", never, ttl=60, codec=INT, also=side)
            for i in range(10, 20)
        ),
        *(cache.get_many([f"t:v1:h:{i}", f"t:v1:h:{i + 1}"], INT) for i in range(20, 30)),
        *(cache.load_many([Load(f"t:v1:h:{i}", never, INT, 60)]) for i in range(30, 40)),
    ]
    got = await asyncio.gather(*reads)
    assert got[:20] == list(range(20))
    assert got[20:30] == [[i, i + 1] for i in range(20, 30)]
    assert got[30:] == [[i] for i in range(30, 40)]
    assert trips.count <= 4, trips.count
    assert await fake.hget("t:v1:buf:views", "d") == b"10"


async def test_one_cut_pipeline_is_one_breaker_failure(metrics: CacheMetrics) -> None:
    """Ten reads lose their shared pipeline: each caller falls back to its loader, the error is
    counted for each, but the breaker sees one failed round trip, not ten (threshold 3)."""
    redis: Any = _EchoRedis()
    redis.gate.clear()
    redis.cut_after = 0
    cache = CacheAside(redis, metrics=metrics, op_timeout=5.0)

    def loader(i: int) -> Any:
        async def load() -> int:
            return i

        return load

    first = asyncio.create_task(cache.send(SideCommand(("HINCRBY", "t:v1:v", "f", 1))))
    await asyncio.sleep(0)  # a lone pipeline in flight: the reads below queue behind it
    rest = [
        asyncio.create_task(cache.get_or_load(f"t:v1:h:{i}", loader(i), ttl=0, codec=INT))
        for i in range(10)
    ]
    await until(lambda: len(redis.sent) == 2)  # the ten reads went out in one pipeline
    assert len(redis.sent[1]) == 10
    redis.gate.set()
    assert await asyncio.gather(*rest) == list(range(10))
    await first
    assert metrics.snapshot()["h"]["redis_error"] == 10
    assert cache.breaker.state == CLOSED
    await cache.aclose()


async def _random_traffic(
    groups: list[tuple[int, int, bool]], cut: int | None, max_in_flight: int
) -> None:
    redis: Any = _EchoRedis()
    redis.gate.clear()
    redis.cut_after = cut
    batcher = PipelineBatcher(timeout=5.0, max_in_flight=max_in_flight)
    tasks: list[asyncio.Task[Any]] = []
    expected: list[list[bytes]] = []
    for g, (size, delay, _) in enumerate(groups):
        commands = [("GET", f"g{g}:{c}") for c in range(size)]
        expected.append([str(cmd[1]).encode() for cmd in commands])
        if size == 1:
            tasks.append(asyncio.create_task(batcher.execute_one(redis, commands[0])))
        else:
            tasks.append(asyncio.create_task(batcher.execute(redis, commands)))
        for _ in range(delay):
            await asyncio.sleep(0)
        if delay == 2:
            redis.gate.set()  # some replies come while later callers are still arriving
    for task, (_, _, cancel) in zip(tasks, groups, strict=True):
        if cancel:
            task.cancel()
    redis.gate.set()
    async with asyncio.timeout(5):  # nobody is left without an answer
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result, want, (size, _, cancel) in zip(results, expected, groups, strict=True):
        if isinstance(result, BaseException):
            assert cancel or isinstance(result, RedisConnectionError), result
        else:
            assert result == (want[0] if size == 1 else want)  # its own replies, in order
    await batcher.aclose()


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 4), st.integers(0, 3), st.booleans()), min_size=1, max_size=25
    ),
    st.one_of(st.none(), st.integers(0, 12)),
    st.integers(1, 4),
)
def test_a_reply_never_reaches_the_wrong_caller(
    groups: list[tuple[int, int, bool]], cut: int | None, max_in_flight: int
) -> None:
    """Any mix of group sizes, arrival ticks, cancellations and a connection cut mid-batch:
    every caller gets exactly its own replies, or an error (cut) / CancelledError (cancelled)."""
    asyncio.run(_random_traffic(groups, cut, max_in_flight))
