"""Poison data heals itself (issue 12, 4a): garbage under a cache key is a miss, counted as a
decode error, deleted and reloaded, on every read path, never mistaken for a marker.

The garbage is written with a plain client and no TTL, as a stray ``SET`` would. The first
case is the one that used to break a sign for good: a value starting with ``N`` and at least 13
bytes long was read as the "not found" marker (``/today`` raised LookupError, forever).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from cache import CacheAside, CacheMetrics, Codec, KeySpace, Load, SideCommand, create_redis
from db.repositories.values import HoroscopeData, UserData
from db.types import Lang, Sign

GARBAGE = {
    # read as NOT_FOUND by the first envelope format: the sign failed forever
    "text starting with N": b"Nonsense written by hand under a cache key",
    "old not-found marker": b"N" + bytes(12),
    "old not-found marker, longer": b"N" + bytes(40),
    "plain msgpack, no envelope": msgspec.msgpack.encode({"text": "hi"}),
    "binary noise": bytes(range(256)),
}

DAY = dt.date(2026, 12, 5)
HORO = Codec(HoroscopeData)
USER = Codec(UserData)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    c = create_redis(redis_url, socket_timeout=2.0, socket_connect_timeout=2.0, pool_timeout=2.0)
    yield c
    await c.aclose()


@pytest.fixture
async def cache(client: Redis) -> AsyncIterator[CacheAside]:
    c = CacheAside(client, metrics=CacheMetrics(CollectorRegistry()), op_timeout=2.0)
    yield c
    await c.aclose()


def counts(cache: CacheAside, ns: str) -> dict[str, float]:
    return cache.metrics.snapshot().get(ns, {})


def horoscope(sign: Sign = Sign.LEO) -> HoroscopeData:
    return HoroscopeData(sign=sign, date=DAY, lang=Lang.RU, text="Звёзды", generator="t")


class Loader:
    def __init__(self, value: Any) -> None:
        self.value = value
        self.calls = 0

    async def __call__(self) -> Any:
        self.calls += 1
        return self.value


@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=GARBAGE.keys())
async def test_garbage_under_a_horoscope_key_heals_on_today_s_read(
    cache: CacheAside, redis: Redis, key_prefix: str, garbage: bytes
) -> None:
    """/today's read (GET + the view HINCRBY in one round trip): the person gets the text,
    the view is counted, and the key holds a proper entry with a TTL afterwards."""
    keys = KeySpace(key_prefix)
    key, views = keys.key("horoscope", DAY, Sign.LEO, Lang.RU), keys.key("buf", "views")
    await redis.set(key, garbage)
    loader = Loader(horoscope())
    also = [SideCommand(("HINCRBY", views, "2026-12-05:leo", 1))]
    for _ in range(3):
        got = await cache.get_or_load(key, loader, ttl=3600, codec=HORO, also=also)
        assert got == horoscope()
    assert loader.calls == 1  # reloaded once, then hits
    c = counts(cache, "horoscope")
    assert c["decode_error"] == 1 and c["load"] == 1 and c["hit"] == 2
    assert c["negative_hit"] == 0
    assert await redis.pttl(key) > 0  # a real entry now, not the stray value without TTL
    assert await redis.hget(views, "2026-12-05:leo") == b"3"


@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=GARBAGE.keys())
async def test_garbage_under_a_user_key_heals(
    cache: CacheAside, redis: Redis, key_prefix: str, garbage: bytes
) -> None:
    """A user read (negative caching on, the last-seen HSET riding along) finds the user."""
    keys = KeySpace(key_prefix)
    key, seen = keys.key("user", 42), keys.key("buf", "lastseen")
    await redis.set(key, garbage)
    user = UserData(id=42, first_name="Ann")
    loader = Loader(user)
    also = [SideCommand(("HSET", seen, "42", "1764900000"))]
    assert (
        await cache.get_or_load(key, loader, ttl=86_400, codec=USER, negative_ttl=60, also=also)
        == user
    )
    assert await cache.get_or_load(key, loader, ttl=86_400, codec=USER, negative_ttl=60) == user
    assert loader.calls == 1
    c = counts(cache, "user")
    assert c["decode_error"] == 1 and c["negative_hit"] == 0 and c["hit"] == 1
    assert await redis.pttl(key) > 0
    assert await redis.hget(seen, "42") == b"1764900000"


async def test_garbage_heals_through_load_many_and_get_many(
    cache: CacheAside, redis: Redis, key_prefix: str
) -> None:
    """The batch reads: load_many reloads it, get_many answers None and deletes it."""
    keys = KeySpace(key_prefix)
    leo, aries = (keys.key("horoscope", DAY, s, Lang.RU) for s in (Sign.LEO, Sign.ARIES))
    user = keys.key("user", 7)
    for key in (leo, aries, user):
        await redis.set(key, GARBAGE["text starting with N"])
    loader = Loader(horoscope())
    assert await cache.load_many([Load(leo, loader, HORO, 3600)]) == [horoscope()]
    assert loader.calls == 1 and await redis.pttl(leo) > 0
    assert await cache.get_many([aries], HORO) == [None]
    assert await redis.exists(aries) == 0  # deleted: the next read loads instead of failing
    assert await cache.get_many([user], USER) == [None]
    assert await redis.exists(user) == 0
    assert counts(cache, "horoscope")["decode_error"] == 2
    assert counts(cache, "user")["decode_error"] == 1


async def test_lock_waiter_drops_garbage_the_holder_left(
    client: Redis, cache: CacheAside, redis: Redis, key_prefix: str
) -> None:
    """Another process holds the load lock and, when it finishes, the key holds garbage: the
    waiter does not take it for "not found", it deletes it and loads itself."""
    key = KeySpace(key_prefix).key("horoscope", DAY, Sign.LEO, Lang.RU)
    await redis.set(key + ":lock", b"another-process", px=30_000)
    loader = Loader(horoscope())
    waiting = asyncio.create_task(cache.get_or_load(key, loader, ttl=3600, codec=HORO))
    async with asyncio.timeout(10):  # the waiter subscribed: an event, not a sleep
        while not dict(await redis.pubsub_numsub(key + ":chan")).get(  # noqa: ASYNC110
            (key + ":chan").encode()
        ):
            await asyncio.sleep(0.005)
    await redis.set(key, GARBAGE["old not-found marker"])
    await redis.delete(key + ":lock")
    await redis.publish(key + ":chan", b"1")  # what the holder's commit does
    assert await waiting == horoscope()
    assert loader.calls == 1
    c = counts(cache, "horoscope")
    assert c["lock_waited"] == 1 and c["decode_error"] == 1
    assert await cache.get_many([key], HORO) == [horoscope()]  # reloaded and written
