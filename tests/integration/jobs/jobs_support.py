"""Helpers shared by the job tests (a module, so both conftest and tests import it)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings, load_settings
from bot.generation import TemplateGenerator
from cache import CacheAside, KeySpace
from db.types import GeneratedHoroscope, Lang, Sign
from jobs.deps import JobDeps

TOKEN = "123456789:AAHtestTOKENforTHEjobsTESTS_abcdefghi"


class PinnedClock:
    """Wall clock the test moves by hand (aware UTC)."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


class CountingGenerator:
    """The template generator, counting *completed* generations per key.

    ``fail_after``: calls after that many calls raise. ``hang_after``: they wait forever
    (until cancelled) and ``hung`` is set, which is how a test kills a run half-way.
    """

    name = "counting"

    def __init__(self, *, fail_after: int | None = None, hang_after: int | None = None) -> None:
        self.inner = TemplateGenerator()
        self.completed: Counter[tuple[Sign, dt.date, Lang]] = Counter()
        self.calls = 0
        self.fail_after = fail_after
        self.hang_after = hang_after
        self.hung = asyncio.Event()

    async def generate(self, sign: Sign, date: dt.date, lang: Lang) -> GeneratedHoroscope:
        self.calls += 1
        if self.hang_after is not None and self.calls > self.hang_after:
            self.hung.set()
            await asyncio.Event().wait()
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("generator down")
        await asyncio.sleep(0.002)
        result = await self.inner.generate(sign, date, lang)
        self.completed[(sign, date, lang)] += 1
        return result


def make_settings(key_prefix: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "cache_prefix": key_prefix,
        "bot_timezone": "Europe/Moscow",
        "bot_token": TOKEN,
        "enabled_langs": (Lang.RU, Lang.EN),
        "log_format": "console",
    }
    values.update(overrides)
    return load_settings(**values)


def make_deps(
    settings: Settings,
    redis: Redis,
    session_factory: async_sessionmaker[AsyncSession],
    **kwargs: Any,
) -> JobDeps:
    return JobDeps(
        settings=settings,
        cache=CacheAside(redis),
        keyspace=KeySpace(settings.cache_prefix, settings.cache_schema_version),
        session_factory=session_factory,
        redis=redis,
        **kwargs,
    )
