"""UserRepository against real Redis and Postgres."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import select, text

from cache import CacheAside, SideCommand
from cache.buffers import BufferHandoff
from db.models import User
from db.repositories import DataContext, UserNotFoundError, UserRepository
from db.types import Lang, Sign
from devtools.traffic import RedisTraffic
from tests.helpers import TgUser, unit_of_work

UTC = dt.UTC


async def create(ctx: DataContext, tg: TgUser) -> Any:
    async with unit_of_work(ctx.session_factory) as s:
        return await UserRepository(s, ctx).get_or_create_from_telegram(tg)


async def test_first_contact_creates_then_known_user_costs_one_trip_and_no_sql(
    ctx: DataContext, redis: Redis, sql_counter: Any
) -> None:
    user, created = await create(ctx, TgUser(101, "Ann"))
    assert created and user.id == 101 and user.first_name == "Ann" and user.zodiac_sign is None
    # the NOT_FOUND cached by the first lookup is gone after commit
    assert await redis.get(UserRepository(None, ctx).key(101)) is None  # type: ignore[arg-type]

    await create(ctx, TgUser(101, "Ann"))  # loads into Redis
    counter = RedisTraffic(redis)
    sql_counter.reset()
    before = time.time()
    async with ctx.session_factory() as s:
        again, created = await UserRepository(s, ctx).get_or_create_from_telegram(TgUser(101))
        await s.commit()
    after = time.time()
    assert not created and again == user
    assert sql_counter.count == 0, sql_counter.statements
    assert counter.count == 1, counter.trips
    assert [c[0] for c in counter.trips[0]] == ["GET", "HSET"]
    stamp = await redis.hget(UserRepository(s, ctx).last_seen_key, "101")
    assert stamp is not None and int(before) <= int(stamp) <= after  # stamped during the call


async def test_also_commands_ride_in_the_user_get_pipeline(
    ctx: DataContext, redis: Redis, sql_counter: Any, key_prefix: str
) -> None:
    """Extra side commands go in the same round trip as the GET, after the last-seen HSET,
    and each reply reaches its ``on_result``; on the cold path they are sent exactly once."""
    counter_key = f"{key_prefix}:also:counter"
    replies: list[Any] = []

    def also() -> tuple[SideCommand, ...]:
        return (
            SideCommand(("SET", counter_key, b"0", "NX", "PX", 60_000)),
            SideCommand(("INCR", counter_key), on_result=replies.append),
        )

    # new user: the commands ride in the (missing) GET's pipeline, the upsert adds no trip
    counter = RedisTraffic(redis)
    async with unit_of_work(ctx.session_factory) as s:
        user, created = await UserRepository(s, ctx).get_or_create_from_telegram(
            TgUser(102, "Bo"), also=also()
        )
    assert created and user.first_name == "Bo"
    assert [c[0] for c in counter.trips[0]] == ["GET", "HSET", "SET", "INCR"]
    assert replies == [1]
    assert int(await redis.get(counter_key) or 0) == 1  # sent once, not again for the upsert

    await create(ctx, TgUser(102, "Bo"))  # loads into Redis
    counter.reset()
    sql_counter.reset()
    async with ctx.session_factory() as s:
        again, created = await UserRepository(s, ctx).get_or_create_from_telegram(
            TgUser(102, "Bo"), also=also()
        )
        await s.commit()
    assert not created and again == user
    assert sql_counter.count == 0, sql_counter.statements
    assert counter.count == 1, counter.trips
    assert [c[0] for c in counter.trips[0]] == ["GET", "HSET", "SET", "INCR"]
    assert replies == [1, 2]
    assert int(await redis.get(counter_key) or 0) == 2


async def test_also_commands_fall_back_when_redis_is_down(down_ctx: DataContext) -> None:
    """Redis unavailable: the user comes from Postgres, ``on_result`` is not called and each
    command's fallback runs (fail open, as the throttle expects)."""
    fallbacks: list[str] = []
    replies: list[Any] = []

    async def fallback() -> None:
        fallbacks.append("incr")

    async with unit_of_work(down_ctx.session_factory) as s:
        user, created = await UserRepository(s, down_ctx).get_or_create_from_telegram(
            TgUser(103),
            also=(SideCommand(("INCR", "x"), fallback=fallback, on_result=replies.append),),
        )
    assert created and user.id == 103
    assert fallbacks == ["incr"] and replies == []


