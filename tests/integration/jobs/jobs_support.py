"""Helpers shared by the job tests (a module, so both conftest and tests import it)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections import Counter
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings, load_settings
from bot.domain.generation import TemplateGenerator
from cache import CacheAside, KeySpace
from db.types import GeneratedHoroscope, Lang, Sign
from jobs.deps import JobDeps

TOKEN = "123456789:AAHtestTOKENforTHEjobsTESTS_abcdefghi"
BOT_ID = int(TOKEN.split(":")[0])


SECOND = 1_000_000


class FakeTime:
    """Microseconds the test sets; ``sleep`` advances them (so nothing really waits)."""

    def __init__(self) -> None:
        self.now = 1_700_000_000 * SECOND
        self.slept: list[float] = []

    def __call__(self) -> int:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += max(1, round(seconds * SECOND))
        await asyncio.sleep(0)


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
        self.hung_count = 0
        self._hung_changed = asyncio.Condition()

    async def generate(self, sign: Sign, date: dt.date, lang: Lang) -> GeneratedHoroscope:
        self.calls += 1
        if self.hang_after is not None and self.calls > self.hang_after:
            self.hung.set()
            async with self._hung_changed:
                self.hung_count += 1
                self._hung_changed.notify_all()
            await asyncio.Event().wait()
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("generator down")
        await asyncio.sleep(0.002)
        result = await self.inner.generate(sign, date, lang)
        self.completed[(sign, date, lang)] += 1
        return result

    async def wait_hung(self, count: int) -> None:
        """Until ``count`` calls are hanging (e.g. every worker of a job: all that completed
        before them has been stored)."""
        async with self._hung_changed:
            await self._hung_changed.wait_for(lambda: self.hung_count >= count)


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


def push_deps_for(
    deps: JobDeps,
    server: Any,
    *,
    instance: str | None = None,
    tag: str | None = None,
    **settings: Any,
) -> JobDeps:
    """``deps`` with a Bot on the Bot API double and an image sender: what the push needs.
    ``instance``: another name, for a second "instance" sharing Redis and Postgres; ``tag``:
    its calls reach the double under that tag (they can be held); ``settings``: overrides."""
    from aiogram import Bot
    from aiogram.client.default import DefaultBotProperties
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer
    from aiogram.enums import ParseMode

    from bot.domain.services.images import ImageSender, RepositoryFileIds

    if instance is not None or settings:
        deps = dataclasses.replace(deps, instance=instance or deps.instance)
    if settings:
        deps.settings = make_settings(deps.settings.cache_prefix, **settings)
    session = (
        server.aiogram_session()
        if tag is None
        else AiohttpSession(api=TelegramAPIServer.from_base(f"{server.url}/{tag}"))
    )
    deps.bot = Bot(
        TOKEN,
        session=session,
        default=DefaultBotProperties(parse_mode=ParseMode.HTML),
    )
    deps.images = ImageSender(
        RepositoryFileIds(deps.data),
        cache=deps.cache,
        upload_key=lambda bot_id, asset, sha: deps.keyspace.key("upload", bot_id, asset, sha),
    )
    return deps


def sent_to(server: Any, user_id: int) -> list[Any]:
    return [m for m in server.chats.get((BOT_ID, user_id), []) if m.outgoing]


async def add_users(deps: JobDeps, rows: list[dict[str, Any]]) -> None:
    from db.models import User

    async with deps.session_factory() as s, s.begin():
        await s.execute(insert(User), rows)


async def user_rows(deps: JobDeps) -> dict[int, Any]:
    from db.models import User

    async with deps.session_factory() as s:
        result = await s.execute(
            select(
                User.id,
                User.push_enabled,
                User.last_push_date,
                User.push_claimed_by,
                User.push_claimed_until,
            )
        )
        return {row.id: row for row in result}


def user(uid: int, zone: str | None, **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": uid,
        "first_name": f"U{uid}",
        "zodiac_sign": list(Sign)[uid % 12],
        "lang": Lang.EN,
        "timezone": zone,
        "push_enabled": True,
        "push_time": dt.time(9, 0),
    }
    row.update(extra)
    return row


def max_in_window(stamps: list[float], width: float = 1.0) -> int:
    """The most stamps that fall in any half-open window [t, t + width)."""
    stamps = sorted(stamps)
    best, j = 0, 0
    for i, t in enumerate(stamps):
        while stamps[j] <= t - width:
            j += 1
        best = max(best, i - j + 1)
    return best


def scheduler_process(redis_url: str, database_url: str, prefix: str) -> None:
    """One bot instance for the two-process test (a multiprocessing *spawn* target).

    Builds the real scheduler, adds a probe job through the same JobRunner (so the same leader
    lock), at the instant the parent publishes, then reports the probe's outcome in Redis.
    """
    asyncio.run(_scheduler_process(redis_url, database_url, prefix))


async def _scheduler_process(redis_url: str, database_url: str, prefix: str) -> None:
    from apscheduler.triggers.date import DateTrigger

    from db.engine import create_engine, create_session_factory
    from jobs.leader import JobRunner
    from jobs.scheduler import create_scheduler

    redis = Redis.from_url(redis_url)
    engine = create_engine(database_url, pool_size=2, max_overflow=0)
    try:
        settings = make_settings(prefix)
        deps = make_deps(settings, redis, create_session_factory(engine))
        runner = JobRunner(redis, deps.keyspace, lease=5)
        scheduler = create_scheduler(deps, runner=runner)
        done = asyncio.Event()

        async def probe() -> None:
            await redis.incr(f"{prefix}:probe_runs")
            # Keep leading until the other instance has fired and been skipped.
            await redis.blpop([f"{prefix}:skipped"], timeout=30)

        async def wrapped() -> None:
            outcome = await runner.run("probe", probe)
            if outcome.value == "skipped":
                await redis.rpush(f"{prefix}:skipped", 1)
            await redis.rpush(f"{prefix}:outcomes", outcome.value)
            done.set()

        scheduler.start()
        await redis.rpush(f"{prefix}:ready", 1)
        while (raw := await redis.get(f"{prefix}:fire_at")) is None:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        fire_at = dt.datetime.fromtimestamp(float(raw), dt.UTC)
        scheduler.add_job(wrapped, DateTrigger(run_date=fire_at), id="probe", name="probe")
        await asyncio.wait_for(done.wait(), 30)
        scheduler.shutdown(wait=False)
        await asyncio.sleep(0)
    finally:
        await redis.aclose()
        await engine.dispose()
