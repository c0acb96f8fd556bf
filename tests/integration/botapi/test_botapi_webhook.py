"""The Bot API double's webhooks: setWebhook/getWebhookInfo/deleteWebhook like Telegram, and
delivery like Telegram (secret header, retries with back-off on anything but 2xx, one chat's
updates in order, max_connections, webhook replies executed, round-robin to several bots)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest, TelegramConflictError
from aiohttp import web

from devtools.botapi import BotAPIServer

TOKEN = "424242:WEBHOOK-test-token-aaaaaaaaaaaaaaaa"

Behaviour = Callable[[dict[str, Any]], Awaitable[web.StreamResponse]]


class FakeBotServer:
    """An HTTP endpoint standing in for a bot process; records what Telegram posted."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, Any], dict[str, str]]] = []
        self.behaviour: Behaviour = self.ok
        self.app = web.Application()
        self.app.router.add_post("/hook", self._handle)
        self.runner: web.AppRunner | None = None
        self.url = ""

    @staticmethod
    async def ok(_update: dict[str, Any]) -> web.StreamResponse:
        return web.json_response({})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        update = await request.json()
        self.received.append((update, dict(request.headers)))
        return await self.behaviour(update)

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def ids(self) -> list[int]:
        return [u["update_id"] for u, _ in self.received]


@pytest.fixture
async def server() -> AsyncIterator[BotAPIServer]:
    srv = BotAPIServer(tokens=[TOKEN], webhook_retry_base=0.01, webhook_retry_cap=0.05)
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def hook() -> AsyncIterator[FakeBotServer]:
    fake = FakeBotServer()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def bot(server: BotAPIServer) -> AsyncIterator[Bot]:
    async with Bot(TOKEN, session=server.aiogram_session()) as b:
        yield b


async def test_set_get_delete_webhook_like_telegram(server: BotAPIServer, bot: Bot) -> None:
    with pytest.raises(TelegramBadRequest, match="HTTPS URL must be provided"):
        await bot.set_webhook("http://bot.example.com/hook")
    with pytest.raises(TelegramBadRequest, match="secret token contains unallowed characters"):
        await bot.set_webhook("https://bot.example.com/hook", secret_token="no spaces")
    with pytest.raises(TelegramBadRequest, match="max_connections"):
        await bot.set_webhook("https://bot.example.com/hook", max_connections=101)
    assert await bot.set_webhook(
        "https://bot.example.com/hook",
        secret_token="ok_Secret-1",
        max_connections=7,
        allowed_updates=["message", "callback_query"],
    )
    info = await bot.get_webhook_info()
    assert info.url == "https://bot.example.com/hook"
    assert info.max_connections == 7 and info.allowed_updates == ["message", "callback_query"]
    # polling while a webhook is set: Telegram's 409
    with pytest.raises(TelegramConflictError, match="can't use getUpdates method while webhook"):
        await bot.get_updates(timeout=0)
    assert await bot.delete_webhook()
    assert (await bot.get_webhook_info()).url == ""
    assert await bot.get_updates(timeout=0) == []


async def test_delivery_with_the_secret_and_retries_until_2xx(
    server: BotAPIServer, hook: FakeBotServer, bot: Bot
) -> None:
    failures = iter([web.Response(status=500), web.Response(status=503)])

    async def flaky(_update: dict[str, Any]) -> web.StreamResponse:
        return next(failures, None) or web.json_response({})

    hook.behaviour = flaky
    await bot.set_webhook(hook.url, secret_token="s3cret")
    update = server.send_text(1, "hello")
    uid = update["update_id"]
    await server.wait_for(lambda: any(d.ok for d in server.deliveries_of(uid)))
    tries = server.deliveries_of(uid)
    assert [d.status for d in tries] == [500, 503, 200]
    assert [d.attempt for d in tries] == [1, 2, 3]
    assert all(h["X-Telegram-Bot-Api-Secret-Token"] == "s3cret" for _, h in hook.received)
    assert hook.received[0][0] == update  # the update as JSON, as Telegram sends it
    info = await bot.get_webhook_info()
    assert info.pending_update_count == 0
    assert info.last_error_message == "Wrong response from the webhook: 503 Service Unavailable"
    assert info.last_error_date is not None


