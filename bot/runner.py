"""The `run` command: stores, app, jobs and the metrics server, then polling until a signal.

Updates arrive by long polling, or, with WEBHOOK_URL set, by webhook (bot/ops/webhook.py:
aiogram's aiohttp handler on WEBHOOK_LISTEN, deduplicated across instances in Redis).

`run` needs a real token; the playground (devtools/playground/, `python -m bot playground`)
serves the same bot against its local Bot API by passing itself as ``front``.

Order of start-up: settings checked -> stores opened (migrations) -> app built -> metrics/health
server -> Telegram: getMe, deleteWebhook (polling only), setMyCommands -> scheduler (warm
file_ids first) -> polling, or the webhook server then setWebhook. Shutdown on SIGINT/SIGTERM
is the reverse: stop polling or listening (no new updates), wait for handlers still running,
stop the jobs (which flush the view and last-seen buffers once more), flush buffers ourselves
when there are no jobs, stop the metrics server, close the bot session, and finally the pools
(open_stores' exit).

Shutdown is bounded: the process exits within SHUTDOWN_TIMEOUT seconds of the signal whatever
Postgres (or Redis, or Telegram) does. Each step gets what is left of that budget, minus a
reserve for closing the pools (bot.ops.stores.CLOSE_TIMEOUT) and the rest. A final flush that
Postgres keeps waiting is cut short: its counters stay in Redis as a pending batch and the
next start flushes them exactly once (cache/buffers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiogram import Bot
from aiogram.exceptions import TelegramAPIError, TelegramUnauthorizedError
from aiogram.types import BotCommand, BotCommandScopeDefault

from bot.app import AppContext, build_app
from bot.config import ConfigError, Settings
from bot.ops import runtime
from bot.ops.health import start_health_server
from bot.ops.stores import CLOSE_TIMEOUT, LocalServers, Stores, close_quietly, open_stores
from bot.ops.webhook import WebhookServer, start_webhook
from db.types import Lang
from jobs.deps import JobDeps
from jobs.scheduler import start_jobs

log = structlog.get_logger(__name__)

#: How long shutdown waits (at most) for handlers that are still answering someone.
HANDLER_GRACE = 10.0
#: Updates handled at once by default (MAX_CONCURRENT_UPDATES); beyond it polling waits.
MAX_CONCURRENT_UPDATES = 64
#: Seconds each of the metrics server, the cache and the bot session get to close.
_QUICK_CLOSE = 0.5
#: Seconds of SHUTDOWN_TIMEOUT kept for those three and the two pools (open_stores' exit).
CLOSING_RESERVE = 3 * _QUICK_CLOSE + 2 * CLOSE_TIMEOUT

COMMANDS: dict[Lang, list[tuple[str, str]]] = {
    Lang.RU: [
        ("today", "Гороскоп на сегодня"),
        ("tomorrow", "Гороскоп на завтра"),
        ("sign", "Сменить знак"),
        ("settings", "Язык, часовой пояс, рассылка"),
        ("help", "Справка"),
    ],
    Lang.EN: [
        ("today", "Today's horoscope"),
        ("tomorrow", "Tomorrow's horoscope"),
        ("sign", "Change your sign"),
        ("settings", "Language, time zone, daily push"),
        ("help", "Help"),
    ],
}


class _ConflictSpotter(logging.Filter):
    """Turns aiogram's "Failed to fetch updates - TelegramConflictError" into one clear line.

    aiogram retries a 409 with back-off forever, logging a generic warning each time; the
    operator needs to know that another process polls with the same token (at most once a
    minute, so the log is not flooded).
    """

    def __init__(self) -> None:
        super().__init__()
        self._last = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "TelegramConflictError" in message or "Conflict:" in message:
            now = time.monotonic()
            if now - self._last > 60:
                self._last = now
                log.error(
                    "polling_conflict",
                    hint="another process is polling with this BOT_TOKEN (or a webhook is set);"
                    " stop it: Telegram delivers each update to one poller only",
                )
        return True


async def set_commands(bot: Bot, settings: Settings) -> None:
    """The command menu in both languages (the default scope gets DEFAULT_LANG)."""
    for lang in settings.enabled_langs:
        commands = [BotCommand(command=c, description=d) for c, d in COMMANDS[lang]]
        await bot.set_my_commands(commands, scope=BotCommandScopeDefault(), language_code=lang)
    default = [BotCommand(command=c, description=d) for c, d in COMMANDS[settings.default_lang]]
    await bot.set_my_commands(default, scope=BotCommandScopeDefault())


async def _start_jobs(app: AppContext, bot: Bot) -> Any:
    """The scheduler (jobs/) on the app's dependencies."""
    deps = JobDeps(
        settings=app.settings,
        cache=app.cache,
        keyspace=app.keyspace,
        session_factory=app.session_factory,
        redis=app.redis,
        bot=bot,
        images=app.images,
        generator=app.generator,
        clock=app.now,
    )
    return await start_jobs(deps)


async def _start_health(settings: Settings, stores: Stores) -> Any:
    """The /metrics, /healthz, /readyz server (bot/ops/health.py); None when disabled."""
    return await start_health_server(settings, stores)


async def _start_webhook(settings: Settings, bot: Bot, dp: Any, app: AppContext) -> WebhookServer:
    """Webhook mode (bot/ops/webhook.py): listen, then setWebhook; the dedupe shares the app's
    Redis, key space and circuit breaker."""
    return await start_webhook(
        settings, bot, dp, redis=app.redis, keyspace=app.keyspace, breaker=app.cache.breaker
    )


