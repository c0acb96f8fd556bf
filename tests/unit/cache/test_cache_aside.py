"""CacheAside logic on fakeredis (no Lua there: the WATCH/MULTI path is exercised too).

Other tasks are waited for by events and conditions (``until``), never by a sleep that must be
"long enough"; "nobody waits" is a hang guard around a gate that is never opened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import fakeredis
import msgspec
import pytest
from _cache_fakes import FakeClock
from prometheus_client import CollectorRegistry
from redis.exceptions import ConnectionError as RedisConnectionError

from cache import NOT_FOUND, CacheAside, CacheMetrics, CircuitBreaker, Codec, Load, SideCommand
from cache.breaker import OPEN
from cache.envelope import seal
from devtools.traffic import RedisTraffic

INT = Codec(int)
KEY = "t:v1:ns:1"


class Item(msgspec.Struct):
    id: int
    name: str


def counting_loader(value: Any, delay: float = 0.0) -> Any:
    async def loader() -> Any:
        loader.calls += 1  # type: ignore[attr-defined]
        if delay:
            await asyncio.sleep(delay)
        return value

    loader.calls = 0  # type: ignore[attr-defined]
    return loader


def ev(metrics: CacheMetrics, event: str, ns: str = "ns") -> float:
    return metrics.snapshot().get(ns, {}).get(event, 0.0)


#: A wait for a condition that takes this long is a hang, not a slow machine.
HANG_GUARD = 30.0


async def until(condition: Callable[[], bool]) -> None:
    """Let other tasks run until ``condition()`` holds (under the hang guard)."""
    async with asyncio.timeout(HANG_GUARD):
        while not condition():  # noqa: ASYNC110 (state of other tasks, no event to wait on)
            await asyncio.sleep(0)


def joiners(cache: CacheAside, key: str) -> int:
    """Callers waiting on the read in flight for ``key`` (they joined its owner)."""
    owner = cache._reads.get(key)
    return len(cache._joined.get(id(owner), ())) if owner is not None else 0


async def test_miss_then_hit_one_get(cache: CacheAside, fake: Any, metrics: CacheMetrics) -> None:
    loader = counting_loader(Item(1, "a"))
    codec = Codec(Item)
    assert await cache.get_or_load(KEY, loader, ttl=60, codec=codec) == Item(1, "a")
    trips = RedisTraffic(fake)
    assert await cache.get_or_load(KEY, loader, ttl=60, codec=codec) == Item(1, "a")
    assert loader.calls == 1
    assert trips.count == 1 and trips.commands[0][0] == "GET"
    assert ev(metrics, "hit") == 1 and ev(metrics, "miss") == 1 and ev(metrics, "load") == 1


async def test_concurrent_gets_share_one_round_trip(cache: CacheAside, fake: Any) -> None:
    await cache.set(KEY, 5, ttl=60, codec=INT)
    trips = RedisTraffic(fake)
    loader = counting_loader(1)
    res = await asyncio.gather(
        *(cache.get_or_load(KEY, loader, ttl=60, codec=INT) for _ in range(50))
    )
    assert res == [5] * 50
    assert trips.count == 1
    assert cache._reads == {} and cache._joined == {}


async def test_callers_sharing_a_read_each_count_as_a_lookup(
    cache: CacheAside, fake: Any, metrics: CacheMetrics
) -> None:
    """Cold: 30 callers share one GET and one load; each is a miss, 29 joined the load.
    Warm: 30 callers share one GET; each is a hit (the hit ratio counts lookups)."""
    trips = RedisTraffic(fake)
    loader = counting_loader(3, delay=0.01)
    res = await asyncio.gather(
        *(cache.get_or_load(KEY, loader, ttl=60, codec=INT) for _ in range(30))
    )
    assert res == [3] * 30 and loader.calls == 1
    assert trips.commands.count(("GET", KEY)) == 1
    assert (ev(metrics, "miss"), ev(metrics, "singleflight_joined"), ev(metrics, "load")) == (
        30,
        29,
        1,
    )
    res = await asyncio.gather(
        *(cache.get_or_load(KEY, loader, ttl=60, codec=INT) for _ in range(30))
    )
    assert res == [3] * 30 and trips.commands.count(("GET", KEY)) == 2
    assert ev(metrics, "hit") == 30 and metrics.hit_ratio("ns") == 0.5


async def test_cancelled_owner_of_a_shared_read_leaves_the_others_their_value(
    cache: CacheAside, metrics: CacheMetrics
) -> None:
    """The caller whose read the others joined is cancelled mid-load: the joiners carry on
    (they join the load still running) and get the value; the loader ran once."""
    gate, loading = asyncio.Event(), asyncio.Event()

    async def slow() -> int:
        slow.calls += 1  # type: ignore[attr-defined]
        loading.set()
        await gate.wait()
        return 4

    slow.calls = 0  # type: ignore[attr-defined]
    owner = asyncio.create_task(cache.get_or_load(KEY, slow, ttl=60, codec=INT))
    async with asyncio.timeout(HANG_GUARD):
        await loading.wait()
    tasks = [asyncio.create_task(cache.get_or_load(KEY, slow, ttl=60, codec=INT)) for _ in range(5)]
    await until(lambda: joiners(cache, KEY) == 5)
    owner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await owner
    # one joiner now owns the read and joined the load still running; the others joined it
    await until(lambda: ev(metrics, "singleflight_joined") == 1 and joiners(cache, KEY) == 4)
    gate.set()
    async with asyncio.timeout(HANG_GUARD):
        assert await asyncio.gather(*tasks) == [4] * 5
    assert slow.calls == 1  # type: ignore[attr-defined]
    assert cache._reads == {} and cache._joined == {}


async def test_cancelled_joiner_of_a_shared_read_cancels_only_itself(cache: CacheAside) -> None:
    gate = asyncio.Event()

    async def slow() -> int:
        await gate.wait()
        return 6

    tasks = [asyncio.create_task(cache.get_or_load(KEY, slow, ttl=60, codec=INT)) for _ in range(6)]
    await until(lambda: joiners(cache, KEY) == 5)  # one owner, five joined its read
    tasks[3].cancel()
    gate.set()
    res = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(res[3], asyncio.CancelledError)
    assert res[:3] + res[4:] == [6] * 5


async def test_single_flight_on_miss(cache: CacheAside, metrics: CacheMetrics) -> None:
    loader = counting_loader(3, delay=0.02)
    res = await asyncio.gather(
        *(cache.get_or_load(KEY, loader, ttl=60, codec=INT) for _ in range(30))
    )
    assert res == [3] * 30
    assert loader.calls == 1
    assert cache.in_flight == 0


async def test_loader_exception_propagates_and_is_not_cached(
    cache: CacheAside, metrics: CacheMetrics, fake: Any
) -> None:
    async def boom() -> int:
        await asyncio.sleep(0.01)
        raise LookupError("db")

    res = await asyncio.gather(
        *(cache.get_or_load(KEY, boom, ttl=60, codec=INT) for _ in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(r, LookupError) for r in res)
    assert await fake.get(KEY) is None
    assert await fake.get(KEY + ":lock") is None  # released on failure
    assert ev(metrics, "load_error") == 1
    assert await cache.get_or_load(KEY, counting_loader(9), ttl=60, codec=INT) == 9


@pytest.mark.usefixtures("still_redis_clock")
async def test_negative_caching(cache: CacheAside, metrics: CacheMetrics, fake: Any) -> None:
    loader = counting_loader(None)
    assert await cache.get_or_load(KEY, loader, ttl=60, codec=INT, negative_ttl=30) is None
    assert await cache.get_or_load(KEY, loader, ttl=60, codec=INT, negative_ttl=30) is None
    assert loader.calls == 1
    assert ev(metrics, "negative_hit") == 1
    pttl = await fake.pttl(KEY)
    assert 27_000 <= pttl <= 33_000  # negative TTL (jittered), not the value TTL
    got = await cache.get_many([KEY], INT)
    assert got == [None]


async def test_not_found_without_negative_ttl_is_not_cached(cache: CacheAside, fake: Any) -> None:
    loader = counting_loader(None)
    assert await cache.get_or_load(KEY, loader, ttl=60, codec=INT) is None
    assert await cache.get_or_load(KEY, loader, ttl=60, codec=INT) is None
    assert loader.calls == 2
    assert await fake.get(KEY) is None


async def test_stored_none_is_a_hit_not_not_found(cache: CacheAside, metrics: CacheMetrics) -> None:
    codec: Codec[int | None] = Codec(int | None)
    await cache.set(KEY, None, ttl=60, codec=codec)
    loader = counting_loader(5)
    assert await cache.get_or_load(KEY, loader, ttl=60, codec=codec) is None
    assert loader.calls == 0
    assert ev(metrics, "hit") == 1 and ev(metrics, "negative_hit") == 0
    assert not NOT_FOUND and repr(NOT_FOUND) == "NOT_FOUND"


@pytest.mark.usefixtures("still_redis_clock")
async def test_ttl_jitter_bounds(fake: Any, metrics: CacheMetrics) -> None:
    cache = CacheAside(fake, metrics=metrics, jitter=0.1)
    items = [(f"t:v1:ns:{i}", i) for i in range(200)]
    await cache.set_many(items, ttl=100, codec=INT)
    ttls = [await fake.pttl(k) for k, _ in items]
    assert all(90_000 <= t <= 110_000 for t in ttls)
    assert max(ttls) - min(ttls) > 5_000  # spread, not all equal
    no_jitter = CacheAside(fake, metrics=metrics, jitter=0.0)
    await no_jitter.set("t:v1:ns:x", 1, ttl=100, codec=INT)
    assert await fake.pttl("t:v1:ns:x") == 100_000


@pytest.mark.usefixtures("still_redis_clock")
async def test_values_loaded_together_get_jittered_ttls(cache: CacheAside, fake: Any) -> None:
    """A cold start loads many keys at once: they must not all expire in the same second."""
    loads = [Load(f"t:v1:ns:{i}", counting_loader(i), INT, 100) for i in range(50)]
    assert await cache.load_many(loads) == list(range(50))
    ttls = [await fake.pttl(ld.key) for ld in loads]
    assert all(90_000 <= t <= 110_000 for t in ttls)
    assert max(ttls) - min(ttls) > 2_000  # spread, not all equal


@pytest.mark.usefixtures("still_redis_clock")
async def test_callable_ttl_and_non_positive_ttl(cache: CacheAside, fake: Any) -> None:
    async def load() -> int:
        return 20

    await cache.get_or_load(KEY, load, ttl=lambda v: v * 10, codec=INT)
    assert 180_000 <= await fake.pttl(KEY) <= 220_000
    other = "t:v1:ns:2"
    loader = counting_loader(0)
    await cache.get_or_load(other, loader, ttl=lambda v: -1, codec=INT)
    await cache.get_or_load(other, loader, ttl=0, codec=INT)
    assert loader.calls == 2 and await fake.get(other) is None
    await cache.set(other, 1, ttl=0, codec=INT)
    assert await fake.get(other) is None


async def test_decode_error_is_a_miss_deleted_and_reloaded(
    cache: CacheAside, fake: Any, metrics: CacheMetrics
) -> None:
    await fake.set(KEY, b"\x00garbage", px=60_000)
    assert await cache.get_or_load(KEY, counting_loader(4), ttl=60, codec=INT) == 4
    assert ev(metrics, "decode_error") == 1
    # wrong type inside a valid envelope is also a decode error
    await cache.set(KEY, "text", ttl=60, codec=Codec(str))  # type: ignore[arg-type]
    assert await cache.get_or_load(KEY, counting_loader(6), ttl=60, codec=INT) == 6
    assert ev(metrics, "decode_error") == 2
    assert await cache.get_or_load(KEY, counting_loader(7), ttl=60, codec=INT) == 6


async def test_decode_error_deleted_even_if_not_recached(cache: CacheAside, fake: Any) -> None:
    await fake.set(KEY, b"junk-junk-junk-junk", px=60_000)
    assert await cache.get_or_load(KEY, counting_loader(4), ttl=0, codec=INT) == 4
    assert await fake.get(KEY) is None


async def test_load_many_reloads_and_deletes_undecodable_values(
    cache: CacheAside, fake: Any, metrics: CacheMetrics
) -> None:
    """load_many treats an undecodable value like get_or_load: a miss that is reloaded, and
    deleted even when the reloaded value is not cached again."""
    await fake.set("t:v1:ns:a", b"\x00garbage", px=60_000)
    await fake.set("t:v1:ns:b", b"junk-junk-junk-junk", px=60_000)
    a, b = counting_loader(1), counting_loader(2)
    res = await cache.load_many([Load("t:v1:ns:a", a, INT, 60), Load("t:v1:ns:b", b, INT, 0)])
    assert res == [1, 2] and a.calls == b.calls == 1
    assert ev(metrics, "decode_error") == 2
    assert await cache.get_many(["t:v1:ns:a"], INT) == [1]  # replaced by the reload
    assert await fake.get("t:v1:ns:b") is None  # ttl 0: not cached, but the junk is gone


async def test_waiter_deletes_an_undecodable_value_from_the_holder(
    fake: Any, metrics: CacheMetrics
) -> None:
    """The holder (another process, another schema) wrote a value this codec cannot read: the
    waiter drops it and loads itself, and deletes it even when its own load is not cached."""
    holder = CacheAside(fake, metrics=CacheMetrics(CollectorRegistry()))
    waiter = CacheAside(fake, metrics=metrics)
    gate = asyncio.Event()

    async def old_schema() -> str:
        await gate.wait()
        return "text"

    holding = asyncio.create_task(holder.get_or_load(KEY, old_schema, ttl=60, codec=Codec(str)))
    async with asyncio.timeout(5):
        while not await fake.exists(KEY + ":lock"):  # noqa: ASYNC110 (state in Redis)
            await asyncio.sleep(0.001)
    loader = counting_loader(5)
    waiting = asyncio.create_task(waiter.get_or_load(KEY, loader, ttl=0, codec=INT))
    async with asyncio.timeout(5):
        while not dict(await fake.pubsub_numsub(KEY + ":chan")).get(  # noqa: ASYNC110
            (KEY + ":chan").encode()
        ):
            await asyncio.sleep(0.001)
    gate.set()
    assert await holding == "text"
    assert await waiting == 5 and loader.calls == 1
    assert ev(metrics, "lock_waited") == 1 and ev(metrics, "decode_error") == 1
    assert await fake.get(KEY) is None
    await holder.aclose()
    await waiter.aclose()


async def test_redis_none_goes_to_loader_single_flighted(metrics: CacheMetrics) -> None:
    cache = CacheAside(None, metrics=metrics)
    loader = counting_loader(8, delay=0.01)
    res = await asyncio.gather(
        *(cache.get_or_load(KEY, loader, ttl=60, codec=INT) for _ in range(20))
    )
    assert res == [8] * 20 and loader.calls == 1
    fallback_calls = 0

    async def fb() -> None:
        nonlocal fallback_calls
        fallback_calls += 1

    await cache.get_or_load(KEY, loader, ttl=60, codec=INT, also=[SideCommand(("INCR", "x"), fb)])
    assert fallback_calls == 1
    assert await cache.get_many([KEY], INT) == [None]
    await cache.set(KEY, 1, ttl=60, codec=INT)
    await cache.invalidate(KEY)
    assert not await cache.healthy()


async def test_side_commands_in_same_round_trip(cache: CacheAside, fake: Any) -> None:
    await cache.set(KEY, 5, ttl=60, codec=INT)
    called = False

    async def fb() -> None:
        nonlocal called
        called = True

    trips = RedisTraffic(fake)
    also = [
        SideCommand(("HINCRBY", "t:v1:views:2026-01-01", "aries", 1), fb),
        SideCommand(("HSET", "t:v1:seen", "7", "123")),
    ]
    assert await cache.get_or_load(KEY, counting_loader(0), ttl=60, codec=INT, also=also) == 5
    assert trips.count == 1
    assert await fake.hget("t:v1:views:2026-01-01", "aries") == b"1"
    assert await fake.hget("t:v1:seen", "7") == b"123"
    assert not called


async def test_side_command_reply_reaches_on_result(cache: CacheAside, fake: Any) -> None:
    """A decision that needs Redis' answer (a throttle's INCR) rides in the same round trip."""
    await cache.set(KEY, 5, ttl=60, codec=INT)
    replies: list[Any] = []
    trips = RedisTraffic(fake)
    also = [SideCommand(("INCR", "t:v1:throttle:7"), on_result=replies.append)]
    await cache.get_or_load(KEY, counting_loader(0), ttl=60, codec=INT, also=also)
    await cache.load_many([Load(KEY, counting_loader(0), INT, 60)], also=also)
    assert replies == [1, 2]
    assert trips.count == 2


async def test_on_result_not_called_when_redis_is_down(
    server: fakeredis.FakeServer, cache: CacheAside
) -> None:
    server.connected = False
    replies: list[Any] = []
    also = [SideCommand(("INCR", "t:v1:throttle:7"), on_result=replies.append)]
    assert await cache.get_or_load(KEY, counting_loader(2), ttl=60, codec=INT, also=also) == 2
    assert replies == []


async def test_failed_side_command_runs_its_fallback(cache: CacheAside, fake: Any) -> None:
    await fake.set("t:v1:str", "x")
    calls: list[str] = []

    async def fb() -> None:
        calls.append("fb")

    async def broken_fb() -> None:
        raise RuntimeError("postgres down too")

    also = [
        SideCommand(("HINCRBY", "t:v1:str", "f", 1), fb),  # WRONGTYPE
        SideCommand(("HINCRBY", "t:v1:ok", "f", 1), broken_fb),
    ]
    assert await cache.get_or_load(KEY, counting_loader(2), ttl=60, codec=INT, also=also) == 2
    assert calls == ["fb"]


async def test_redis_down_side_fallbacks_and_loader(
    server: fakeredis.FakeServer, cache: CacheAside, metrics: CacheMetrics
) -> None:
    server.connected = False
    calls: list[str] = []

    async def fb() -> None:
        calls.append("fb")

    async def broken_fb() -> None:
        raise RuntimeError("swallowed")

    also = [SideCommand(("HINCRBY", "t:v1:v", "f", 1), fb), SideCommand(("INCR", "x"), broken_fb)]
    assert await cache.get_or_load(KEY, counting_loader(2), ttl=60, codec=INT, also=also) == 2
    assert calls == ["fb"]
    assert ev(metrics, "redis_error") >= 1
    res = await cache.load_many([Load(KEY, counting_loader(3), INT, 60)], also=also)
    assert res == [3] and calls == ["fb", "fb"]


async def test_breaker_opens_and_recovers(
    server: fakeredis.FakeServer, fake: Any, metrics: CacheMetrics, clock: FakeClock
) -> None:
    breaker = CircuitBreaker(failure_threshold=3, cooldown=5.0, clock=clock)
    cache = CacheAside(fake, metrics=metrics, breaker=breaker)
    server.connected = False
    for _ in range(3):
        assert await cache.get_or_load(KEY, counting_loader(1), ttl=60, codec=INT) == 1
    assert breaker.state == OPEN
    errors = ev(metrics, "redis_error")
    trips = RedisTraffic(fake)
    for _ in range(10):
        assert await cache.get_or_load(KEY, counting_loader(1), ttl=60, codec=INT) == 1
    assert trips.count == 0  # skipped entirely while open
    assert ev(metrics, "redis_error") == errors
    server.connected = True
    clock.now += 5.0
    assert await cache.get_or_load(KEY, counting_loader(2), ttl=60, codec=INT) == 2  # probe
    assert breaker.state == 0
    assert await cache.get_or_load(KEY, counting_loader(3), ttl=60, codec=INT) == 2  # cached
    text = metrics.registry.get_sample_value("cache_breaker_state")
    assert text == 0


async def test_open_breaker_skips_redis_on_every_path(
    fake: Any, metrics: CacheMetrics, clock: FakeClock
) -> None:
    """Not only get_or_load: writes, invalidations, batch reads and side commands skip Redis
    too while the breaker is open (Redis is up here, so any traffic is a leak), and the side
    commands go straight to their fallbacks."""
    breaker = CircuitBreaker(failure_threshold=1, cooldown=5.0, clock=clock)
    cache = CacheAside(fake, metrics=metrics, breaker=breaker)
    breaker.record_failure()
    assert breaker.state == OPEN
    fallbacks: list[str] = []

    def side(name: str) -> SideCommand:
        async def fb() -> None:
            fallbacks.append(name)

        return SideCommand(("HINCRBY", "t:v1:views", name, 1), fb)

    trips = RedisTraffic(fake)
    await cache.set(KEY, 1, ttl=60, codec=INT)
    await cache.set_many({"t:v1:ns:2": 2}, ttl=60, codec=INT)
    await cache.invalidate(KEY)
    assert await cache.get_many([KEY], INT) == [None]
    many = await cache.load_many([Load(KEY, counting_loader(2), INT, 60)], also=[side("many")])
    await cache.send(side("send"))
    one = await cache.get_or_load(KEY, counting_loader(3), ttl=60, codec=INT, also=[side("get")])
    assert (many, one) == ([2], 3)
    assert trips.count == 0
    assert fallbacks == ["many", "send", "get"]
    assert await fake.exists(KEY, "t:v1:ns:2") == 0


async def test_response_errors_do_not_open_breaker(fake: Any, metrics: CacheMetrics) -> None:
    cache = CacheAside(fake, metrics=metrics)
    await fake.hset(KEY, "a", "b")  # GET on a hash: WRONGTYPE
    for _ in range(5):
        assert await cache.get_or_load(KEY, counting_loader(1), ttl=60, codec=INT) == 1
    assert cache.breaker.state == 0
    assert ev(metrics, "redis_error") >= 5


async def test_load_many_one_round_trip(cache: CacheAside, fake: Any) -> None:
    await cache.set("t:v1:a:1", 1, ttl=60, codec=INT)
    await cache.set("t:v1:b:1", "x", ttl=60, codec=Codec(str))
    trips = RedisTraffic(fake)
    loads: list[Load[Any]] = [
        Load("t:v1:a:1", counting_loader(99), INT, 60),
        Load("t:v1:b:1", counting_loader("y"), Codec(str), 60),
    ]
    res = await cache.load_many(loads, also=[SideCommand(("HINCRBY", "t:v1:v", "a", 1))])
    assert res == [1, "x"]
    assert trips.count == 1
    assert [c[0] for c in trips.commands] == ["MGET", "HINCRBY"]
    # misses load concurrently through the normal path, NOT_FOUND cached with its own ttl
    miss = counting_loader(5, delay=0.01)
    nf = counting_loader(None)
    res = await cache.load_many(
        [Load("t:v1:a:2", miss, INT, 60), Load("t:v1:a:3", nf, INT, 60, negative_ttl=10)]
    )
    assert res == [5, None]
    res = await cache.load_many(
        [Load("t:v1:a:2", miss, INT, 60), Load("t:v1:a:3", nf, INT, 60, negative_ttl=10)]
    )
    assert res == [5, None] and miss.calls == 1 and nf.calls == 1
    assert await cache.load_many([]) == []


async def test_get_many(cache: CacheAside, fake: Any) -> None:
    await cache.set_many({"t:v1:a:1": 1, "t:v1:a:2": 2}, ttl=60, codec=INT)
    await fake.set("t:v1:a:3", b"bad")
    trips = RedisTraffic(fake)
    assert await cache.get_many(["t:v1:a:1", "t:v1:a:9", "t:v1:a:3", "t:v1:a:2"], INT) == [
        1,
        None,
        None,
        2,
    ]
    # the MGET, then one DEL of the undecodable value (it heals like on every read path)
    assert [c[0] for c in trips.commands] == ["MGET", "DEL"] and trips.count == 2
    assert await fake.exists("t:v1:a:3") == 0
    assert await cache.get_many([], INT) == []


async def test_invalidate_deletes_value_and_lock(cache: CacheAside, fake: Any) -> None:
    await cache.set(KEY, 1, ttl=60, codec=INT)
    await fake.set(KEY + ":lock", b"someone")
    trips = RedisTraffic(fake)
    await cache.invalidate(KEY)
    assert trips.count == 1
    assert await fake.get(KEY) is None and await fake.get(KEY + ":lock") is None
    await cache.invalidate()


async def test_invalidate_swallows_errors(
    server: fakeredis.FakeServer, cache: CacheAside, metrics: CacheMetrics
) -> None:
    server.connected = False
    await cache.invalidate(KEY)
    assert ev(metrics, "redis_error") == 1


async def test_load_racing_an_invalidation_does_not_write_back(
    cache: CacheAside, fake: Any
) -> None:
    gate, loading = asyncio.Event(), asyncio.Event()

    async def old_loader() -> int:
        loading.set()
        await gate.wait()
        return 1  # read before the write committed

    reader = asyncio.create_task(cache.get_or_load(KEY, old_loader, ttl=60, codec=INT))
    async with asyncio.timeout(HANG_GUARD):
        await loading.wait()
    await cache.invalidate(KEY)  # the write committed meanwhile
    # a caller arriving now does not join the old load
    assert await cache.get_or_load(KEY, counting_loader(2), ttl=60, codec=INT) == 2
    gate.set()
    assert await reader == 1
    assert await cache.get_or_load(KEY, counting_loader(3), ttl=60, codec=INT) == 2


async def test_invalidate_detaches_a_get_in_flight(fake: Any, metrics: CacheMetrics) -> None:
    """A GET sent before an invalidation may bring back the old value: a caller arriving after
    the invalidation must not share that GET's reply, it reads (and loads) afresh."""
    cache = CacheAside(fake, metrics=metrics, op_timeout=5.0)  # the held GET must not time out
    await cache.set(KEY, 1, ttl=60, codec=INT)
    batcher: Any = cache._batcher
    original = batcher.execute_one
    gate, held = asyncio.Event(), asyncio.Event()
    gets = 0

    async def execute_one(redis: Any, command: tuple[Any, ...]) -> Any:
        nonlocal gets
        is_get = command[0] == "GET"
        gets += is_get
        first = is_get and gets == 1
        data = await original(redis, command)
        if first:
            held.set()
            await gate.wait()  # the old value is on its way back while the write commits
        return data

    batcher.execute_one = execute_one
    first = asyncio.create_task(cache.get_or_load(KEY, counting_loader(0), ttl=60, codec=INT))
    async with asyncio.timeout(HANG_GUARD):
        await held.wait()
    await cache.invalidate(KEY)  # the write committed
    # Answered while the first GET is still held: it did not join that GET (it would hang).
    async with asyncio.timeout(HANG_GUARD):
        assert await cache.get_or_load(KEY, counting_loader(2), ttl=60, codec=INT) == 2
    gate.set()
    assert await first == 1  # started before: may see the old value
    assert gets == 2
    await cache.aclose()