async def test_get_caches_user_and_negative(
    ctx: DataContext, redis: Redis, sql_counter: Any
) -> None:
    async with ctx.session_factory() as s:
        repo = UserRepository(s, ctx)
        assert await repo.get(555) is None
        sql_counter.reset()
        assert await repo.get(555) is None  # negative hit
        assert sql_counter.count == 0
        ttl = await redis.pttl(repo.key(555))
        assert 0 < ttl <= 66_000
    await create(ctx, TgUser(555))
    async with ctx.session_factory() as s:
        repo = UserRepository(s, ctx)
        assert (await repo.get(555)) is not None
        sql_counter.reset()
        got = await repo.get(555)
        assert got is not None and got.first_name == "Ann"
        assert sql_counter.count == 0
        assert 70_000_000 < await redis.pttl(repo.key(555)) <= 95_100_000


async def test_changed_profile_is_written_and_invalidated(ctx: DataContext) -> None:
    await create(ctx, TgUser(7, "Ann", username="ann"))
    async with ctx.session_factory() as s:
        await UserRepository(s, ctx).get(7)  # warm
    user, created = await create(ctx, TgUser(7, "Anna", username="anna", is_premium=True))
    assert not created and user.first_name == "Anna" and user.is_premium
    async with ctx.session_factory() as s:
        cached = await UserRepository(s, ctx).get(7)
    assert cached is not None and cached.username == "anna"


async def test_nul_bytes_and_overlong_profile_strings_are_cleaned(
    ctx: DataContext, redis: Redis, sql_counter: Any
) -> None:
    """U+0000 is removed and strings are capped to the columns before the compare and the
    write, so an odd profile is stored, and an unchanged odd profile costs no SQL later."""
    odd = TgUser(
        104,
        "A\x00nn" + "x" * 300,
        last_name="\x00" + "L" * 300,
        username="u\x00" + "n" * 100,
        language_code="en-\x00" + "q" * 30,
    )
    user, created = await create(ctx, odd)
    assert created
    assert user.first_name == ("Ann" + "x" * 300)[:256] and len(user.first_name) == 256
    assert user.last_name == "L" * 256
    assert user.username == ("u" + "n" * 100)[:64] and len(user.username) == 64
    assert user.language_code == ("en-" + "q" * 30)[:16]
    async with ctx.session_factory() as s:
        row = (await s.execute(select(User).where(User.id == 104))).scalar_one()
        assert (row.first_name, row.last_name, row.username, row.language_code) == (
            user.first_name,
            user.last_name,
            user.username,
            user.language_code,
        )
    await create(ctx, odd)  # loads into Redis
    sql_counter.reset()
    again, created = await create(ctx, odd)
    assert not created and again == user
    assert sql_counter.count == 0, sql_counter.statements
    # a first name made only of NULs is stored as "?" (the column is NOT NULL)
    nameless, _ = await create(ctx, TgUser(105, "\x00\x00", username=None))
    assert nameless.first_name == "?" and nameless.username is None


async def test_concurrent_first_updates_do_not_fail(ctx: DataContext) -> None:
    results = await asyncio.gather(*(create(ctx, TgUser(9, f"N{i}")) for i in range(8)))
    assert sum(created for _, created in results) == 1
    async with ctx.session_factory() as s:
        assert await s.scalar(select(User.id).where(User.id == 9)) == 9


async def test_setters_return_new_data_and_invalidate_after_commit(
    ctx: DataContext, redis: Redis
) -> None:
    await create(ctx, TgUser(11))
    async with ctx.session_factory() as s:
        repo = UserRepository(s, ctx)
        await repo.get(11)
        assert await redis.exists(repo.key(11))
    async with unit_of_work(ctx.session_factory) as s:
        repo = UserRepository(s, ctx)
        u = await repo.set_sign(11, Sign.LEO)
        assert u.zodiac_sign is Sign.LEO
        assert await redis.exists(repo.key(11))  # not before the commit
        u = await repo.set_lang(11, Lang.EN)
        u = await repo.set_timezone(11, "Asia/Tokyo")
        u = await repo.set_push(11, True, dt.time(8, 30, 15))
    assert (u.zodiac_sign, u.lang, u.timezone, u.push_enabled, u.push_time) == (
        Sign.LEO,
        Lang.EN,
        "Asia/Tokyo",
        True,
        dt.time(8, 30),
    )
    assert not await redis.exists(repo.key(11))
    async with ctx.session_factory() as s:
        assert await UserRepository(s, ctx).get(11) == u