async def flush_buffers(app: AppContext) -> None:
    """Write buffered views and last-seen stamps to Postgres (when no job runner does it)."""
    from db.repositories import UserRepository

    try:
        result = await app.horoscopes.views.flush()
        log.info("views_flushed", views=result.views, rows=result.rows)
    except Exception:
        log.exception("views_flush_failed")
    try:
        async with app.session_factory() as session:
            seen = await UserRepository(session, app.data).flush_last_seen()
        log.info("last_seen_flushed", stamps=seen.stamps)
    except Exception:
        log.exception("last_seen_flush_failed")


class _Budget:
    """What is left of SHUTDOWN_TIMEOUT, on the event loop's clock."""

    def __init__(self, seconds: float) -> None:
        self._loop = asyncio.get_running_loop()
        self.until = self._loop.time() + seconds

    def left(self, reserve: float = 0.0) -> float:
        return max(0.0, self.until - reserve - self._loop.time())


async def serve(settings: Settings, stores: Stores, stop: asyncio.Event) -> int:
    """Run the bot on open stores until ``stop`` is set; returns the exit code.

    Returns within ``settings.shutdown_timeout`` seconds of ``stop`` minus the pools' share
    (open_stores closes those), whatever the stores do.
    """
    bot, dp, app = build_app(settings, stores)
    health = jobs = None
    budget: _Budget | None = None
    conflict = _ConflictSpotter()
    logging.getLogger("aiogram.dispatcher").addFilter(conflict)
    try:
        health = await _start_health(settings, stores)
        try:
            me = await bot.me()
        except TelegramUnauthorizedError:
            log.error("bot_token_rejected", hint="Telegram does not accept BOT_TOKEN")
            return 1
        log.info("bot_identity", bot_id=me.id, username=me.username)
        if settings.webhook_url is None:  # polling: a webhook left set would answer 409
            await bot.delete_webhook(drop_pending_updates=False)
        try:
            await set_commands(bot, settings)
        except TelegramAPIError as exc:  # cosmetic: the bot works without a command menu
            log.warning("set_commands_failed", error=str(exc))
        jobs = await _start_jobs(app, bot)
        runtime.freeze_startup_heap()  # everything alive now lives as long as the process
        # Hook: the jobs/ scheduler runs from here (jobs.scheduler.start_jobs) until shutdown.
        if settings.webhook_url is not None:
            webhook = await _start_webhook(settings, bot, dp, app)
            try:
                await stop.wait()
            finally:
                budget = _Budget(settings.shutdown_timeout)
                log.info("stopping", within_seconds=settings.shutdown_timeout)
                # no new updates, the ones in flight answered within the grace (bounded)
                await webhook.stop(min(HANDLER_GRACE, budget.left(CLOSING_RESERVE) / 2))
            return 0
        polling = asyncio.create_task(
            dp.start_polling(
                bot,
                handle_signals=False,
                close_bot_session=False,
                tasks_concurrency_limit=settings.max_concurrent_updates,
            )
        )
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({polling, stopper}, return_when=asyncio.FIRST_COMPLETED)
        budget = _Budget(settings.shutdown_timeout)
        log.info("stopping", within_seconds=settings.shutdown_timeout)
        if polling not in done:
            with contextlib.suppress(RuntimeError):
                await dp.stop_polling()
        stopper.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            async with asyncio.timeout(budget.left(CLOSING_RESERVE)):
                await polling
        left = await app.wait_inflight(min(HANDLER_GRACE, budget.left(CLOSING_RESERVE) / 2))
        if left:
            log.warning("handlers_unfinished_at_shutdown", count=left)
        return 0
    finally:
        if budget is None:  # start-up failed or was interrupted: the same bound from now
            budget = _Budget(settings.shutdown_timeout)
        runtime.thaw_heap()
        logging.getLogger("aiogram.dispatcher").removeFilter(conflict)
        await app.horoscopes.repo.aclose()  # background generations: their leases run out
        if jobs is not None:
            await jobs.shutdown(timeout=budget.left(CLOSING_RESERVE))  # flushes both buffers
        else:
            try:
                async with asyncio.timeout(budget.left(CLOSING_RESERVE)):
                    await flush_buffers(app)
            except TimeoutError:
                log.warning("final_flush_cut_short", note="counters stay in Redis for next run")
        if health is not None:
            await close_quietly("health", health.stop, timeout=_QUICK_CLOSE)
        await close_quietly("cache", app.cache.aclose, timeout=_QUICK_CLOSE)
        await close_quietly("bot_session", bot.session.close, timeout=_QUICK_CLOSE)


#: What wraps the bot in the playground: it gets ``run_bot`` and returns its exit code.
Front = Callable[[Settings, Callable[[Settings], Awaitable[int]]], Awaitable[int]]


async def run(
    settings: Settings, *, local: LocalServers | None = None, front: Front | None = None
) -> int:
    """Run until SIGINT/SIGTERM; ConfigError without a token.

    ``local`` starts servers whose URL is not configured (a source checkout only); ``front``
    is the playground (``python -m bot playground``), which hands ``run_bot`` the token and
    URL of its local Bot API. Without ``front`` there is no fallback of any kind: a missing or
    empty token is an error, never the playground.
    """
    if front is None and settings.bot_token is None:
        raise ConfigError(
            "configuration error: BOT_TOKEN is not set or empty (set BOT_TOKEN or BOT_TOKEN_FILE;"
            " for the local playground: python -m bot playground)"
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def run_bot(bot_settings: Settings) -> int:
        async with open_stores(bot_settings, local=local) as stores:
            return await serve(bot_settings, stores, stop)

    try:
        if front is not None:
            return await front(settings, run_bot)
        return await run_bot(settings)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