@pytest.mark.usefixtures("still_redis_clock")
async def test_early_refresh_serves_current_value_while_one_refresh_runs(
    cache: CacheAside, fake: Any, metrics: CacheMetrics
) -> None:
    await cache.set(KEY, 1, ttl=10, codec=INT)
    gate = asyncio.Event()
    calls = 0

    async def slow_new() -> int:
        nonlocal calls
        calls += 1
        await gate.wait()
        return 2

    async with asyncio.timeout(HANG_GUARD):  # the refresh's gate stays shut: nobody waits on it
        res = await asyncio.gather(
            *(
                cache.get_or_load(KEY, slow_new, ttl=10, codec=INT, early_refresh=30)
                for _ in range(20)
            )
        )
        assert res == [1] * 20
        for _ in range(3):
            assert await cache.get_or_load(KEY, slow_new, ttl=10, codec=INT, early_refresh=30) == 1
    await until(lambda: calls > 0)  # the one refresh is loading
    assert calls == 1 and len(cache._refreshing) == 1
    assert ev(metrics, "stale_served") >= 20
    gate.set()
    await cache.wait_background()
    assert ev(metrics, "early_refresh") == 1
    assert await cache.get_or_load(KEY, slow_new, ttl=10, codec=INT) == 2
    assert 9_000 <= await fake.pttl(KEY) <= 11_000


