"""The app factory: one function that wires Bot, Dispatcher and every dependency.

``build_app`` is what the runner, the e2e tests, the playground and the benchmarks call, so all
of them run the same bot. Dependencies reach handlers through the Dispatcher's
``workflow_data`` as one ``AppContext`` (``app``), plus per-update values the middlewares add
(``session``, ``repos``, ``user``, ``lang``, ``t``).

``cache_enabled=False`` builds the same bot on ``CacheAside(None)``: every read goes to Postgres
(and single-flight still applies). Benchmarks use it as the "Postgres only" baseline.
"""

from __future__ import annotations

from typing import Protocol

from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import TELEGRAM_API_DEFAULT, Settings
from bot.domain.clock import Clock, utc_now
from bot.domain.generation import build_generator
from bot.domain.generation.metered import metered
from bot.domain.services.horoscope import HoroscopeService
from bot.domain.services.images import ASSETS_DIR, ImageSender, RepositoryFileIds
from bot.domain.services.stats import StatsService
from bot.domain.services.throttle import Throttle
from bot.ops.metrics import REGISTRY
from bot.ops.outages import OUTAGES, REDIS
from bot.ops.runtime import pin_response_models
from bot.ops.stores import keyspace_for
from bot.telegram.context import AppContext
from bot.telegram.handlers import routers
from bot.telegram.middlewares import ContextMiddleware, UnitOfWorkMiddleware, UserMiddleware
from cache import CacheAside, CacheMetrics
from db.repositories.context import DataContext
from db.types import HoroscopeGenerator

__all__ = ["AppContext", "StoresLike", "build_app", "build_bot"]


class StoresLike(Protocol):
    """What build_app needs of bot.ops.stores.Stores (tests and benchmarks may pass their own)."""

    @property
    def session_factory(self) -> async_sessionmaker[AsyncSession]: ...

    @property
    def redis(self) -> Redis: ...


def build_bot(settings: Settings) -> Bot:
    """A Bot with HTML as default parse mode, on TELEGRAM_API_URL when it is not Telegram's."""
    if settings.bot_token is None:
        raise ValueError("BOT_TOKEN is not set")
    session = None
    if settings.telegram_api_url.rstrip("/") != TELEGRAM_API_DEFAULT:
        session = AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_url))
    return Bot(
        token=settings.bot_token.get_secret_value(),
        session=session,
        default=DefaultBotProperties(parse_mode=ParseMode.HTML),
    )


def _report_redis_outages(cache: CacheAside) -> None:
    """The cache's breaker opening / closing is Redis going down / coming back: one WARNING,
    one INFO (bot/ops/outages.py), next to the metrics gauge the cache already feeds."""
    gauge = cache.breaker.on_change
    report = OUTAGES.breaker_hook(REDIS)

    def on_change(state: int) -> None:
        if gauge is not None:
            gauge(state)
        report(state)

    cache.breaker.on_change = on_change


def build_app(
    settings: Settings,
    stores: StoresLike,
    *,
    bot: Bot | None = None,
    now: Clock | None = None,
    cache_enabled: bool | None = None,
    generator: HoroscopeGenerator | None = None,
    metrics: CacheMetrics | None = None,
) -> tuple[Bot, Dispatcher, AppContext]:
    """Build the bot. Nothing here does I/O: the first update opens connections.

    ``cache_enabled`` defaults to ``settings.cache_enabled``; ``generator`` to the one
    HOROSCOPE_GENERATOR names; ``bot`` to ``build_bot(settings)``.
    """
    if bot is None:
        bot = build_bot(settings)
    pin_response_models()
    use_cache = settings.cache_enabled if cache_enabled is None else cache_enabled
    redis: Redis | None = stores.redis if use_cache else None
    cache = CacheAside(
        redis,
        # The app's registry: /metrics serves it, so cache events are scraped with the rest.
        metrics=metrics or CacheMetrics(REGISTRY),
        op_timeout=max(settings.redis_socket_timeout, 0.05),
    )
    _report_redis_outages(cache)
    keyspace = keyspace_for(settings, stores.redis)
    data = DataContext(
        cache=cache, keys=keyspace, session_factory=stores.session_factory, tz=settings.tz
    )
    if generator is None:
        generator = build_generator(
            settings.horoscope_generator,
            llm_base_url=settings.llm_base_url,
            llm_api_key=settings.llm_api_key,
            llm_model=settings.llm_model,
            llm_timeout=settings.llm_timeout,
        )
    generator = metered(generator)
    clock = now or utc_now
    file_ids = RepositoryFileIds(data)
    images = ImageSender(
        file_ids,
        assets_dir=ASSETS_DIR,
        cache=cache,
        upload_key=lambda bot_id, asset, sha: keyspace.key("upload", bot_id, asset, sha[:16]),
    )
    app = AppContext(
        settings=settings,
        cache=cache,
        keyspace=keyspace,
        session_factory=stores.session_factory,
        data=data,
        generator=generator,
        images=images,
        file_ids=file_ids,
        horoscopes=HoroscopeService(settings, data, generator, images, file_ids, clock),
        stats=StatsService(
            data, generator, clock, settings.bot_timezone, cache.metrics, stores.redis
        ),
        throttle=Throttle(
            keyspace,
            settings.throttle_rate,
            settings.throttle_burst,
            enabled=settings.throttle_enabled,
            clock=lambda: clock().timestamp(),
        ),
        redis=redis,
        now=clock,
    )
    # disable_fsm: no handler uses FSM state, so no storage lookup per update.
    dp = Dispatcher(disable_fsm=True, app=app)
    dp.update.outer_middleware(ContextMiddleware(app.inflight))
    dp.update.outer_middleware(UnitOfWorkMiddleware(app))
    dp.update.outer_middleware(UserMiddleware(app))
    dp.include_routers(*routers())
    return bot, dp, app
