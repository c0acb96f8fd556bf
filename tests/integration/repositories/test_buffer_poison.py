"""Poison in the buffers (issue 12.4b): garbage written into Redis for real never stops a flush.

Valid counts still flush exactly once; unreadable fields, batches that are not hashes and a
pending set of the wrong type end in the buffer's dead-letter hash (no TTL, capped), with a
metric and one log line; later flushes work as if nothing happened.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from sqlalchemy import insert, select

from cache import CacheAside, CacheMetrics
from cache.buffers import BufferHandoff
from db.models import User
from db.repositories import DataContext, HoroscopeViewRepository, UserRepository
from db.types import Sign

DAY = dt.date(2026, 12, 5)


class Crash(Exception):
    pass


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def pctx(ctx: DataContext, redis: Redis, registry: CollectorRegistry) -> DataContext:
    """The test's context with metrics of its own, so the dead-letter counter starts at 0."""
    cache = CacheAside(redis, metrics=CacheMetrics(registry))
    return DataContext(cache, ctx.keys, ctx.session_factory, ctx.tz)


def dead_count(registry: CollectorRegistry, buffer: str) -> float:
    return registry.get_sample_value("cache_dead_letters_total", {"buffer": buffer}) or 0.0


async def test_unreadable_view_fields_go_to_dead_letters_and_valid_counts_flush_once(
    pctx: DataContext, redis: Redis, registry: CollectorRegistry, caplog: Any
) -> None:
    views = HoroscopeViewRepository(pctx)
    for sign, n in ((Sign.LEO, 2), (Sign.ARIES, 3)):
        for _ in range(n):
            await views.record_view(sign, DAY)
    await redis.hset(views.buffer_key, f"{DAY}:virgo", "abc")  # the poison
    await redis.hset(views.buffer_key, "garbage", "1")
    await redis.hset(views.buffer_key, f"{DAY}:libra", "99999999999999999999")  # overflow
    await views.record_view(Sign.VIRGO, DAY)  # HINCRBY refuses "abc": straight to Postgres

    async def crash_after_commit(step: str) -> None:
        if step == "committed":
            raise Crash(step)

    with pytest.raises(Crash):  # the valid counts are committed, the batch not acked yet
        await views.flush(checkpoint=crash_after_commit)
    with caplog.at_level(logging.WARNING, logger="cache.buffers"):
        result = await views.flush()
    assert (result.batches, result.views, result.dead) == (1, 0, 3)  # applied before: acked
    assert await views.totals(DAY) == {Sign.LEO: 2, Sign.ARIES: 3, Sign.VIRGO: 1}
    dead = await redis.hgetall(views.buffer_key + ":dead")
    assert sorted(k.split(b"|", 1)[1] for k in dead) == [
        b"2026-12-05:libra",
        b"2026-12-05:virgo",
        b"garbage",
    ]
    assert sorted(dead.values()) == [b"1", b"99999999999999999999", b"abc"]
    assert await redis.ttl(views.buffer_key + ":dead") == -1  # never evicted by volatile-lru
    assert dead_count(registry, "views") == 3
    lines = [r for r in caplog.records if "dead letter" in r.getMessage()]
    assert len(lines) == 1 and "views" in lines[0].getMessage()
    assert await BufferHandoff(redis, views.buffer_key).pending() == []
    # nothing left behind, and the next views flush as usual
    await views.record_view(Sign.LEO, DAY)
    assert await views.flush() == type(result)(batches=1, rows=1, views=1)
    assert (await views.totals(DAY))[Sign.LEO] == 3


async def test_a_string_at_the_buffer_key_is_dead_lettered_and_counting_resumes(
    pctx: DataContext, redis: Redis, registry: CollectorRegistry
) -> None:
    views = HoroscopeViewRepository(pctx)
    await redis.set(views.buffer_key, "not a hash")
    await views.record_view(Sign.LEO, DAY)  # WRONGTYPE: the +1 goes to Postgres directly
    assert await views.totals(DAY) == {Sign.LEO: 1}
    for _ in range(3):  # every run used to fail here, piling up one more batch each time
        await views.flush()
    handoff = BufferHandoff(redis, views.buffer_key)
    assert await handoff.pending() == []
    assert not await redis.exists(views.buffer_key)
    dead = await redis.hgetall(views.buffer_key + ":dead")
    assert list(dead.values()) == [b"not a hash"]
    assert next(iter(dead)).endswith(b"|*")
    assert dead_count(registry, "views") == 1
    await views.record_view(Sign.LEO, DAY)  # a fresh hash again
    assert await redis.type(views.buffer_key) == b"hash"
    assert (await views.flush()).views == 1
    assert await views.totals(DAY) == {Sign.LEO: 2}