async def test_early_refresh_runs_again_once_the_previous_one_ended(
    cache: CacheAside, metrics: CacheMetrics
) -> None:
    """One refresh per key at a time, not one per key ever: the next window refreshes again."""
    await cache.set(KEY, 1, ttl=10, codec=INT)
    first, second = counting_loader(2), counting_loader(3)
    assert await cache.get_or_load(KEY, first, ttl=10, codec=INT, early_refresh=30) == 1
    await cache.wait_background()
    # the refreshed value (ttl 10) is again within the 30 s margin
    assert await cache.get_or_load(KEY, second, ttl=10, codec=INT, early_refresh=30) == 2
    await cache.wait_background()
    assert (first.calls, second.calls) == (1, 1)
    assert ev(metrics, "early_refresh") == 2
    assert await cache.get_or_load(KEY, second, ttl=10, codec=INT) == 3


async def test_early_refresh_backs_off_while_another_process_refreshes(
    cache: CacheAside, fake: Any
) -> None:
    """The key's lock is held elsewhere: one failed attempt, then no lock attempt per hit."""
    await cache.set(KEY, 1, ttl=10, codec=INT)
    await fake.set(KEY + ":lock", b"another-process", px=60_000)
    loader = counting_loader(2)
    trips = RedisTraffic(fake)
    for _ in range(3):
        assert await cache.get_or_load(KEY, loader, ttl=10, codec=INT, early_refresh=30) == 1
        await cache.wait_background()
    lock_attempts = [c for c in trips.commands if c[0] == "SET" and c[1] == KEY + ":lock"]
    assert len(lock_attempts) == 1
    assert loader.calls == 0


