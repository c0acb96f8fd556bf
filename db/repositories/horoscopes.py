"""Horoscopes: Redis, then Postgres, then the generator, and one text per (sign, date, lang).

Generation is the expensive step (an LLM call costs money and seconds), so it must happen once
per key however many updates and processes ask at the same moment:

* in one process, the engine's single-flight makes concurrent askers share one load;
* across processes, the engine's Redis lock makes one process load while the others wait;
* when Redis is down (or a waiter gives up after ``lock_wait``), the loader itself serialises
  on a Postgres advisory lock of the key and re-reads before generating, so the second loader
  finds the first one's row instead of generating again;
* and the row is written with ``INSERT ... ON CONFLICT DO NOTHING`` then re-read, so even two
  generations that slipped through agree on the single stored text.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any, Final, Literal

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from cache import Codec, Load, SideCommand
from db.models import Horoscope
from db.repositories.context import DataContext
from db.repositories.values import HoroscopeData
from db.repositories.views import HoroscopeViewRepository
from db.types import HoroscopeGenerator, Lang, Sign

__all__ = ["FALLBACK_TTL", "MIN_TTL", "HoroscopeRepository"]

log = logging.getLogger(__name__)

#: A fallback text (the model failed) is served for ten minutes, then the model is asked again.
FALLBACK_TTL: Final = 600.0
#: Floor for dates already over (someone reads yesterday's): cached an hour, not forever.
MIN_TTL: Final = 3600.0

_CODEC: Final[Codec[HoroscopeData]] = Codec(HoroscopeData)

_COLUMNS: Final = (
    Horoscope.zodiac_sign,
    Horoscope.horoscope_date,
    Horoscope.lang,
    Horoscope.content,
    Horoscope.generator,
    Horoscope.model,
)

_ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:name, 0))")

PrecomputeResult = Literal["generated", "present", "failed"]


def _to_data(row: Any) -> HoroscopeData:
    return HoroscopeData(
        sign=Sign(row.zodiac_sign),
        date=row.horoscope_date,
        lang=Lang(row.lang),
        text=row.content,
        generator=row.generator,
        model=row.model,
    )


class HoroscopeRepository:
    """One horoscope per (sign, date, lang), generated once and read from Redis afterwards.

    Holds no unit-of-work session: every load runs in its own short session (and commits its
    own INSERT), because a single-flight load is shared by many updates.
    """

    __slots__ = ("_ctx", "_generator", "views")

    def __init__(self, ctx: DataContext, generator: HoroscopeGenerator) -> None:
        self._ctx = ctx
        self._generator = generator
        self.views = HoroscopeViewRepository(ctx)

    def key(self, sign: Sign, date: dt.date, lang: Lang) -> str:
        return self._ctx.keys.key("horoscope", date, sign, lang)

    def ttl(self, value: HoroscopeData) -> float:
        """Until the date has ended in the bot's zone, plus a day (late readers, other zones).

        A fallback text gets FALLBACK_TTL; a date long over gets MIN_TTL.
        """
        if value.is_fallback:
            return FALLBACK_TTL
        end = dt.datetime.combine(value.date + dt.timedelta(days=2), dt.time(), self._ctx.tz)
        remaining = (end - dt.datetime.now(dt.UTC)).total_seconds()
        return max(remaining, MIN_TTL)

    # ------------------------------------------------------------------ loading

    async def _select(self, s: AsyncSession, sign: Sign, date: dt.date, lang: Lang) -> Any | None:
        stmt = select(*_COLUMNS).where(
            Horoscope.zodiac_sign == sign,
            Horoscope.horoscope_date == date,
            Horoscope.lang == lang,
        )
        return (await s.execute(stmt)).first()

    async def _load_or_generate(
        self, sign: Sign, date: dt.date, lang: Lang
    ) -> tuple[HoroscopeData, PrecomputeResult]:
        """Postgres, else generate and store; returns the value and what happened."""
        async with self._ctx.session_factory() as s:
            row = await self._select(s, sign, date, lang)
            if row is not None:
                return _to_data(row), "present"
            # Serialise generation of this key across every loader that reaches Postgres,
            # then look again: whoever held the lock before us has committed its row.
            await s.execute(_ADVISORY_LOCK, {"name": f"horoscope:{date}:{sign}:{lang}"})
            row = await self._select(s, sign, date, lang)
            if row is not None:
                await s.commit()
                return _to_data(row), "present"
            generated = await self._generator.generate(sign, date, lang)
            if generated.is_fallback:
                await s.commit()  # releases the advisory lock; the fallback is not stored
                return (
                    HoroscopeData(
                        sign=sign,
                        date=date,
                        lang=lang,
                        text=generated.text,
                        generator=generated.generator,
                        model=generated.model,
                        is_fallback=True,
                    ),
                    "failed",
                )
            stmt = (
                insert(Horoscope)
                .values(
                    zodiac_sign=sign,
                    horoscope_date=date,
                    lang=lang,
                    content=generated.text,
                    generator=generated.generator[:32],
                    model=generated.model,
                    prompt_tokens=generated.prompt_tokens,
                    completion_tokens=generated.completion_tokens,
                    cost_usd=None
                    if generated.cost_usd is None
                    else Decimal(str(generated.cost_usd)),
                )
                .on_conflict_do_nothing(
                    index_elements=[Horoscope.zodiac_sign, Horoscope.horoscope_date, Horoscope.lang]
                )
                .returning(*_COLUMNS)
            )
            row = (await s.execute(stmt)).first()
            inserted = row is not None
            if row is None:  # somebody else's text won: use the stored one
                row = await self._select(s, sign, date, lang)
            await s.commit()
        assert row is not None
        return _to_data(row), "generated" if inserted else "present"

    def _loader(
        self, sign: Sign, date: dt.date, lang: Lang
    ) -> Callable[[], Awaitable[HoroscopeData | None]]:
        async def load() -> HoroscopeData | None:
            value, _ = await self._load_or_generate(sign, date, lang)
            return value

        return load

    def load_spec(self, sign: Sign, date: dt.date, lang: Lang) -> Load[HoroscopeData]:
        """The cache-aside Load of one text, to batch with other reads in ONE ``load_many``
        round trip (e.g. the text, its picture's file_id and the view HINCRBY together)."""
        return Load(self.key(sign, date, lang), self._loader(sign, date, lang), _CODEC, self.ttl)

    # ------------------------------------------------------------------ reads

    async def get_or_generate(
        self, sign: Sign, date: dt.date, lang: Lang, *, count_view: bool = False
    ) -> HoroscopeData:
        """The text for (sign, date, lang): one Redis round trip when warm.

        ``count_view=True`` (a person asked) adds the view HINCRBY to that same round trip.
        """
        also: Sequence[SideCommand] = (self.views.view_command(sign, date),) if count_view else ()
        value: HoroscopeData | None = await self._ctx.cache.get_or_load(
            self.key(sign, date, lang),
            self._loader(sign, date, lang),
            ttl=self.ttl,
            codec=_CODEC,
            also=also,
        )
        if value is None:  # the loader never returns None; only a foreign NOT_FOUND could
            raise LookupError(f"no horoscope for {sign} {date} {lang}")
        return value

    async def get_many(
        self, items: Sequence[tuple[Sign, dt.date, Lang]]
    ) -> list[HoroscopeData | None]:
        """Cached texts only, one MGET (inline mode answers from what is warm)."""
        return await self._ctx.cache.get_many([self.key(*item) for item in items], _CODEC)

    async def load_many(self, items: Sequence[tuple[Sign, dt.date, Lang]]) -> list[HoroscopeData]:
        """Like ``get_many`` in one MGET, but misses are loaded/generated (concurrently)."""
        values = await self._ctx.cache.load_many([self.load_spec(*item) for item in items])
        out: list[HoroscopeData] = []
        for item, value in zip(items, values, strict=True):
            if not isinstance(value, HoroscopeData):
                raise LookupError(f"no horoscope for {item}")
            out.append(value)
        return out

    async def precompute(self, sign: Sign, date: dt.date, lang: Lang) -> PrecomputeResult:
        """Make sure the text exists in Postgres and Redis, without counting a view.

        Postgres is asked first (not Redis): a cached fallback text must not stop the job
        from trying the generator again. A failed generation (exception or fallback) is
        logged and reported as ``"failed"``; the job carries on with the next key.
        """
        try:
            value, outcome = await self._load_or_generate(sign, date, lang)
        except Exception:
            log.exception("precompute of %s %s %s failed", sign, date, lang)
            return "failed"
        if outcome != "failed":
            key = self.key(sign, date, lang)
            # invalidate first: drops a cached fallback and any load lock, so an in-flight
            # load cannot overwrite the stored text with an older answer
            await self._ctx.cache.invalidate(key)
            await self._ctx.cache.set(key, value, ttl=self.ttl, codec=_CODEC)
        return outcome

    async def count_generated_since(self, since: dt.datetime) -> int:
        async with self._ctx.session_factory() as s:
            stmt = (
                select(func.count()).select_from(Horoscope).where(Horoscope.generated_at >= since)
            )
            return int(await s.scalar(stmt) or 0)
