"""A slow or dead Postgres or LLM never takes a person's answer down (issue 12.1, 12.2, 12.3,
12.5), through the real bot: Dispatcher, middlewares, aiogram's HTTP session, the Bot API
double, real Redis and Postgres, a TCP proxy in front of Postgres and a fake LLM server.

Nothing here waits for time to pass: the faults hold until the test lifts them (a hung
proxy, a gated generator, an LLM that answers when released), so "the warm updates were
answered while the cold ones were still stuck" is an observed order, not a race.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiogram import Bot
from aiogram.methods import TelegramMethod
from redis.asyncio import Redis
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from bot.domain.generation import OpenAIGenerator, TemplateGenerator
from bot.ops.stores import Stores, bot_engine
from bot.runner import serve
from bot.telegram.callbacks import Day, DayCB, MenuAction, MenuCB
from bot.telegram.texts import texts
from cache import CacheAside, KeySpace, create_redis
from db.engine import create_session_factory
from db.models import GenerationClaim, Horoscope, HoroscopeView
from db.repositories import DataContext, HoroscopeViewRepository
from db.types import GeneratedHoroscope, Lang, Sign
from devtools.botapi import BotAPIServer
from jobs.deps import JobDeps
from jobs.push import run_push
from tests.e2e.conftest import ADMIN, FixedClock, Harness
from tests.faults import ConnectionWatch, FakeLLM, FaultProxy

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

#: Postgres timeouts far beyond the test: only the fault's removal (or the shutdown bound)
#: ends a wait, never a timer.
NEVER = {
    "db_connect_timeout": 600.0,
    "db_command_timeout": 600.0,
    "db_statement_timeout": 600.0,
    "db_pool_timeout": 600.0,
}


async def _count(factory: async_sessionmaker[AsyncSession], model: type) -> int:
    async with factory() as s:
        return int(await s.scalar(select(func.count()).select_from(model)) or 0)


def _bot_messages(srv: BotAPIServer, user_id: int) -> list[Any]:
    return srv.messages(user_id)


# ---------------------------------------------------------------------- 12.1 no connection held


class GatedGenerator:
    """A slow model: every call waits for ``gate``; ``all_started`` fires at ``expected``."""

    name = "gated"

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.calls: Counter[tuple[Sign, dt.date, Lang]] = Counter()
        self.all_started = asyncio.Event()
        self.gate = asyncio.Event()

    async def generate(self, sign: Sign, date: dt.date, lang: Lang) -> GeneratedHoroscope:
        self.calls[(sign, date, lang)] += 1
        if sum(self.calls.values()) >= self.expected:
            self.all_started.set()
        await self.gate.wait()
        return GeneratedHoroscope(text=f"{sign.value} {lang.value}: slow but sure.", generator="g")


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            # A pool of two connections for 48 people and 24 cold keys at once; a person
            # waits for the model as long as it takes (this test is not about the deadline).
            "db_pool_size": 2,
            "db_max_overflow": 0,
            "db_pool_timeout": 30.0,
            "db_bulkhead_wait": 30.0,
            "horoscope_deadline": 600.0,
        }
    ],
)
async def test_slow_llm_and_24_cold_keys_never_exhaust_the_pool(
    server: BotAPIServer,
    settings_factory: Any,
    settings_overrides: dict[str, Any],
    database_url: str,
    redis_url: str,
    redis: Redis,
    db_clean: None,
    clock: FixedClock,
) -> None:
    gen = GatedGenerator(expected=24)
    settings = settings_factory(telegram_api_url=server.url, **settings_overrides)
    h = Harness(server, settings, database_url, redis_url, gen, clock)  # type: ignore[arg-type]
    async with h:
        people: list[tuple[int, Sign]] = []
        for sign in Sign:
            for lang in Lang:
                for _twin in range(2):
                    uid = 9000 + len(people)
                    server.user(uid, language_code=lang.value)
                    people.append((uid, sign))
        updates = [server.send_text(uid, f"/start {sign.value}") for uid, sign in people]
        # 24 generations in flight at once with a pool of two: none holds a connection.
        await asyncio.wait_for(gen.all_started.wait(), 30)
        gen.gate.set()
        await asyncio.gather(*(h.done(u["update_id"], timeout=30) for u in updates))
        assert h.errors == 0
        for uid, _sign in people:
            photo = server.last_message(uid)
            assert photo is not None and photo.photo is not None
            assert "slow but sure" in (photo.caption or "")
        assert len(gen.calls) == 24 and set(gen.calls.values()) == {1}  # once per key
        factory = h.app.session_factory
        assert await _count(factory, Horoscope) == 24
        assert await _count(factory, GenerationClaim) == 0


async def test_no_telegram_call_while_holding_a_connection(harness: Harness) -> None:
    """Every request to Telegram is made while no pooled Postgres connection is checked out:
    by anyone while people are answered one at a time (a handler's own task, or a shared load
    it waits for, such as a first upload), and by the calling task during the push (whose
    workers use the pool concurrently by design). The lazy unit of work commits first."""
    h, srv = harness, harness.server
    assert h.stores is not None
    watch = ConnectionWatch(h.stores.engine)
    calls: list[tuple[str, int, int]] = []  # method, held by the calling task, held in all

    async def spy(make_request: Any, bot: Bot, method: TelegramMethod[Any]) -> Any:
        if type(method).__name__ != "GetUpdates":  # the polling loop's own task
            calls.append((type(method).__name__, watch.held_here(), watch.held_by_anyone()))
        return await make_request(bot, method)

    h.bot.session.middleware(spy)
    try:
        srv.user(ADMIN, language_code="en")
        srv.user(4242, language_code="ru")
        for uid in (ADMIN, 4242):
            await h.say(uid, "/start")  # a new user: an INSERT, then the welcome picture
            await h.say(uid, "/start leo")  # a sign saved, then a (cold) horoscope
            await h.say(uid, "/today")
            await h.say(uid, "/tomorrow")
            await h.say(uid, "virgo")  # a typed sign
            await h.say(uid, "/settings")
            await h.say(uid, "/timezone Europe/Berlin")
            await h.say(uid, "/hour 13")
            await h.say(uid, "/lang en")
        msg = [m for m in srv.messages(ADMIN) if m.photo and "tomorrow" in (m.caption or "")][-1]
        await h.press(ADMIN, msg.message_id, DayCB(day=Day.TODAY, sign=Sign.LEO).pack())
        await h.press(ADMIN, msg.message_id, MenuCB(action=MenuAction.PUSH).pack())
        await h.say(ADMIN, "/stats")
        handlers = len(calls)
        # The daily push: 13:00 in Berlin.
        h.clock.value = dt.datetime.combine(h.clock.value.date(), dt.time(12, 0), dt.UTC)
        app = h.app
        deps = JobDeps(
            settings=app.settings,
            cache=app.cache,
            keyspace=app.keyspace,
            session_factory=app.session_factory,
            redis=app.redis,
            bot=h.bot,
            images=app.images,
            generator=app.generator,
            clock=h.clock,
        )
        report = await run_push(deps)
        assert report.sent >= 1
    finally:
        watch.close()
    methods = {name for name, _, _ in calls}
    assert {"SendPhoto", "SendMessage", "EditMessageMedia", "AnswerCallbackQuery"} <= methods
    assert [c for c in calls[:handlers] if c[2]] == []
    assert [c for c in calls if c[1]] == []
    assert h.errors == 0


# ---------------------------------------------------------------------- 12.3 the LLM hangs


@pytest.fixture
async def hung_llm() -> AsyncIterator[FakeLLM]:
    llm = await FakeLLM(hang=True).start()
    yield llm
    await llm.aclose()


@pytest.mark.parametrize("settings_overrides", [{"horoscope_deadline": 0.2}])
async def test_hung_llm_person_gets_built_in_text_then_the_model_text(
    server: BotAPIServer,
    settings_factory: Any,
    settings_overrides: dict[str, Any],
    database_url: str,
    redis_url: str,
    redis: Redis,
    db_clean: None,
    clock: FixedClock,
    hung_llm: FakeLLM,
) -> None:
    llm = OpenAIGenerator(
        hung_llm.base_url,
        "sk-test-key-aaaaaaaaaaaaaaaaaaaa",
        "fake-llm",
        timeout=600,  # the model's own budget is long; the person's deadline is not
        fallback=TemplateGenerator(),
        max_attempts=1,
    )
    settings = settings_factory(telegram_api_url=server.url, **settings_overrides)
    h = Harness(server, settings, database_url, redis_url, llm, clock)  # type: ignore[arg-type]
    await h.start()
    try:
        server.user(77, language_code="en")
        sent = await h.say(77, "/start leo")  # the model hangs until released below
        assert hung_llm.requests == 1
        built_in = await TemplateGenerator().generate(Sign.LEO, h.clock.value.date(), Lang.EN)
        shown = " ".join((m.caption or m.text or "") for m in sent)
        assert built_in.text.split("\n")[0][:40] in shown
        assert "opens gently" not in shown
        assert await _count(h.app.session_factory, Horoscope) == 0  # not stored: a fallback
        # The model answers: its text is stored and replaces the built-in one in Redis.
        hung_llm.release()
        await h.app.horoscopes.repo.wait_background()
        assert await _count(h.app.session_factory, Horoscope) == 1
        again = await h.say(77, "/today")
        assert "opens gently" in " ".join((m.caption or m.text or "") for m in again)
        assert hung_llm.requests == 1
        assert h.errors == 0
    finally:
        await h.stop()
        await llm.aclose()


# ---------------------------------------------------------------------- the real runner


@contextlib.asynccontextmanager
async def _proxied_stores(
    proxy: FaultProxy, database_url: str, redis_url: str, settings: Settings
) -> AsyncIterator[Stores]:
    url = proxy.url_for(database_url)
    engine = bot_engine(url, settings)
    stores = Stores(
        engine=engine,
        session_factory=create_session_factory(engine),
        redis=create_redis(redis_url, socket_timeout=2.0),
        database_url=url,
        redis_url=redis_url,
    )
    try:
        yield stores
    finally:
        proxy.refuse()
        proxy.reset()
        await stores.redis.aclose()
        await stores.engine.dispose()


@pytest.fixture
async def pg_proxy(database_url: str) -> AsyncIterator[FaultProxy]:
    url = make_url(database_url)
    proxy = await FaultProxy(url.host or "127.0.0.1", url.port or 5432).start()
    yield proxy
    await proxy.aclose()


async def _warm_up(srv: BotAPIServer, users: list[int]) -> None:
    """/start leo, then /today twice: user, text, picture and file_id all in Redis."""
    for uid in users:
        srv.user(uid, language_code="en")
        for text in ("/start leo", "/today", "/today"):
            before = len(_bot_messages(srv, uid))
            srv.send_text(uid, text)
            await srv.wait_for(lambda uid=uid, n=before: len(_bot_messages(srv, uid)) > n, 20)


async def test_hung_postgres_never_starves_warm_updates(
    server: BotAPIServer,
    settings_factory: Any,
    database_url: str,
    redis_url: str,
    redis: Redis,
    db_clean: None,
    pg_proxy: FaultProxy,
) -> None:
    """Eight update slots, a bulkhead of three: new users (who need Postgres) pile up while it
    hangs, yet people known to Redis keep getting /today; the new ones are told to try again
    in their language."""
    settings = settings_factory(
        telegram_api_url=server.url,
        max_concurrent_updates=8,
        db_bulkhead=3,
        db_bulkhead_wait=0.05,
        **NEVER,
    )
    warm = [301, 302, 303]
    cold = list(range(401, 413))
    async with _proxied_stores(pg_proxy, database_url, redis_url, settings) as stores:
        stop = asyncio.Event()
        task = asyncio.create_task(serve(settings, stores, stop))
        try:
            await server.wait_for(lambda: server.bot().active_poll is not None, timeout=20)
            await _warm_up(server, warm)
            seen = {uid: len(_bot_messages(server, uid)) for uid in warm}
            pg_proxy.hang()
            for uid in cold:
                server.user(uid, language_code="ru" if uid % 2 else "en")
                server.send_text(uid, "/start")
            for uid in warm:
                server.send_text(uid, "/today")

            # Every warm person gets today's horoscope, and all but three new users are told to
            # try again; those three are stuck on the hung Postgres (and cannot finish before
            # the proxy lets go), each holding one of the three bulkhead slots.
            def answered() -> set[int]:
                return {u for u in cold if _bot_messages(server, u)}

            await server.wait_for(
                lambda: (
                    all(len(_bot_messages(server, u)) > seen[u] for u in warm)
                    and len(answered()) >= len(cold) - 3
                ),
                30,
            )
            for uid in warm:
                assert server.last_message(uid).photo is not None  # type: ignore[union-attr]
            stuck = set(cold) - answered()
            assert len(stuck) == 3
            for uid in answered():
                lang = Lang.RU if uid % 2 else Lang.EN
                assert server.last_message(uid).text == texts(lang).try_again_later  # type: ignore[union-attr]
            # Postgres dies for good: the stuck ones are told to try again too.
            pg_proxy.refuse()
            pg_proxy.reset()
            await server.wait_for(lambda: all(_bot_messages(server, u) for u in stuck), 30)
            for uid in stuck:
                lang = Lang.RU if uid % 2 else Lang.EN
                assert server.last_message(uid).text == texts(lang).try_again_later  # type: ignore[union-attr]
        finally:
            stop.set()
            assert await asyncio.wait_for(task, 60) == 0


async def test_shutdown_is_bounded_with_postgres_hung_and_counters_flush_once_later(
    server: BotAPIServer,
    settings_factory: Any,
    database_url: str,
    redis_url: str,
    redis: Redis,
    key_prefix: str,
    session_factory: async_sessionmaker[AsyncSession],
    db_clean: None,
    pg_proxy: FaultProxy,
) -> None:
    settings = settings_factory(
        telegram_api_url=server.url,
        shutdown_timeout=5,
        flush_views_seconds=3600,
        flush_last_seen_seconds=3600,
        **NEVER,
    )
    users = [501, 502]
    async with _proxied_stores(pg_proxy, database_url, redis_url, settings) as stores:
        stop = asyncio.Event()
        task = asyncio.create_task(serve(settings, stores, stop))
        await server.wait_for(lambda: server.bot().active_poll is not None, timeout=20)
        await _warm_up(server, users)  # six horoscopes shown: six views in the Redis buffer
        keys = KeySpace(settings.cache_prefix, settings.cache_schema_version)
        views = HoroscopeViewRepository(
            DataContext(CacheAside(redis), keys, session_factory, settings.tz)
        )
        today = dt.datetime.now(settings.tz).date()
        buffered = (await views.buffered(today)).get(Sign.LEO, 0)
        assert buffered == 6
        pg_proxy.hang()
        stop.set()
        # The final flush hangs in Postgres (timeouts of ten minutes): the bound ends it.
        assert await asyncio.wait_for(task, 60) == 0
    # The counters were not lost and not applied: they wait in Redis for the next run...
    assert await _count(session_factory, HoroscopeView) == 0
    assert (await views.buffered(today)).get(Sign.LEO, 0) == 6
    # ...which flushes them exactly once.
    await views.flush()
    await views.flush()
    assert (await views.totals(today)).get(Sign.LEO, 0) == 6
    assert (await views.buffered(today)).get(Sign.LEO, 0) == 0