async def test_load_many_hits_refresh_early_too(cache: CacheAside, metrics: CacheMetrics) -> None:
    await cache.set(KEY, 1, ttl=10, codec=INT)
    loader = counting_loader(2)
    assert await cache.load_many([Load(KEY, loader, INT, 10, early_refresh=30)]) == [1]
    await cache.wait_background()
    assert loader.calls == 1 and ev(metrics, "early_refresh") == 1
    assert await cache.get_many([KEY], INT) == [2]


async def test_no_early_refresh_far_from_expiry(cache: CacheAside, metrics: CacheMetrics) -> None:
    await cache.set(KEY, 1, ttl=3600, codec=INT)
    loader = counting_loader(2)
    for _ in range(50):
        assert await cache.get_or_load(KEY, loader, ttl=3600, codec=INT, early_refresh=1) == 1
    await cache.wait_background()
    assert loader.calls == 0 and ev(metrics, "stale_served") == 0


async def test_xfetch_uses_recorded_load_time(
    cache: CacheAside, fake: Any, metrics: CacheMetrics
) -> None:
    # A 60 s loader and 30 s left: XFetch (beta 1) refreshes with p = 1 - e^-0.5 per hit.
    await fake.set(KEY, seal(30_000, 60_000, INT.encode(1)), px=30_000)
    loader = counting_loader(2)
    served = [
        await cache.get_or_load(KEY, loader, ttl=60, codec=INT, early_refresh=0.0)
        for _ in range(40)
    ]
    await cache.wait_background()
    assert loader.calls == 1 and ev(metrics, "early_refresh") == 1
    assert served[0] == 1 and ev(metrics, "decode_error") == 0  # the stored value was served


