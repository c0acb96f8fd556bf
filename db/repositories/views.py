"""Horoscope view counters: HINCRBY in Redis on the read's round trip, flushed exactly once.

Why a buffer: a view is a write on the hottest path of the bot. Counting it in Redis costs
nothing extra (it rides in the pipeline of the horoscope GET); Postgres sees one batched
upsert per flush instead of one UPDATE per view. When Redis is unavailable the same +1 goes
straight to Postgres (the side command's fallback), so no view is lost either way.
"""

from __future__ import annotations

import datetime as dt
import operator
import re
from collections.abc import Awaitable, Callable
from typing import Final

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cache import SideCommand
from db.models import HoroscopeView
from db.repositories.batches import BufferKind, flush_buffer, unflushed
from db.repositories.coalesce import writer_for
from db.repositories.context import DataContext
from db.repositories.values import FlushResult
from db.types import Sign

__all__ = ["VIEWS", "HoroscopeViewRepository", "ViewTicket"]

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

#: A buffered count as HINCRBY writes it. Negative: a view taken back (a send that failed);
#: bounded far below bigint, so no field can make the batch's upsert overflow.
_COUNT: Final = re.compile(rb"-?[0-9]{1,12}")

ViewKey = tuple[Sign, dt.date]


def _field(sign: Sign, date: dt.date) -> str:
    return f"{date.isoformat()}:{sign.value}"


def _parse(field: bytes, value: bytes) -> tuple[ViewKey, int] | None:
    """``{date}:{sign}`` -> count, or None for anything a flush could not apply."""
    if _COUNT.fullmatch(value) is None:
        return None
    try:
        day, _, sign = field.decode().partition(":")
        return (Sign(sign), dt.date.fromisoformat(day)), int(value)
    except (UnicodeDecodeError, ValueError):
        return None


async def _apply(session: AsyncSession, counts: dict[ViewKey, int]) -> int:
    counts = {key: n for key, n in counts.items() if n}  # a view and its take-back: nothing
    if not counts:
        return 0
    params = {
        "signs": [sign.value for sign, _ in counts],
        "dates": [day for _, day in counts],
        "counts": list(counts.values()),
    }
    await session.execute(_UPSERT, params)
    return len(counts)


#: The view buffer: ``{date}:{sign}`` -> count, applied by one upsert per batch.
VIEWS: Final[BufferKind[ViewKey, int]] = BufferKind(
    name="views", parse=_parse, merge=operator.add, apply=_apply, weight=int
)


async def _upsert_views(
    factory: async_sessionmaker[AsyncSession], batch: dict[ViewKey, int]
) -> None:
    """Views that could not reach Redis, straight into Postgres in one statement.

    Its own short transaction: the fallback runs inside a cache read, which must not depend on
    (or commit) the caller's unit of work.
    """
    async with factory() as s, s.begin():
        await _apply(s, batch)


class ViewTicket:
    """One counted view, so that it can be taken back if the horoscope never reached the
    person (the send failed: blocked bot, network): ``counted`` is set when the +1 surely
    landed (its HINCRBY replied, or its Postgres fallback committed). A +1 whose fate is
    unknown (a pipeline cut off after it was sent) is left alone: taking back a view that
    was never counted would be worse than keeping one that was."""

    __slots__ = ("command", "counted", "date", "sign")

    def __init__(self, sign: Sign, date: dt.date) -> None:
        self.sign = sign
        self.date = date
        self.counted = False
        self.command: SideCommand


class HoroscopeViewRepository:
    """Record views (buffered), flush them exactly once, and report totals for /stats."""

    __slots__ = ("_ctx", "buffer_key")

    def __init__(self, ctx: DataContext) -> None:
        self._ctx = ctx
        self.buffer_key = ctx.keys.key("buf", "views")

    # ------------------------------------------------------------------ recording

    def view_command(self, sign: Sign, date: dt.date) -> SideCommand:
        """HINCRBY for one view, to ride along a read; falls back to a direct +1 in Postgres."""
        return self._command(sign, date, 1)

    def _command(
        self, sign: Sign, date: dt.date, amount: int, ticket: ViewTicket | None = None
    ) -> SideCommand:
        factory = self._ctx.session_factory

        async def fallback() -> None:
            await writer_for(factory, "views", _upsert_views, operator.add).add(
                (sign, date), amount
            )
            if ticket is not None:
                ticket.counted = True

        def on_result(_reply: object) -> None:
            if ticket is not None:
                ticket.counted = True

        return SideCommand(
            ("HINCRBY", self.buffer_key, _field(sign, date), amount),
            fallback=fallback,
            on_result=on_result if ticket is not None else None,
        )

    def ticket(self, sign: Sign, date: dt.date) -> ViewTicket:
        """A view to count along a read (``ticket.command``) that can be taken back later."""
        ticket = ViewTicket(sign, date)
        ticket.command = self._command(sign, date, 1, ticket)
        return ticket

    async def take_back(self, ticket: ViewTicket) -> None:
        """Undo a counted view (-1 into the same buffer, or into Postgres when Redis is down).

        Exactly-once holds because the -1 travels the same way as the +1: both are buffered
        field increments that the flush applies once each, in whichever batches they land.
        """
        if not ticket.counted:
            return
        ticket.counted = False
        await self._ctx.cache.send(self._command(ticket.sign, ticket.date, -1))

    async def record_view(self, sign: Sign, date: dt.date) -> None:
        """Count one view on its own (one round trip; Postgres directly if Redis is down)."""
        await self._ctx.cache.send(self.view_command(sign, date))

    # ------------------------------------------------------------------ flushing

    async def flush(
        self, *, checkpoint: Callable[[str], Awaitable[None]] | None = None
    ) -> FlushResult:
        """Move the buffer to ``horoscope_views`` exactly once (db/repositories/batches.py).

        ``checkpoint`` is a test hook awaited between steps (``handed_over``, ``read``,
        ``before_commit``, ``committed``, ``acked``); raising there simulates a crash.
        """
        done = await flush_buffer(self._ctx, self.buffer_key, VIEWS, checkpoint=checkpoint)
        return FlushResult(batches=done.batches, rows=done.rows, views=done.total, dead=done.dead)

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
        items = await unflushed(self._ctx, self.buffer_key, VIEWS)
        return {sign: n for (sign, day), n in items.items() if day == date and n}

    async def total_views(self, since: dt.date) -> int:
        """All views from ``since`` on in Postgres (for a one-line /stats summary)."""
        async with self._ctx.session_factory() as s:
            value = await s.scalar(
                select(func.coalesce(func.sum(HoroscopeView.view_count), 0)).where(
                    HoroscopeView.view_date >= since
                )
            )
            return int(value or 0)
