"""The real bot (Dispatcher, middlewares, aiogram's HTTP session) against the Bot API double.

``harness`` starts the double, builds the app with ``build_app`` on the run's Postgres and the
shared Redis under the test's key prefix, and polls in a task. Tests drive users through the
double and wait for the bot to have *finished* an update (``h.done(update_id)``), never sleep.
``h.restart()`` stops the bot and builds a new Bot, Dispatcher and pools on the same stores.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiogram import Bot, Dispatcher
from aiogram.types import Update
from redis.asyncio import Redis

from bot.app import AppContext, build_app
from bot.config import Settings
from bot.ops.stores import Stores, bot_engine
from cache import create_redis
from db.engine import create_session_factory
from devtools.botapi import BotAPIServer
from tests.helpers import FakeGenerator

TOKEN = "123456:TEST-e2e-token-aaaaaaaaaaaaaaaaaaaaaaaaa"
BOT_ID = 123456
ADMIN = 1000


class FixedClock:
    """An aware UTC clock the test can move."""

    def __init__(self, now: dt.datetime) -> None:
        self.value = now

    def __call__(self) -> dt.datetime:
        return self.value


class Harness:
    def __init__(
        self,
        server: BotAPIServer,
        settings: Settings,
        database_url: str,
        redis_url: str,
        generator: FakeGenerator,
        clock: FixedClock,
    ) -> None:
        self.server = server
        self.settings = settings
        self.database_url = database_url
        self.redis_url = redis_url
        self.generator = generator
        self.clock = clock
        self.bot: Bot
        self.dp: Dispatcher
        self.app: AppContext
        self.stores: Stores | None = None
        self.task: asyncio.Task[None] | None = None
        self.finished: dict[int, asyncio.Event] = {}
        self.errors_total = 0
        #: seeds the welcome-picture choice, so a restarted bot picks the same pictures
        self.seed = 1

    # ------------------------------------------------------------------ lifecycle

    def _event(self, update_id: int) -> asyncio.Event:
        event = self.finished.get(update_id)
        if event is None:
            event = self.finished[update_id] = asyncio.Event()
        return event

    async def start(self, **build: Any) -> None:
        # The bot's own engine: its pool, timeouts and Postgres guard come from the settings.
        engine = bot_engine(self.database_url, self.settings)
        redis = create_redis(self.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self.stores = Stores(
            engine=engine,
            session_factory=create_session_factory(engine),
            redis=redis,
            database_url=self.database_url,
            redis_url=self.redis_url,
        )
        self.bot, self.dp, self.app = build_app(
            self.settings, self.stores, now=self.clock, generator=self.generator, **build
        )
        self.app.rng = random.Random(self.seed)
        original = self.dp.feed_update

        async def feed_update(bot: Bot, update: Update, **kwargs: Any) -> Any:
            try:
                return await original(bot, update, **kwargs)
            finally:
                self._event(update.update_id).set()

        self.dp.feed_update = feed_update  # type: ignore[method-assign]
        self.task = asyncio.create_task(
            self.dp.start_polling(self.bot, handle_signals=False, polling_timeout=1)
        )
        await self.server.wait_for(lambda: self.server.bot().active_poll is not None, timeout=10)

    async def stop(self) -> None:
        if self.task is not None:
            with contextlib.suppress(RuntimeError):
                await self.dp.stop_polling()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
            await self.app.wait_inflight(5.0)
            self.errors_total += self.app.errors
        if self.stores is not None:
            await self.app.cache.aclose()
            await self.stores.redis.aclose()
            await self.stores.engine.dispose()
            self.stores = None

    async def __aenter__(self) -> Harness:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def restart(self, **build: Any) -> None:
        await self.stop()
        await self.start(**build)

    # ------------------------------------------------------------------ driving users

    def last_update_id(self) -> int:
        return self.server.bot().next_update_id - 1

    async def done(self, update_id: int | None = None, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until the bot finished handling ``update_id`` (default: the latest)."""
        uid = self.last_update_id() if update_id is None else update_id
        await asyncio.wait_for(self._event(uid).wait(), timeout)

    async def say(self, user_id: int, text: str) -> list[Any]:
        """The user writes ``text``; returns the bot's messages sent while handling it."""
        before = {m.message_id for m in self.server.messages(user_id, include_deleted=True)}
        update = self.server.send_text(user_id, text)
        await self.done(update["update_id"])
        return [
            m
            for m in self.server.messages(user_id, include_deleted=True)
            if m.message_id not in before
        ]

    async def press(self, user_id: int, message_id: int, data: str) -> str:
        query_id = self.server.press_button(user_id, message_id, data)
        await self.done()
        return query_id

    def answer_of(self, query_id: str) -> dict[str, Any] | None:
        return next(
            (a for a in self.server.callback_answers if a["callback_query_id"] == query_id), None
        )

    @property
    def redis(self) -> Redis:
        assert self.stores is not None
        return self.stores.redis

    @property
    def errors(self) -> int:
        return self.errors_total + (self.app.errors if self.task is not None else 0)


@pytest.fixture
def clock() -> FixedClock:
    today = dt.datetime.now(dt.UTC).date()
    return FixedClock(dt.datetime.combine(today, dt.time(10, 0), dt.UTC))


@pytest.fixture
def generator() -> FakeGenerator:
    return FakeGenerator(html=True)


@pytest.fixture
def settings_factory(database_url: str, redis_url: str, key_prefix: str) -> Any:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "bot_token": TOKEN,
            "telegram_api_url": "http://127.0.0.1:1",
            "database_url": database_url,
            "redis_url": redis_url,
            "cache_prefix": key_prefix,
            "admin_ids": frozenset({ADMIN}),
            # The throttle runs on the harness's frozen clock: tests about it turn it on
            # (test_e2e_budget_fuzz); every other test presses buttons faster than a person.
            "throttle_enabled": False,
            "bot_timezone": "Europe/Moscow",
            "default_lang": "ru",
            "scheduler_enabled": False,
            "metrics_addr": "",
            "log_format": "console",
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Per-test Settings changes: ``@pytest.mark.parametrize("settings_overrides", [{...}])``."""
    return {}


@pytest.fixture
async def server() -> AsyncIterator[BotAPIServer]:
    srv = BotAPIServer(tokens=[TOKEN])
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def harness(
    server: BotAPIServer,
    settings_factory: Any,
    database_url: str,
    redis_url: str,
    redis: Redis,
    db_clean: None,
    generator: FakeGenerator,
    clock: FixedClock,
    settings_overrides: dict[str, Any],
) -> AsyncIterator[Harness]:
    assert server.url is not None
    settings = settings_factory(telegram_api_url=server.url, **settings_overrides)
    async with Harness(server, settings, database_url, redis_url, generator, clock) as h:
        yield h
