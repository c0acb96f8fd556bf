"""Horoscope view counters: HINCRBY in Redis on the read's round trip, flushed exactly once.

Why a buffer: a view is a write on the hottest path of the bot. Counting it in Redis costs
nothing extra (it rides in the pipeline of the horoscope GET); Postgres sees one batched
upsert per flush instead of one UPDATE per view. When Redis is unavailable the same +1 goes
straight to Postgres (the side command's fallback), so no view is lost either way.
"""

from __future__ import annotations

import datetime as dt
import logging
import operator
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cache import SideCommand
from cache.buffers import BufferHandoff
from db.models import AppliedBatch, HoroscopeView
from db.repositories.batches import claim_batch, prune_applied
from db.repositories.coalesce import writer_for
from db.repositories.context import DataContext
from db.repositories.values import FlushResult
from db.types import Sign

__all__ = ["HoroscopeViewRepository"]

log = logging.getLogger(__name__)

KIND = "views"

_UPSERT = text(
    """
    INSERT INTO horoscope_views (zodiac_sign, view_date, view_count)
    SELECT s, d, c
    FROM unnest(CAST(:signs AS varchar[]), CAST(:dates AS date[]), CAST(:counts AS bigint[]))
         AS v(s, d, c)
    ON CONFLICT (zodiac_sign, view_date) DO UPDATE
    SET view_count = horoscope_views.view_count + excluded.view_count, updated_at = now()
    """
)


def _field(sign: Sign, date: dt.date) -> str:
    return f"{date.isoformat()}:{sign.value}"


def _parse_field(field: bytes) -> tuple[Sign, dt.date] | None:
    try:
        day, _, sign = field.decode().partition(":")
        return Sign(sign), dt.date.fromisoformat(day)
    except (UnicodeDecodeError, ValueError):
        return None


async def _upsert_views(
    factory: async_sessionmaker[AsyncSession], batch: dict[tuple[Sign, dt.date], int]
) -> None:
    """Views that could not reach Redis, straight into Postgres in one statement.

    Its own short transaction: the fallback runs inside a cache read, which must not depend on
    (or commit) the caller's unit of work.
    """
    params = {
        "signs": [s.value for s, _ in batch],
        "dates": [d for _, d in batch],
        "counts": list(batch.values()),
    }
    async with factory() as s, s.begin():
        await s.execute(_UPSERT, params)


class HoroscopeViewRepository:
    """Record views (buffered), flush them exactly once, and report totals for /stats."""

    __slots__ = ("_ctx", "buffer_key")

    def __init__(self, ctx: DataContext) -> None:
        self._ctx = ctx
        self.buffer_key = ctx.keys.key("buf", "views")

    def _handoff(self) -> BufferHandoff | None:
        redis = self._ctx.cache.redis
        return BufferHandoff(redis, self.buffer_key) if redis is not None else None

    # ------------------------------------------------------------------ recording

    def view_command(self, sign: Sign, date: dt.date) -> SideCommand:
        """HINCRBY for one view, to ride along a read; falls back to a direct +1 in Postgres."""
        return SideCommand(
            ("HINCRBY", self.buffer_key, _field(sign, date), 1),
            fallback=self._direct_increment(sign, date),
        )

    def _direct_increment(self, sign: Sign, date: dt.date) -> Callable[[], Awaitable[None]]:
        factory = self._ctx.session_factory

        async def fallback() -> None:
            await writer_for(factory, "views", _upsert_views, operator.add).add((sign, date), 1)

        return fallback

    async def record_view(self, sign: Sign, date: dt.date) -> None:
        """Count one view on its own (one round trip; Postgres directly if Redis is down)."""
        await self._ctx.cache.send(self.view_command(sign, date))

    # ------------------------------------------------------------------ flushing

    async def flush(
        self, *, checkpoint: Callable[[str], Awaitable[None]] | None = None
    ) -> FlushResult:
        """Move the buffer to ``horoscope_views`` exactly once (see cache/buffers.py).

        ``checkpoint`` is a test hook awaited between steps (``handed_over``, ``read``,
        ``before_commit``, ``committed``, ``acked``); raising there simulates a crash.
        """
        handoff = self._handoff()
        if handoff is None:
            return FlushResult()
        rows = views = 0

        async def apply(batch_id: str, data: dict[bytes, bytes]) -> bool:
            nonlocal rows, views
            counts: dict[tuple[Sign, dt.date], int] = {}
            for raw, value in data.items():
                parsed = _parse_field(raw)
                if parsed is None:
                    log.warning("dropping malformed view field %r", raw)
                    continue
                counts[parsed] = counts.get(parsed, 0) + int(value)
            async with self._ctx.session_factory() as s, s.begin():
                claimed = await claim_batch(s, batch_id, KIND, len(counts))
                if not claimed:
                    log.info("view batch %s was already applied; acking it", batch_id)
                    return False
                if counts:
                    await s.execute(
                        _UPSERT,
                        {
                            "signs": [sign.value for sign, _ in counts],
                            "dates": [day for _, day in counts],
                            "counts": list(counts.values()),
                        },
                    )
                if checkpoint is not None:
                    await checkpoint("before_commit")
            rows += len(counts)
            views += sum(counts.values())
            return True

        result = await handoff.drain(apply, checkpoint=checkpoint)
        if result.applied:
            await prune_applied(self._ctx.session_factory, KIND)
        return FlushResult(batches=result.batches, rows=rows, views=views)

    # ------------------------------------------------------------------ statistics

    async def totals(self, date: dt.date) -> dict[Sign, int]:
        """Views of ``date`` already in Postgres, per sign (signs without views are absent)."""
        async with self._ctx.session_factory() as s:
            result = await s.execute(
                select(HoroscopeView.zodiac_sign, HoroscopeView.view_count).where(
                    HoroscopeView.view_date == date
                )
            )
            return {Sign(sign): int(count) for sign, count in result.all()}

    async def buffered(self, date: dt.date) -> dict[Sign, int]:
        """Views of ``date`` still on their way (live buffer + pending batches), per sign.

        A pending batch already recorded in ``applied_batches`` (a flush died between its
        commit and its ack) is in ``totals`` already and is not counted twice.
        """
        handoff = self._handoff()
        if handoff is None:
            return {}
        try:
            live, batches = await handoff.snapshot()
        except (RedisError, OSError) as exc:  # /stats must answer while Redis is down
            log.warning("view buffer unavailable for stats: %r", exc)
            return {}
        if batches:
            async with self._ctx.session_factory() as s:
                done = set(
                    await s.scalars(
                        select(AppliedBatch.batch_id).where(
                            AppliedBatch.batch_id.in_(list(batches))
                        )
                    )
                )
            for batch_id in done:
                del batches[batch_id]
        out: dict[Sign, int] = {}
        for data in (live, *batches.values()):
            for raw, value in data.items():
                parsed = _parse_field(raw)
                if parsed is not None and parsed[1] == date:
                    out[parsed[0]] = out.get(parsed[0], 0) + int(value)
        return out

    async def total_views(self, since: dt.date) -> int:
        """All views from ``since`` on in Postgres (for a one-line /stats summary)."""
        async with self._ctx.session_factory() as s:
            value = await s.scalar(
                select(func.coalesce(func.sum(HoroscopeView.view_count), 0)).where(
                    HoroscopeView.view_date >= since
                )
            )
            return int(value or 0)