async def test_aclose_cancels_background_refresh(cache: CacheAside) -> None:
    await cache.set(KEY, 1, ttl=1, codec=INT)
    never, loading = asyncio.Event(), asyncio.Event()

    async def hang() -> int:
        loading.set()
        await never.wait()
        return 2

    assert await cache.get_or_load(KEY, hang, ttl=1, codec=INT, early_refresh=5) == 1
    async with asyncio.timeout(HANG_GUARD):
        await loading.wait()  # the refresh is inside its loader
    assert cache._tasks
    await cache.aclose()
    assert not cache._tasks


async def test_lock_false_writes_plainly(cache: CacheAside, fake: Any) -> None:
    assert await cache.get_or_load(KEY, counting_loader(1), ttl=60, codec=INT, lock=False) == 1
    assert await fake.get(KEY + ":lock") is None
    assert await fake.get(KEY) is not None


async def test_healthy(cache: CacheAside, server: fakeredis.FakeServer) -> None:
    assert await cache.healthy()
    server.connected = False
    assert not await cache.healthy()


def test_invalid_jitter() -> None:
    with pytest.raises(ValueError):
        CacheAside(None, jitter=1.5)


class _SentThenSilentConnection:
    """A connection whose commands go out but whose reply never comes."""

    disconnected = False

    def pack_commands(self, commands: Any) -> list[bytes]:
        return [b"packed"]

    async def send_packed_command(self, packed: Any, check_health: bool = True) -> None:
        pass

    async def check_health(self) -> None:
        pass

    async def read_response(self, **_kw: Any) -> Any:
        await asyncio.sleep(10)

    async def disconnect(self, nowait: bool = False) -> None:
        self.disconnected = True