async def test_unreachable_webhook_is_retried_and_nothing_is_lost(
    server: BotAPIServer, hook: FakeBotServer, bot: Bot
) -> None:
    url = hook.url
    await hook.stop()  # the bot is down
    await bot.set_webhook(url)
    uid = server.send_text(2, "are you there")["update_id"]
    await server.wait_for(lambda: len(server.deliveries_of(uid)) >= 3)
    assert all(
        d.status is None and "Connection" in (d.error or "") for d in server.deliveries_of(uid)
    )
    assert (await bot.get_webhook_info()).pending_update_count == 1
    # it comes back on the same port: the update arrives
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    back = FakeBotServer()
    back.runner = web.AppRunner(back.app)
    await back.runner.setup()
    await web.TCPSite(back.runner, "127.0.0.1", port).start()
    try:
        await server.wait_for(lambda: any(d.ok for d in server.deliveries_of(uid)))
        assert back.ids() == [uid]
    finally:
        await back.stop()


async def test_one_chat_in_order_chats_in_parallel_and_max_connections(
    server: BotAPIServer, hook: FakeBotServer, bot: Bot
) -> None:
    gates: dict[int, asyncio.Event] = {}

    async def slow(update: dict[str, Any]) -> web.StreamResponse:
        gate = gates.setdefault(update["update_id"], asyncio.Event())
        await gate.wait()
        return web.json_response({})

    hook.behaviour = slow
    await bot.set_webhook(hook.url, max_connections=3)
    a1 = server.send_text(10, "a1")["update_id"]
    a2 = server.send_text(10, "a2")["update_id"]
    others = [server.send_text(uid, "x")["update_id"] for uid in (11, 12, 13, 14)]
    # three at once (max_connections), and not chat 10's second while its first is open
    await server.wait_for(lambda: len(hook.received) == 3)
    assert hook.ids() == [a1, *others[:2]]
    gates.setdefault(a1, asyncio.Event()).set()
    await server.wait_for(lambda: len(hook.received) == 4)
    assert hook.ids()[3] == a2  # next in line: chat 10's second, after its first was answered
    for uid in (a2, *others):
        gates.setdefault(uid, asyncio.Event()).set()
    await server.wait_for(lambda: len(hook.received) == 6)
    await server.wait_for(lambda: server.bot().updates == type(server.bot().updates)())


async def test_a_webhook_reply_is_executed(
    server: BotAPIServer, hook: FakeBotServer, bot: Bot
) -> None:
    async def reply(update: dict[str, Any]) -> web.StreamResponse:
        chat = update["message"]["chat"]["id"]
        return web.json_response({"method": "sendMessage", "chat_id": chat, "text": "pong"})

    hook.behaviour = reply
    await bot.set_webhook(hook.url)
    server.send_text(20, "ping")
    await server.wait_for(lambda: server.last_message(20) is not None)
    message = server.last_message(20)
    assert message is not None and message.text == "pong"


async def test_round_robin_over_several_bot_processes(server: BotAPIServer, bot: Bot) -> None:
    bots = [FakeBotServer(), FakeBotServer()]
    for b in bots:
        await b.start()
    try:
        server.route_webhooks([b.url.removesuffix("/hook") for b in bots])
        # the URL announced is the load balancer's; the double spreads the attempts
        await bot.set_webhook("https://lb.example.com/hook")
        ids = [server.send_text(30 + i, "x")["update_id"] for i in range(6)]
        await server.wait_for(lambda: sum(len(b.received) for b in bots) == 6)
        assert len(bots[0].received) == len(bots[1].received) == 3
        assert sorted(bots[0].ids() + bots[1].ids()) == ids
        assert json.dumps(bots[0].received[0][0])  # plain JSON updates
    finally:
        for b in bots:
            await b.stop()