async def test_a_pending_set_of_the_wrong_type_is_rebuilt_from_the_batches(
    pctx: DataContext, redis: Redis, registry: CollectorRegistry
) -> None:
    views = HoroscopeViewRepository(pctx)
    for _ in range(4):
        await views.record_view(Sign.PISCES, DAY)

    async def crash(step: str) -> None:
        if step == "handed_over":
            raise Crash(step)

    with pytest.raises(Crash):  # a batch handed over and left pending
        await views.flush(checkpoint=crash)
    handoff = BufferHandoff(redis, views.buffer_key)
    assert len(await handoff.pending()) == 1
    await redis.delete(handoff.pending_key)
    await redis.set(handoff.pending_key, "junk")
    await views.record_view(Sign.PISCES, DAY)
    assert (await views.buffered(DAY)) == {Sign.PISCES: 5}
    result = await views.flush()
    assert (result.batches, result.views) == (2, 5)
    assert await views.totals(DAY) == {Sign.PISCES: 5}
    assert await handoff.pending() == []
    assert await redis.hget(views.buffer_key + ":dead", "pending|*") == b"junk"
    assert dead_count(registry, "views") == 1


async def test_the_dead_letters_are_capped(
    pctx: DataContext, redis: Redis, registry: CollectorRegistry, monkeypatch: Any
) -> None:
    monkeypatch.setattr("cache.buffers.DEAD_LETTER_CAP", 3)
    views = HoroscopeViewRepository(pctx)
    await redis.hset(views.buffer_key, mapping={f"bad{i}": "x" * 2000 for i in range(5)})
    await views.record_view(Sign.LEO, DAY)
    result = await views.flush()
    assert (result.views, result.dead) == (1, 5)
    dead_key = views.buffer_key + ":dead"
    assert await redis.hlen(dead_key) == 3  # the cap holds; the rest is counted only
    assert all(len(v) == 512 for v in (await redis.hgetall(dead_key)).values())
    assert dead_count(registry, "views") == 5
    await redis.set(dead_key, "someone wrote a string here")
    await redis.hset(views.buffer_key, "bad", "y")
    assert (await views.flush()).dead == 1  # a dead-letter key of the wrong type is replaced
    assert await redis.hlen(dead_key) == 1


async def test_unreadable_last_seen_fields_go_to_dead_letters(
    pctx: DataContext, redis: Redis, registry: CollectorRegistry
) -> None:
    async with pctx.session_factory() as s, s.begin():
        old = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
        await s.execute(
            insert(User),
            [{"id": i, "first_name": "A", "last_seen_at": old} for i in (1, 2)],
        )
    now = time.time()
    async with pctx.session_factory() as s:
        repo = UserRepository(s, pctx)
        await pctx.cache.send(repo.last_seen_command(1, now), repo.last_seen_command(2, now))
        await redis.hset(repo.last_seen_key, "abc", "1764000000")
        await redis.hset(repo.last_seen_key, "2", "nan")  # would stamp user 2 "never" forever
        assert await repo.count_seen_since(dt.datetime.fromtimestamp(now - 60, dt.UTC)) == 1
        result = await repo.flush_last_seen()
        assert (result.batches, result.stamps, result.rows, result.dead) == (1, 1, 1, 2)
        seen = dict((await s.execute(select(User.id, User.last_seen_at))).all())
    assert abs(seen[1].timestamp() - int(now)) < 1
    assert seen[2] == dt.datetime(2020, 1, 1, tzinfo=dt.UTC)  # untouched
    assert await redis.hlen(repo.last_seen_key + ":dead") == 2
    assert dead_count(registry, "last_seen") == 2
