"""HoroscopeViewRepository: buffered views, exactly-once flush under injected crashes."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from redis.asyncio import Redis
from sqlalchemy import func, select

from cache.buffers import BufferHandoff
from db.models import AppliedBatch
from db.repositories import DataContext, FlushResult, HoroscopeViewRepository
from db.types import Sign

DAY = dt.date(2026, 11, 21)


class Crash(Exception):
    pass


async def test_record_view_buffers_and_flush_moves_to_postgres(
    ctx: DataContext, redis: Redis
) -> None:
    views = HoroscopeViewRepository(ctx)
    assert views.buffer_key == f"{ctx.keys.prefix}:v1:buf:views"
    for _ in range(3):
        await views.record_view(Sign.LEO, DAY)
    await views.record_view(Sign.ARIES, DAY)
    await views.record_view(Sign.ARIES, DAY + dt.timedelta(days=1))
    assert await redis.ttl(views.buffer_key) == -1  # a buffer never expires
    assert await views.buffered(DAY) == {Sign.LEO: 3, Sign.ARIES: 1}
    assert await views.totals(DAY) == {}
    assert await views.flush() == FlushResult(batches=1, rows=3, views=5)
    assert await views.totals(DAY) == {Sign.LEO: 3, Sign.ARIES: 1}
    assert await views.buffered(DAY) == {}
    assert await views.flush() == FlushResult()
    await views.record_view(Sign.LEO, DAY)
    await views.flush()
    assert await views.totals(DAY) == {Sign.LEO: 4, Sign.ARIES: 1}
    assert await views.total_views(DAY) == 6
    assert not [k async for k in redis.scan_iter(match=f"{ctx.keys.prefix}:*")]


STEPS = ["handed_over", "read", "before_commit", "committed", "deleted_not_removed", "acked"]


async def test_exactly_once_under_a_crash_at_every_step(ctx: DataContext, redis: Redis) -> None:
    """Crash at each step in turn (several batches pending at once), keep recording views in
    between, and check Postgres + buffer always account for every view exactly once."""
    views = HoroscopeViewRepository(ctx)
    handoff = BufferHandoff(redis, views.buffer_key)
    recorded = 0
    signs = itertools.cycle(list(Sign))

    async def record(n: int) -> None:
        nonlocal recorded
        for _ in range(n):
            await views.record_view(next(signs), DAY)
            recorded += 1

    async def accounted() -> int:
        return sum((await views.totals(DAY)).values()) + sum((await views.buffered(DAY)).values())

    for step in STEPS * 2:
        await record(7)
        hits = 0

        async def checkpoint(name: str, step: str = step) -> None:
            nonlocal hits
            if step == "deleted_not_removed" and name == "committed":
                # the DEL reached Redis, then the process died before the SREM
                pending = await handoff.pending()
                await redis.delete(handoff.batch_key(pending[0]))
                raise Crash(step)
            if name == step:
                hits += 1
                await record(2)  # writers keep going while the flusher is mid-way
                raise Crash(step)

        with pytest.raises(Crash):
            await views.flush(checkpoint=checkpoint)
        assert await accounted() == recorded, step
        await record(3)

    assert len(await handoff.pending()) >= 1  # crashes left batches behind
    result = await views.flush()
    assert result.batches >= 1
    assert await handoff.pending() == []
    assert await views.buffered(DAY) == {}
    assert sum((await views.totals(DAY)).values()) == recorded
    async with ctx.session_factory() as s:
        assert (await s.scalar(select(func.count()).select_from(AppliedBatch))) >= 1


async def test_two_flushers_at_once_apply_once(ctx: DataContext) -> None:
    import asyncio

    views = HoroscopeViewRepository(ctx)
    for _ in range(50):
        await views.record_view(Sign.VIRGO, DAY)
    results = await asyncio.gather(*(views.flush() for _ in range(4)))
    assert sum(r.views for r in results) == 50
    assert await views.totals(DAY) == {Sign.VIRGO: 50}


async def test_fallback_writes_views_to_postgres_when_redis_is_down(down_ctx: DataContext) -> None:
    views = HoroscopeViewRepository(down_ctx)
    for _ in range(5):
        await views.record_view(Sign.LEO, DAY)
    assert await views.totals(DAY) == {Sign.LEO: 5}
    assert await views.buffered(DAY) == {}


async def test_flush_prunes_old_applied_batch_ids(ctx: DataContext) -> None:
    from sqlalchemy import text

    async with ctx.session_factory() as s, s.begin():
        await s.execute(
            text(
                "INSERT INTO applied_batches (batch_id, kind, applied_at) VALUES"
                " ('old', 'views', now() - interval '30 days'),"
                " ('old-seen', 'last_seen', now() - interval '30 days')"
            )
        )
    views = HoroscopeViewRepository(ctx)
    await views.record_view(Sign.LEO, DAY)
    await views.flush()
    async with ctx.session_factory() as s:
        kept = set(await s.scalars(select(AppliedBatch.batch_id)))
    assert "old" not in kept and "old-seen" in kept and len(kept) == 2
