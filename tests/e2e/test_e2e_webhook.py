"""Webhook mode end to end: the runner's ``serve`` with WEBHOOK_URL set, the Bot API double
delivering updates to it over HTTP like Telegram (secret header, retries with back-off).

What is proven here, on the real bot and real Redis/Postgres:
- start-up calls setWebhook with the secret, the update types the routers use and
  max_connections, and never deleteWebhook;
- a request without the secret, or with a wrong one (non-ASCII included), gets 401 and changes
  nothing; a malformed body gets 400;
- a redelivered update (same update_id) is answered 200 and not handled again; one whose
  lease another instance holds gets 503 and is handled once that instance is done;
- polling while the webhook is set gets Telegram's 409;
- SIGTERM-style stop stops listening, answers the update in flight (bounded) and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiogram import Bot
from aiogram.exceptions import TelegramConflictError
from redis.asyncio import Redis
from structlog.testing import capture_logs

from bot.config import Settings
from bot.ops.stores import Stores
from bot.runner import serve
from cache import KeySpace, create_redis
from db.engine import create_engine, create_session_factory
from devtools.botapi import BotAPIServer
from tests.e2e.conftest import TOKEN

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

SECRET = "s3cret-Token_for-the-webhook"
PATH = "/tg/hook"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Running:
    """``serve`` in a task on its own stores, and the URL Telegram (the double) posts to."""

    def __init__(self, server: BotAPIServer, settings: Settings, stores: Stores) -> None:
        self.server = server
        self.settings = settings
        self.stores = stores
        self.stop = asyncio.Event()
        self.task: asyncio.Task[int] | None = None
        assert settings.webhook_url is not None
        self.url = settings.webhook_url

    async def start(self) -> None:
        self.task = asyncio.create_task(serve(self.settings, self.stores, self.stop))
        await self.server.wait_for(lambda: self.server.bot().webhook_url, timeout=20)

    async def finish(self) -> int:
        self.stop.set()
        assert self.task is not None
        return await asyncio.wait_for(self.task, 20)

    async def post(self, body: Any, *, secret: str | None = SECRET) -> aiohttp.ClientResponse:
        headers = {} if secret is None else {"X-Telegram-Bot-Api-Secret-Token": secret}
        async with (
            aiohttp.ClientSession() as http,
            http.post(self.url, json=body, headers=headers) as resp,
        ):
            await resp.read()
            return resp


@contextlib.asynccontextmanager
async def running(
    server: BotAPIServer, settings_factory: Any, database_url: str, redis_url: str, **over: Any
) -> AsyncIterator[Running]:
    port = free_port()
    values: dict[str, Any] = {
        "telegram_api_url": server.url,
        "webhook_url": f"http://127.0.0.1:{port}{PATH}",
        "webhook_listen": f"127.0.0.1:{port}",
        "webhook_secret": SECRET,
    }
    settings = settings_factory(**{**values, **over})
    engine = create_engine(database_url)
    stores = Stores(
        engine=engine,
        session_factory=create_session_factory(engine),
        redis=create_redis(redis_url, socket_timeout=2.0),
        database_url=database_url,
        redis_url=redis_url,
    )
    run = Running(server, settings, stores)
    try:
        await run.start()
        yield run
    finally:
        if run.task is not None and not run.task.done():
            run.stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(run.task, 20)
        await stores.redis.aclose()
        await stores.engine.dispose()


def message_update(update_id: int, user_id: int, text: str) -> dict[str, Any]:
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": 1_700_000_000,
            "chat": {"id": user_id, "type": "private", "first_name": "W"},
            "from": {"id": user_id, "is_bot": False, "first_name": "W", "language_code": "en"},
            "text": text,
            "entities": [{"type": "bot_command", "offset": 0, "length": len(text)}],
        },
    }


async def test_setwebhook_delivery_and_the_secret(
    server: BotAPIServer, settings_factory: Any, database_url: str, redis_url: str, redis: Redis,
    db_clean: None,
) -> None:  # fmt: skip
    async with running(server, settings_factory, database_url, redis_url) as run:
        (call,) = server.calls_to("setWebhook")
        assert call.params["url"] == run.url
        assert call.params["secret_token"] == SECRET
        assert call.params["max_connections"] == 40
        assert set(call.params["allowed_updates"]) >= {"message", "callback_query", "inline_query"}
        assert "chat_member" not in call.params["allowed_updates"]  # no router handles it
        assert not server.calls_to("deleteWebhook")
        info = await server.handle(TOKEN, "getWebhookInfo", {})
        assert info[1]["result"]["url"] == run.url

        # Telegram delivers a message: the bot answers through the Bot API
        server.user(501, language_code="en")
        update = server.send_text(501, "/help")
        await server.wait_for(lambda: server.last_message(501) is not None)
        await server.wait_for(lambda: any(d.ok for d in server.deliveries_of(update["update_id"])))
        assert [d.status for d in server.deliveries_of(update["update_id"])] == [200]
        handled = len(server.messages(501))

        # no secret, a wrong one, a non-ASCII one: 401, nothing handled, no dedupe key
        fresh = message_update(777_001, 502, "/help")
        for secret in (None, "wrong", "s3cret-Token_for-the-webhooK", "ключ"):
            resp = await run.post(fresh, secret=secret)
            assert resp.status == 401, secret
        assert server.messages(502) == []
        keys = KeySpace(run.settings.cache_prefix)
        assert not await redis.exists(keys.key("upd", 777_001))
        # a malformed body with the right secret: 400
        assert (await run.post({"no": "update_id"})).status == 400
        assert (await run.post([1, 2])).status == 400
        assert (await run.post({"update_id": "7"})).status == 400
        # an update aiogram cannot parse: logged, answered 200, marked done (a redelivery
        # would fail the same way)
        assert (await run.post({"update_id": 777_002, "message": 42})).status == 200
        assert await redis.get(keys.key("upd", 777_002)) == b"done"

        # a redelivery of an update already handled: 200, not handled again
        resp = await run.post(server.deliveries_of(update["update_id"]) and update)
        assert resp.status == 200
        assert len(server.messages(501)) == handled

        # polling while the webhook is set: Telegram's 409
        async with Bot(TOKEN, session=server.aiogram_session()) as other:
            with pytest.raises(TelegramConflictError, match="webhook is active"):
                await other.get_updates(timeout=0)
        assert await run.finish() == 0
    # the webhook stays set for the other instances
    assert server.bot().webhook_url == run.url


async def test_an_update_in_progress_elsewhere_gets_503_until_it_is_done(
    server: BotAPIServer, settings_factory: Any, database_url: str, redis_url: str, redis: Redis,
    db_clean: None,
) -> None:  # fmt: skip
    async with running(
        server, settings_factory, database_url, redis_url, webhook_lease_seconds=30
    ) as run:
        keys = KeySpace(run.settings.cache_prefix)
        server.user(601, language_code="en")
        # Another instance took the update's lease a moment ago and is still handling it.
        next_id = server.bot().next_update_id
        key = keys.key("upd", next_id)
        await redis.set(key, b"other-host:1:abc/123", px=30_000)
        update = server.send_text(601, "/help")
        assert update["update_id"] == next_id
        await server.wait_for(lambda: len(server.deliveries_of(next_id)) >= 3, timeout=10)
        assert {d.status for d in server.deliveries_of(next_id)} == {503}
        assert server.messages(601) == []
        assert (await server.handle(TOKEN, "getWebhookInfo", {}))[1]["result"][
            "last_error_message"
        ] == "Wrong response from the webhook: 503 Service Unavailable"
        # ... it finishes: the next retry finds the done mark, answered 200, handled once (there)
        await redis.set(key, b"done", ex=60)
        await server.wait_for(lambda: any(d.ok for d in server.deliveries_of(next_id)))
        assert server.messages(601) == []
        assert server.bot().updates == type(server.bot().updates)()  # nothing pending
        # ... while an instance that died leaves a lease that expires: then it is handled here
        server.user(602, language_code="en")
        dead_id = server.bot().next_update_id
        await redis.set(keys.key("upd", dead_id), b"dead-host:1:abc/1", px=300)
        server.send_text(602, "/help")
        await server.wait_for(lambda: any(d.ok for d in server.deliveries_of(dead_id)), timeout=10)
        assert server.last_message(602) is not None
        statuses = [d.status for d in server.deliveries_of(dead_id)]
        assert statuses[-1] == 200 and set(statuses[:-1]) <= {503}
        assert await redis.get(keys.key("upd", dead_id)) == b"done"
        assert 0 < await redis.ttl(keys.key("upd", dead_id)) <= run.settings.webhook_dedupe_ttl


async def refused(url: str) -> bool:
    """Whether a new connection to ``url`` is refused (the listener is closed)."""
    async with aiohttp.ClientSession() as http:
        try:
            async with http.post(url, data=b"{}") as resp:
                await resp.read()
        except aiohttp.ClientConnectionError:
            return True
    return False


async def test_stop_answers_the_update_in_flight_then_exits(
    server: BotAPIServer, settings_factory: Any, database_url: str, redis_url: str, redis: Redis,
    db_clean: None,
) -> None:  # fmt: skip
    # The bot calls the double through a tagged base URL, so its calls can be held.
    tagged = f"{server.url}/w1"
    async with running(
        server, settings_factory, database_url, redis_url, telegram_api_url=tagged
    ) as run:
        server.user(701, language_code="en")
        server.hold_calls("w1")
        update = server.send_text(701, "/help")
        # the handler is waiting for Telegram's answer to its sendMessage: in flight
        await server.wait_for(lambda: server.held_calls("w1") == 1)
        assert not await refused(run.url)
        with capture_logs() as logs:
            run.stop.set()
            # "stopping" is logged right before the listener closes, with no await between
            await server.wait_for(lambda: any(e["event"] == "stopping" for e in logs))
        # the listener is closed (the load balancer sends new updates elsewhere) ...
        assert await refused(run.url)
        assert not run.task.done()  # type: ignore[union-attr]
        # ... while the update in flight finishes and is answered 200
        server.release_calls("w1")
        assert await asyncio.wait_for(run.task, 20) == 0  # type: ignore[arg-type]
        assert [d.status for d in server.deliveries_of(update["update_id"])] == [200]
        assert server.last_message(701) is not None
        key = KeySpace(run.settings.cache_prefix).key("upd", update["update_id"])
        assert await redis.get(key) == b"done"