class _SentThenSilentRedis:
    def __init__(self, connection: type[_SentThenSilentConnection] | None = None) -> None:
        self.conns: list[_SentThenSilentConnection] = []
        outer = self
        make = connection or _SentThenSilentConnection

        class Pool:
            async def get_connection(self) -> _SentThenSilentConnection:
                outer.conns.append(make())
                return outer.conns[-1]

            async def release(self, conn: Any) -> None:
                pass

        self.connection_pool = Pool()

    def register_script(self, script: str) -> Any:
        return None


async def test_side_command_timed_out_after_sending_is_not_replayed() -> None:
    """A timeout after the pipeline went out is ambiguous: replaying could double count."""
    metrics = CacheMetrics(CollectorRegistry())
    redis = _SentThenSilentRedis()
    cache = CacheAside(redis, metrics=metrics, op_timeout=0.05)  # type: ignore[arg-type]
    replayed: list[int] = []

    async def fb() -> None:
        replayed.append(1)

    also = [SideCommand(("HINCRBY", "t:v1:views", "a", 1), fb)]
    assert await cache.get_or_load(KEY, counting_loader(7), ttl=60, codec=INT, also=also) == 7
    await cache.send(*also)
    assert await cache.load_many([Load(KEY, counting_loader(7), INT, 60)], also=also) == [7]
    assert replayed == []
    assert metrics.snapshot()["views"]["side_unknown"] == 3
    # cut off mid-exchange: the connection is dropped, never reused with a reply pending
    assert [c.disconnected for c in redis.conns] == [True, True, True]


class _ResetAfterSendConnection(_SentThenSilentConnection):
    """The commands went out, then the connection was reset before the reply."""

    async def read_response(self, **_kw: Any) -> Any:
        raise RedisConnectionError("Connection reset by peer")


async def test_side_command_reset_after_sending_is_not_replayed() -> None:
    """Only "nothing was sent" allows a replay: a reset after the write is as ambiguous as a
    timeout (Redis may have applied the HINCRBY), so replaying could count a view twice."""
    metrics = CacheMetrics(CollectorRegistry())
    redis = _SentThenSilentRedis(_ResetAfterSendConnection)
    cache = CacheAside(redis, metrics=metrics, op_timeout=0.5)  # type: ignore[arg-type]
    replayed: list[int] = []

    async def fb() -> None:
        replayed.append(1)

    also = [SideCommand(("HINCRBY", "t:v1:views", "a", 1), fb)]
    await cache.send(*also)
    assert replayed == []
    assert metrics.snapshot()["views"]["side_unknown"] == 1
    assert [c.disconnected for c in redis.conns] == [True]
