"""`python -m bot run` as a function: commands, webhook, polling, graceful stop, conflicts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from structlog.testing import capture_logs

from bot.config import ConfigError
from bot.ops.stores import Stores
from bot.runner import run, serve
from cache import create_redis
from db.engine import create_engine, create_session_factory
from devtools.botapi import BotAPIServer
from tests.e2e.conftest import TOKEN

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


@contextlib.asynccontextmanager
async def _stores(database_url: str, redis_url: str) -> AsyncIterator[Stores]:
    """Stores on the run's Postgres and Redis; the Redis client closed and the engine disposed
    at the end."""
    engine = create_engine(database_url)
    stores = Stores(
        engine=engine,
        session_factory=create_session_factory(engine),
        redis=create_redis(redis_url, socket_timeout=2.0),
        database_url=database_url,
        redis_url=redis_url,
    )
    try:
        yield stores
    finally:
        await stores.redis.aclose()
        await stores.engine.dispose()


async def test_serve_sets_commands_polls_and_stops_cleanly(
    server: BotAPIServer,
    settings_factory,
    database_url,
    redis_url,
    redis,
    db_clean,  # type: ignore[no-untyped-def]
) -> None:
    settings = settings_factory(telegram_api_url=server.url)
    async with _stores(database_url, redis_url) as stores:
        stop = asyncio.Event()
        task = asyncio.create_task(serve(settings, stores, stop))
        await server.wait_for(lambda: server.bot().active_poll is not None, timeout=10)
        assert server.calls_to("deleteWebhook")
        commands = {c.params.get("language_code") for c in server.calls_to("setMyCommands")}
        assert {"ru", "en", None} <= commands
        server.user(77, language_code="en")
        server.send_text(77, "/help")
        await server.wait_for(lambda: server.last_message(77) is not None)
        stop.set()
        assert await asyncio.wait_for(task, 10) == 0


async def test_conflict_is_logged_clearly(
    settings_factory,
    database_url,
    redis_url,
    redis,
    db_clean,  # type: ignore[no-untyped-def]
) -> None:
    srv = BotAPIServer(tokens=[TOKEN])
    await srv.start()
    async with _stores(database_url, redis_url) as stores:
        stop = asyncio.Event()
        try:
            # Another poller holds getUpdates: the double answers the bot 409.
            other = asyncio.create_task(srv.handle(TOKEN, "getUpdates", {"timeout": "30"}))
            await srv.wait_for(lambda: srv.bot().active_poll is not None)
            with capture_logs() as logs:
                task = asyncio.create_task(
                    serve(settings_factory(telegram_api_url=srv.url), stores, stop)
                )
                await srv.wait_for(
                    lambda: any(c.outcome == 409 for c in srv.calls_to("getUpdates")), timeout=10
                )
                await srv.wait_for(
                    lambda: any(entry["event"] == "polling_conflict" for entry in logs)
                )
                stop.set()
                assert await asyncio.wait_for(task, 10) == 0
            assert any(entry["event"] == "polling_conflict" for entry in logs), logs
            other.cancel()
        finally:
            await srv.stop()


async def test_run_without_token_refuses_and_never_starts_the_playground(
    settings_factory,  # type: ignore[no-untyped-def]
) -> None:
    """An empty secret file must not turn production into the playground (issue 16)."""
    with pytest.raises(ConfigError, match="BOT_TOKEN is not set"):
        await run(settings_factory(bot_token=None))


async def test_playground_is_the_front_that_hands_run_bot_its_settings(
    settings_factory,  # type: ignore[no-untyped-def]
) -> None:
    seen: list[object] = []

    async def front(settings: object, run_bot: object) -> int:
        seen.append(run_bot)
        return 0

    assert await run(settings_factory(bot_token=None), front=front) == 0
    assert len(seen) == 1 and callable(seen[0])
