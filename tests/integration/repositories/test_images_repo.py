"""ImageAssetRepository against real Redis and Postgres."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from db.repositories import DataContext, FileRef, ImageAssetRepository, SessionRequiredError
from devtools.traffic import RedisTraffic
from tests.helpers import unit_of_work

BOT = 123456
SHA_A = "a" * 64
SHA_B = "b" * 64


async def save(ctx: DataContext, key: str, file_id: str, sha: str, bot: int = BOT) -> FileRef:
    async with unit_of_work(ctx.session_factory) as s:
        repo = ImageAssetRepository(s, ctx)
        ref = await repo.save(bot, key, file_id, f"u-{file_id}", sha)
    await repo.cache_saved(bot, key, ref)
    return ref


async def test_key_name(ctx: DataContext) -> None:
    repo = ImageAssetRepository(None, ctx)
    assert (
        repo.key(BOT, "cosmic/cosmic-03.jpg")
        == f"{ctx.keys.prefix}:v1:fileid:{BOT}:cosmic/cosmic-03.jpg"
    )


async def test_miss_then_save_then_warm_read_without_sql(
    ctx: DataContext, redis: Redis, sql_counter: Any
) -> None:
    async with ctx.session_factory() as s:
        repo = ImageAssetRepository(s, ctx)
        assert await repo.get_file_id(BOT, "signs/leo.jpg", SHA_A) is None  # NOT_FOUND cached
        assert 0 < await redis.pttl(repo.key(BOT, "signs/leo.jpg")) <= 66_000
    ref = await save(ctx, "signs/leo.jpg", "F1", SHA_A)
    counter = RedisTraffic(redis)
    sql_counter.reset()
    async with ctx.session_factory() as s:
        got = await ImageAssetRepository(s, ctx).get_file_id(BOT, "signs/leo.jpg", SHA_A)
    assert got == ref and got.file_unique_id == "u-F1"
    assert sql_counter.count == 0 and counter.count == 1
    # another bot never sees this bot's file_id
    async with ctx.session_factory() as s:
        assert (
            await ImageAssetRepository(s, ctx).get_file_id(BOT + 1, "signs/leo.jpg", SHA_A) is None
        )


async def test_changed_file_counts_as_absent_until_reuploaded(ctx: DataContext) -> None:
    await save(ctx, "signs/leo.jpg", "F1", SHA_A)
    async with ctx.session_factory() as s:
        repo = ImageAssetRepository(s, ctx)
        assert await repo.get_file_id(BOT, "signs/leo.jpg", SHA_B) is None
        await ctx.cache.invalidate(repo.key(BOT, "signs/leo.jpg"))
        assert await repo.get_file_id(BOT, "signs/leo.jpg", SHA_B) is None  # from Postgres too
    await save(ctx, "signs/leo.jpg", "F2", SHA_B)
    async with ctx.session_factory() as s:
        got = await ImageAssetRepository(s, ctx).get_file_id(BOT, "signs/leo.jpg", SHA_B)
    assert got is not None and got.file_id == "F2"


async def test_save_invalidates_after_commit_even_without_cache_saved(
    ctx: DataContext, redis: Redis
) -> None:
    await save(ctx, "a.jpg", "F1", SHA_A)
    async with unit_of_work(ctx.session_factory) as s:
        repo = ImageAssetRepository(s, ctx)
        await repo.save(BOT, "a.jpg", "F2", None, SHA_A)
        assert await redis.exists(repo.key(BOT, "a.jpg"))
    assert not await redis.exists(repo.key(BOT, "a.jpg"))
    async with ctx.session_factory() as s:
        got = await ImageAssetRepository(s, ctx).get_file_id(BOT, "a.jpg", SHA_A)
    assert got is not None and got.file_id == "F2"


async def test_forget(ctx: DataContext, redis: Redis) -> None:
    await save(ctx, "a.jpg", "F1", SHA_A)
    async with unit_of_work(ctx.session_factory) as s:
        await ImageAssetRepository(s, ctx).forget(BOT, "a.jpg")
    async with ctx.session_factory() as s:
        assert await ImageAssetRepository(s, ctx).get_file_id(BOT, "a.jpg", SHA_A) is None


async def test_warm_one_query_one_pipeline_then_mget(
    ctx: DataContext, redis: Redis, sql_counter: Any
) -> None:
    keys = [f"cosmic/cosmic-{i:02d}.jpg" for i in range(12)]
    async with unit_of_work(ctx.session_factory) as s:
        repo = ImageAssetRepository(s, ctx)
        for i, k in enumerate(keys):
            await repo.save(BOT, k, f"F{i}", None, SHA_A)
        await repo.save(BOT + 1, keys[0], "OTHER", None, SHA_A)
    counter = RedisTraffic(redis)
    sql_counter.reset()
    async with ctx.session_factory() as s:
        repo = ImageAssetRepository(s, ctx)
        assert await repo.warm(BOT) == 12
        assert sql_counter.count == 1 and counter.count == 1
        ttl = await redis.pttl(repo.key(BOT, keys[0]))
        assert 6 * 86_400_000 < ttl <= 7.8 * 86_400_000
        counter.reset()
        found = await repo.file_ids(BOT, [*keys, "missing.jpg"])
        assert counter.count == 1
        assert set(found) == set(keys) and found[keys[3]].file_id == "F3"
        found = await repo.file_ids(BOT, keys[:2], content_sha256={keys[0]: SHA_B})
        assert list(found) == [keys[1]]
        assert sql_counter.count == 1


async def test_load_spec_batches_like_get_file_id(
    ctx: DataContext, redis: Redis, sql_counter: Any
) -> None:
    """load_spec: the same key, loader and TTLs as get_file_id (NOT_FOUND for a minute, a
    stored file_id for a week), usable in one load_many round trip."""
    repo = ImageAssetRepository(None, ctx)
    spec = repo.load_spec(BOT, "signs/leo.jpg")
    assert spec.key == repo.key(BOT, "signs/leo.jpg")
    assert await ctx.cache.load_many([spec]) == [None]
    assert 0 < await redis.pttl(spec.key) <= 66_000
    await save(ctx, "signs/leo.jpg", "F1", SHA_A)
    await ctx.cache.invalidate(spec.key)
    (ref,) = await ctx.cache.load_many([repo.load_spec(BOT, "signs/leo.jpg")])
    assert isinstance(ref, FileRef) and ref.file_id == "F1" and ref.content_sha256 == SHA_A
    assert 6 * 86_400_000 < await redis.pttl(spec.key) <= 7.8 * 86_400_000
    sql_counter.reset()
    counter = RedisTraffic(redis)
    assert await ctx.cache.load_many([repo.load_spec(BOT, "signs/leo.jpg")]) == [ref]
    assert sql_counter.count == 0 and counter.count == 1


async def test_reads_need_no_session_and_writes_refuse_without_one(
    ctx: DataContext, redis: Redis, sql_counter: Any
) -> None:
    """A read-only repository (session=None): every read works, every write raises."""
    await save(ctx, "signs/leo.jpg", "F1", SHA_A)
    await save(ctx, "signs/aries.jpg", "F2", SHA_A)
    await redis.delete(ImageAssetRepository(None, ctx).key(BOT, "signs/leo.jpg"))
    repo = ImageAssetRepository(None, ctx)
    got = await repo.get_file_id(BOT, "signs/leo.jpg", SHA_A)  # from Postgres, own session
    assert got is not None and got.file_id == "F1"
    assert await repo.get_file_id(BOT, "signs/none.jpg", SHA_A) is None
    assert await repo.warm(BOT) == 2
    found = await repo.file_ids(BOT, ["signs/leo.jpg", "signs/aries.jpg"])
    assert {k: r.file_id for k, r in found.items()} == {
        "signs/leo.jpg": "F1",
        "signs/aries.jpg": "F2",
    }
    assert await ctx.cache.load_many([repo.load_spec(BOT, "signs/aries.jpg")]) == [
        found["signs/aries.jpg"]
    ]
    ref = FileRef(file_id="F3", content_sha256=SHA_B)
    with pytest.raises(SessionRequiredError, match="save"):
        await repo.save(BOT, "signs/leo.jpg", "F3", None, SHA_B)
    with pytest.raises(SessionRequiredError, match="cache_saved"):
        await repo.cache_saved(BOT, "signs/leo.jpg", ref)
    with pytest.raises(SessionRequiredError, match="forget"):
        await repo.forget(BOT, "signs/leo.jpg")
    # nothing was written by the refused calls
    got = await repo.get_file_id(BOT, "signs/leo.jpg", SHA_A)
    assert got is not None and got.file_id == "F1"