async def test_rollback_keeps_cache_and_invalid_zone_raises(ctx: DataContext, redis: Redis) -> None:
    await create(ctx, TgUser(12))
    async with ctx.session_factory() as s:
        repo = UserRepository(s, ctx)
        await repo.get(12)
        for bad in ("Mars/Olympus", "", "../etc/passwd", "posix/Europe/Moscow"):
            with pytest.raises(ValueError):
                await repo.set_timezone(12, bad)
        await repo.set_sign(12, Sign.ARIES)
        await s.rollback()
        await ctx.cache.flush_invalidations(s)
    assert await redis.exists(repo.key(12))
    async with ctx.session_factory() as s:
        got = await UserRepository(s, ctx).get(12)
        assert got is not None and got.zodiac_sign is None
        with pytest.raises(UserNotFoundError):
            await UserRepository(s, ctx).set_sign(999, Sign.LEO)


async def test_reader_racing_a_settings_change_never_restores_the_old_sign(
    ctx: DataContext, redis: Redis, session_factory: Any
) -> None:
    """A load that read the old row before the commit cannot write it back afterwards."""
    await create(ctx, TgUser(13))
    async with unit_of_work(ctx.session_factory) as s:
        await UserRepository(s, ctx).set_sign(13, Sign.ARIES)
    key_repo = UserRepository(None, ctx)  # type: ignore[arg-type]
    await redis.delete(key_repo.key(13))

    read_old = asyncio.Event()
    release = asyncio.Event()
    slow_loader_ctx = DataContext(ctx.cache, ctx.keys, session_factory, ctx.tz)

    class SlowRepo(UserRepository):
        def _loader(self, user_id: int) -> Any:
            inner = super()._loader(user_id)

            async def load() -> Any:
                value = await inner()  # reads the OLD row (ARIES)
                read_old.set()
                await release.wait()  # ... and stalls until after the writer's commit
                return value

            return load

    reader = asyncio.create_task(SlowRepo(None, slow_loader_ctx).get(13))  # type: ignore[arg-type]
    await read_old.wait()
    async with unit_of_work(ctx.session_factory) as s:
        await UserRepository(s, ctx).set_sign(13, Sign.PISCES)
    release.set()
    stale = await reader
    assert stale is not None and stale.zodiac_sign is Sign.ARIES  # the racing caller's own view
    async with ctx.session_factory() as s:
        fresh = await UserRepository(s, ctx).get(13)
    assert fresh is not None and fresh.zodiac_sign is Sign.PISCES


async def test_last_seen_buffer_flush_and_stats(ctx: DataContext, redis: Redis) -> None:
    for uid in (21, 22, 23):
        await create(ctx, TgUser(uid))
    old = dt.datetime(2020, 1, 1, tzinfo=UTC)
    async with ctx.session_factory() as s, s.begin():
        await s.execute(text("UPDATE users SET last_seen_at = :t"), {"t": old})
    await redis.delete(UserRepository(None, ctx).last_seen_key)  # type: ignore[arg-type]
    since = dt.datetime.now(UTC) - dt.timedelta(minutes=5)
    now = time.time()
    async with ctx.session_factory() as s:
        repo = UserRepository(s, ctx)
        await repo.get_or_create_from_telegram(TgUser(21), seen_at=now)
        await repo.get_or_create_from_telegram(TgUser(22), seen_at=now - 3600)
        await s.commit()
        assert await repo.count_total() == 3
        assert await repo.count_seen_since(since) == 1  # still buffered
        result = await repo.flush_last_seen()
        assert (result.batches, result.stamps, result.rows) == (1, 2, 2)
        assert await repo.count_seen_since(since) == 1  # now flushed
        assert not await redis.exists(repo.last_seen_key)
        # an older stamp never moves last_seen_at back
        await repo.get_or_create_from_telegram(TgUser(21), seen_at=now - 7200)
        await repo.flush_last_seen()
        seen = await s.scalar(select(User.last_seen_at).where(User.id == 21))
        assert seen is not None and abs(seen.timestamp() - int(now)) < 1
        assert await repo.flush_last_seen() == type(result)()  # nothing left


class Crash(Exception):
    pass


async def test_last_seen_batch_committed_before_a_crash_is_only_acked(
    ctx: DataContext, redis: Redis
) -> None:
    """The flusher died between its commit and its ack: the next flush recognises the batch id
    and acks it without applying (or reporting) its stamps a second time."""
    await create(ctx, TgUser(31))
    async with ctx.session_factory() as s:
        repo = UserRepository(s, ctx)
        await ctx.cache.send(repo.last_seen_command(31, time.time()))

        async def crash_after_commit(step: str) -> None:
            if step == "committed":
                raise Crash(step)

        with pytest.raises(Crash):
            await repo.flush_last_seen(checkpoint=crash_after_commit)
        handoff = BufferHandoff(redis, repo.last_seen_key)
        assert len(await handoff.pending()) == 1  # applied, not acked
        result = await repo.flush_last_seen()
        assert (result.batches, result.stamps, result.rows) == (1, 0, 0)
        assert await handoff.pending() == []


