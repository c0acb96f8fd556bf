"""A warm /today in ONE Redis round trip (issue 13.4), counted on the bot's Redis client.

Through ``Dispatcher.feed_update`` on real Redis and Postgres, with a local Bot session: the
user lookup (GET + throttle script; the last-seen HSET at most once a minute) and the
horoscope's reads (MGET of text and file_id + the view HINCRBY) go in one pipeline once the
person's hint is known; no SQL, no pooled connection, no AsyncSession. The hint is only a
guess: when the user read in that trip says otherwise (the sign changed in another process)
the right horoscope is shown and the view lands on the right sign; a throttled /today counts
no view.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiogram import Bot, Dispatcher
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from sqlalchemy import event, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from benchmarks._env import BenchStores, LocalSession, bench_settings, command_update, local_bot
from bot.app import build_app
from bot.domain.generation.template import TemplateGenerator
from bot.telegram.context import AppContext
from cache import CacheMetrics, create_redis
from db.models import User
from devtools.traffic import RedisTraffic

pytestmark = pytest.mark.usefixtures("db_clean")

UID = 4_242_001
T0 = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)


class CaptionSession(LocalSession):
    """The local Bot session, keeping the caption of the last photo sent."""

    last_caption: str | None = None

    def _result(self, bot: Bot, method: Any, fields: dict[str, Any]) -> Any:
        if method.__api_method__ == "sendPhoto":
            self.last_caption = fields.get("caption")
        return super()._result(bot, method, fields)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass
class Bench:
    app: AppContext
    dp: Dispatcher
    bot: Bot
    session: CaptionSession
    redis: Redis
    clock: Clock
    sessions_made: list[int]
    sql: list[str]
    checkouts: list[int]

    async def say(self, text: str) -> None:
        await self.dp.feed_update(self.bot, command_update(self.bot, UID, "en", text))

    async def views(self) -> dict[str, int]:
        key = self.app.horoscopes.views.buffer_key
        return {k.decode(): int(v) for k, v in (await self.redis.hgetall(key)).items()}


@pytest.fixture
async def bench(
    redis_url: str,
    database_url: str,
    key_prefix: str,
    engine: AsyncEngine,
    session_factory: async_sessionmaker[AsyncSession],
    request: pytest.FixtureRequest,
) -> AsyncIterator[Bench]:
    overrides: dict[str, Any] = getattr(request, "param", {})
    settings = bench_settings(
        key_prefix, database_url=database_url, redis_url=redis_url, **overrides
    )
    client = create_redis(redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
    session = CaptionSession()
    bot, _ = local_bot(session)
    made: list[int] = []

    def counting_factory() -> AsyncSession:
        made.append(1)
        return session_factory()

    clock = Clock()
    _, dp, app = build_app(
        settings,
        BenchStores(session_factory=session_factory, redis=client),
        bot=bot,
        now=clock,
        generator=TemplateGenerator(),
        metrics=CacheMetrics(CollectorRegistry()),
    )
    app.session_factory = counting_factory  # what the unit of work builds its session with
    sql: list[str] = []
    checkouts: list[int] = []

    def on_execute(_c: Any, _cur: Any, statement: str, *_a: Any) -> None:
        sql.append(statement)

    def on_checkout(*_a: Any) -> None:
        checkouts.append(1)

    event.listen(engine.sync_engine, "before_cursor_execute", on_execute)
    event.listen(engine.sync_engine.pool, "checkout", on_checkout)
    try:
        yield Bench(app, dp, bot, session, client, clock, made, sql, checkouts)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", on_execute)
        event.remove(engine.sync_engine.pool, "checkout", on_checkout)
        await app.cache.aclose()
        await client.aclose()


def _commands(trip: tuple[tuple[Any, ...], ...]) -> list[str]:
    return [str(cmd[0]).upper() for cmd in trip]


async def test_warm_today_is_one_round_trip_and_no_sql(bench: Bench) -> None:
    b = bench
    await b.say("/start aries")  # registers the user with a sign, shows (and caches) aries
    await b.say("/today")  # the first /today of this process: the hint is learnt
    assert len(b.app.horoscopes.hints) == 1
    views_before = await b.views()
    traffic = RedisTraffic(b.redis)
    for n in range(3):
        traffic.reset()
        b.sql.clear()
        b.checkouts.clear()
        b.sessions_made.clear()
        sent = b.session.calls["sendPhoto"]
        await b.say("/today")
        assert b.session.calls["sendPhoto"] == sent + 1
        assert traffic.count == 1, traffic.trips
        commands = _commands(traffic.trips[0])
        assert commands[0] == "GET", commands
        assert "HSET" not in commands, commands  # stamped as last seen a moment ago
        assert "MGET" in commands and "HINCRBY" in commands, commands
        assert {"EVAL", "EVALSHA"} & set(commands), commands
        assert b.sql == [] and b.checkouts == [] and b.sessions_made == [], n
    assert b.app.errors == 0
    after = await b.views()
    field = f"{T0.date().isoformat()}:aries"
    assert after[field] - views_before[field] == 3  # every /today counted once


async def test_a_wrong_hint_shows_the_right_sign_and_counts_it(
    bench: Bench, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    b = bench
    await b.say("/start aries")
    await b.say("/today")  # hint: aries
    before = await b.views()
    # Another instance changes the sign: Postgres, then the cached user is deleted.
    async with session_factory() as s, s.begin():
        await s.execute(update(User).where(User.id == UID).values(zodiac_sign="leo"))
    await b.app.cache.invalidate(b.app.keyspace.key("user", UID))
    await b.say("/today")  # the user is read from Postgres now; the hint said aries
    caption = b.session.last_caption
    assert caption is not None and "Leo" in caption, caption
    after = await b.views()
    day = T0.date().isoformat()
    assert after.get(f"{day}:aries", 0) == before.get(f"{day}:aries", 0)  # taken back
    assert after.get(f"{day}:leo", 0) == before.get(f"{day}:leo", 0) + 1
    assert b.app.horoscopes.hints.get(UID) is not None
    assert b.app.horoscopes.hints.get(UID)[0].value == "leo"  # type: ignore[index]
    # ... and the next /today is one trip again, on the new hint
    traffic = RedisTraffic(b.redis)
    await b.say("/today")
    assert traffic.count == 1, traffic.trips
    assert (await b.views())[f"{day}:leo"] == after[f"{day}:leo"] + 1
    assert b.app.errors == 0


@pytest.mark.parametrize(
    "bench",
    [{"throttle_enabled": True, "throttle_rate": 1000.0, "throttle_burst": 1}],
    indirect=True,
)
async def test_a_throttled_today_counts_no_view(bench: Bench) -> None:
    b = bench
    await b.say("/start aries")
    b.clock.now += dt.timedelta(seconds=2000)  # the bucket refilled
    await b.say("/today")  # hint learnt
    b.clock.now += dt.timedelta(seconds=2000)
    before = await b.views()
    sent = b.session.calls["sendPhoto"]
    await b.say("/today")  # allowed, one trip, one view
    await b.say("/today")  # the same instant: throttled (a notice), its view taken back
    await b.say("/today")  # dropped silently, no view either
    assert b.session.calls["sendPhoto"] == sent + 1
    field = f"{T0.date().isoformat()}:aries"
    assert (await b.views())[field] == before[field] + 1
    assert b.app.errors == 0
