"""Test helpers shared across test packages: a fake generator, a Telegram user stand-in, and
the unit of work every writer uses (db/unit_of_work.py), re-exported for the tests."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

from db.types import GeneratedHoroscope, Lang, Sign
from db.unit_of_work import unit_of_work

__all__ = ["FakeGenerator", "TgUser", "stampede_child", "unit_of_work"]


class FakeGenerator:
    """Deterministic generator: same text for the same (sign, date, lang); counts its calls.

    ``delay`` simulates a slow model; ``html`` adds ``<b>&`` so escaping can be tested;
    ``fallback`` marks results as the built-in fallback (not to be stored); ``counter`` is an
    optional async callback (e.g. an INCR in Redis) to count calls across processes.
    """

    name = "fake"

    def __init__(
        self,
        *,
        delay: float = 0.0,
        html: bool = False,
        fallback: bool = False,
        fail: bool = False,
        counter: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        self.delay = delay
        self.html = html
        self.fallback = fallback
        self.fail = fail
        self.counter = counter
        self.calls: list[tuple[Sign, dt.date, Lang]] = []

    def text_for(self, sign: Sign, date: dt.date, lang: Lang) -> str:
        text = f"{sign.value} {date.isoformat()} {lang.value}: a calm day for careful plans."
        return f"<b>&</b> {text}" if self.html else text

    async def generate(self, sign: Sign, date: dt.date, lang: Lang) -> GeneratedHoroscope:
        self.calls.append((sign, date, lang))
        if self.counter is not None:
            await self.counter()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("generator failed")
        return GeneratedHoroscope(
            text=self.text_for(sign, date, lang),
            generator="fallback" if self.fallback else self.name,
            model="fake-1",
            prompt_tokens=10,
            completion_tokens=20,
            cost_usd=0.0001,
            is_fallback=self.fallback,
        )


class TgUser:
    """A stand-in for aiogram's User with the attributes the repository reads."""

    def __init__(
        self,
        id: int,
        first_name: str = "Ann",
        *,
        last_name: str | None = None,
        username: str | None = "ann",
        language_code: str | None = "ru",
        is_premium: bool | None = None,
        is_bot: bool = False,
    ) -> None:
        self.id = id
        self.first_name = first_name
        self.last_name = last_name
        self.username = username
        self.language_code = language_code
        self.is_premium = is_premium
        self.is_bot = is_bot


def stampede_child(
    database_url: str, redis_url: str, prefix: str, n: int, delay: float, count_view: bool = False
) -> list[str]:
    """One process of the cross-process stampede test (top level: picklable under spawn).

    Builds its own engine, Redis client and CacheAside, fires ``n`` concurrent
    get_or_generate calls for one cold key and returns the distinct texts it saw. The generator
    counts its calls with INCR under the test's prefix, so the parent can add them up.
    """
    import asyncio

    return asyncio.run(_stampede(database_url, redis_url, prefix, n, delay, count_view))


async def _stampede(
    database_url: str, redis_url: str, prefix: str, n: int, delay: float, count_view: bool
) -> list[str]:
    import asyncio
    from zoneinfo import ZoneInfo

    from cache import CacheAside, KeySpace, create_redis
    from db.engine import create_engine, create_session_factory
    from db.repositories import DataContext, HoroscopeRepository

    engine = create_engine(database_url, pool_size=5, max_overflow=5)
    client = create_redis(redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
    try:
        cache = CacheAside(client, op_timeout=2.0)
        ctx = DataContext(cache, KeySpace(prefix), create_session_factory(engine), ZoneInfo("UTC"))

        async def count() -> None:
            await client.incr(f"{prefix}:test:generator_calls")

        repo = HoroscopeRepository(ctx, FakeGenerator(delay=delay, counter=count))
        day = dt.date(2026, 11, 21)
        # Start line: every process is set up (imports, engine, Redis) before anyone asks, so
        # all 4 x n calls really hit the cold key at the same moment.
        waiter = Redis.from_url(redis_url)  # no socket timeout: BLPOP blocks
        try:
            await waiter.rpush(f"{prefix}:test:ready", 1)
            await waiter.blpop([f"{prefix}:test:go"], timeout=30)
        finally:
            await waiter.aclose()
        results = await asyncio.gather(
            *(repo.get_or_generate(Sign.LEO, day, Lang.RU, count_view=count_view) for _ in range(n))
        )
        return sorted({r.text for r in results})
    finally:
        await client.aclose()
        await engine.dispose()