async def test_push_claims_walk_zones_and_never_hand_out_a_user_twice(
    ctx: DataContext,
) -> None:
    # bot zone is Europe/Moscow (UTC+3); now = 2026-11-21 06:30 UTC
    now = dt.datetime(2026, 11, 21, 6, 30, tzinfo=UTC)
    until = now + dt.timedelta(minutes=1)
    specs = [
        (31, None, dt.time(9, 0), True),  # Moscow 09:30 >= 09:00: due
        (32, None, dt.time(10, 0), True),  # Moscow 09:30 < 10:00: not yet
        (33, "Asia/Tokyo", dt.time(15, 0), True),  # Tokyo 15:30: due
        (34, "America/New_York", dt.time(1, 0), True),  # NY 01:30: due
        (35, "America/New_York", dt.time(2, 0), True),  # NY 01:30 < 02:00
        (36, "Asia/Tokyo", dt.time(9, 0), False),  # push off
        (37, "Europe/London", dt.time(6, 0), True),  # London 06:30: due
    ]
    async with unit_of_work(ctx.session_factory) as s:
        repo = UserRepository(s, ctx)
        for uid, tz, at, on in specs:
            await repo.get_or_create_from_telegram(TgUser(uid))
            await repo.set_sign(uid, Sign.LEO)
            if tz:
                await repo.set_timezone(uid, tz)
            await repo.set_push(uid, on, at)
    async with unit_of_work(ctx.session_factory) as s:
        repo = UserRepository(s, ctx)
        first = await repo.claim_push_batch(now, owner="a", until=until, limit=2)
        rest = await repo.claim_push_batch(now, owner="b", until=until, limit=100)
    claimed = sorted((t.user.id, t.local_date) for t in first + rest)
    assert len(first) == 2
    assert claimed == [
        (31, dt.date(2026, 11, 21)),
        (33, dt.date(2026, 11, 21)),
        (34, dt.date(2026, 11, 21)),
        (37, dt.date(2026, 11, 21)),
    ]
    async with ctx.session_factory() as s:
        repo = UserRepository(s, ctx)
        # everyone due is claimed: nothing more to hand out until the claims expire
        assert await repo.claim_push_batch(now, owner="c", until=until, limit=100) == []
        # the push query uses the partial index, never a full scan
        await s.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(
            (
                await s.execute(
                    text(
                        "EXPLAIN SELECT id FROM users WHERE push_enabled"
                        " AND timezone = 'Asia/Tokyo'"
                        " AND push_time <= '15:30' AND (last_push_date IS NULL OR"
                        " last_push_date < '2026-11-21')"
                    )
                )
            ).scalars()
        )
        assert "ix_users_push_due" in plan
        await s.rollback()
    async with unit_of_work(ctx.session_factory) as s:
        repo = UserRepository(s, ctx)
        assert await repo.disable_push(34)
        assert await repo.count_push_subscribers() == 5
    async with ctx.session_factory() as s:
        got = await UserRepository(s, ctx).get(34)
        assert got is not None and not got.push_enabled


def test_cache_type(cache: CacheAside) -> None:
    assert cache.redis is not None


async def test_a_user_entry_of_the_wrong_type_is_repaired(
    ctx: DataContext, redis: Redis, sql_counter: Any, caplog: Any
) -> None:
    """Issue 12.4c: a hash under the user's key made every update read Postgres (the GET
    answers WRONGTYPE) and log a warning, forever. It is deleted and reloaded instead."""
    await create(ctx, TgUser(141, "Ann"))
    key = UserRepository(None, ctx).key(141)  # type: ignore[arg-type]
    await redis.delete(key)
    await redis.hset(key, "first_name", "Mallory")  # garbage written into Redis for real
    statements = []
    for _ in range(4):
        sql_counter.reset()
        async with ctx.session_factory() as s:
            user, _ = await UserRepository(s, ctx).get_or_create_from_telegram(TgUser(141, "Ann"))
            await s.commit()
        assert user.first_name == "Ann"
        statements.append(sql_counter.count)
    assert statements[-2:] == [0, 0], statements  # repaired: warm again, no SQL
    assert sum(statements) <= 2, statements  # one read that found the hash, one reload
    assert await redis.type(key) == b"string"
    assert sum("wrong type" in r.getMessage() for r in caplog.records) == 1
