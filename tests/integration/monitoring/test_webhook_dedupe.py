"""The webhook's update dedupe (bot/ops/webhook.py) on the real Redis, and the webhook server's
shutdown with an update that outlives the grace period.

The promise under test: an update_id is handled to completion at most once while Redis
answers; a delivery finds it new (lease taken), in progress (503), or done (200, skipped);
a lease whose holder stops (dies, or is cancelled) does not block the update for ever; Redis
unavailable means "handle it anyway" and costs no timeout once the breaker is open.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import pytest
from aiogram import Bot, Dispatcher, Router
from aiogram.types import Message
from redis.asyncio import Redis

from bot.config import Settings
from bot.ops.webhook import DONE, DedupeState, UpdateDedupe, WebhookServer
from cache import KeySpace, create_redis
from cache.breaker import OPEN, CircuitBreaker

SECRET = "dedupe-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dedupe(redis: Redis, prefix: str, **kw: Any) -> UpdateDedupe:
    values: dict[str, Any] = {"lease": 5.0, "done_ttl": 600, "owner": "host-a:1:aa"}
    values.update(kw)
    return UpdateDedupe(redis, KeySpace(prefix), **values)


async def test_new_in_progress_done(redis: Redis, key_prefix: str) -> None:
    a = dedupe(redis, key_prefix)
    b = dedupe(redis, key_prefix, owner="host-b:2:bb")
    state, lease = await a.begin(1001)
    assert state is DedupeState.ACQUIRED and lease is not None
    value = await redis.get(a.key(1001))
    assert value is not None and value.startswith(b"host-a:1:aa/")
    assert 0 < await redis.pttl(a.key(1001)) <= 5000
    # a redelivery while it is being handled, to another instance or to the same one
    assert (await b.begin(1001))[0] is DedupeState.BUSY
    assert (await a.begin(1001))[0] is DedupeState.BUSY
    await a.finish(lease)
    assert await redis.get(a.key(1001)) == DONE
    assert 590 < await redis.ttl(a.key(1001)) <= 600
    assert (await b.begin(1001))[0] is DedupeState.DONE
    # the lease holder's exit after finish does not delete the done mark
    async with lease.hold(acquire=False):
        pass
    assert await redis.get(a.key(1001)) == DONE


async def test_a_lease_whose_holder_died_expires(redis: Redis, key_prefix: str) -> None:
    dead = dedupe(redis, key_prefix, lease=1.0)
    state, _ = await dead.begin(2002)  # ... and the process dies: no extension, no finish
    assert state is DedupeState.ACQUIRED
    await redis.pexpire(dead.key(2002), 1)  # the lease runs out (without waiting a second)
    async with asyncio.timeout(30):  # Redis' clock expires it; a hang guard, not a bound
        while await redis.exists(dead.key(2002)):  # noqa: ASYNC110 (state in Redis)
            await asyncio.sleep(0.001)
    alive = dedupe(redis, key_prefix, owner="host-b:2:bb")
    state, lease = await alive.begin(2002)
    assert state is DedupeState.ACQUIRED and lease is not None


async def test_redis_unavailable_fails_open_and_the_breaker_saves_the_timeouts() -> None:
    port = free_port()
    dead = create_redis(f"redis://127.0.0.1:{port}/0", socket_timeout=0.2)
    breaker = CircuitBreaker(failure_threshold=2, cooldown=60)
    d = UpdateDedupe(dead, KeySpace("x"), lease=5, done_ttl=60, breaker=breaker)
    try:
        assert (await d.begin(1)) == (DedupeState.UNCHECKED, None)
        assert (await d.begin(2)) == (DedupeState.UNCHECKED, None)
        assert breaker.state == OPEN
        # open: not even tried (a closed port answers fast; a hung Redis would not)
        calls = 0
        original = dead.set

        async def counting(*a: Any, **k: Any) -> Any:
            nonlocal calls
            calls += 1
            return await original(*a, **k)

        dead.set = counting  # type: ignore[method-assign]
        assert (await d.begin(3)) == (DedupeState.UNCHECKED, None)
        assert calls == 0
    finally:
        await dead.aclose()


class Blocking:
    """A bot whose only handler waits until released (or cancelled)."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.router = Router()

        @self.router.message()
        async def wait(message: Message) -> None:
            self.entered.set()
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise


async def test_an_update_cancelled_at_shutdown_gives_its_lease_back(
    redis: Redis, key_prefix: str
) -> None:
    port = free_port()
    settings = Settings(
        bot_token="123:abcdefghijk",
        webhook_url=f"http://127.0.0.1:{port}/hook",
        webhook_listen=f"127.0.0.1:{port}",
        webhook_secret=SECRET,
        telegram_api_url="http://127.0.0.1:1",
    )
    blocking = Blocking()
    dp = Dispatcher()
    dp.include_router(blocking.router)
    bot = Bot("123:abcdefghijk")
    d = dedupe(redis, key_prefix)
    server = WebhookServer(settings, dp, bot, d)
    await server.start()
    update = {
        "update_id": 3003,
        "message": {
            "message_id": 1,
            "date": 1_700_000_000,
            "chat": {"id": 5, "type": "private"},
            "from": {"id": 5, "is_bot": False, "first_name": "A"},
            "text": "hi",
        },
    }
    async with aiohttp.ClientSession() as http:
        post = asyncio.create_task(
            http.post(
                f"http://127.0.0.1:{port}/hook",
                json=update,
                headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
            )
        )
        await asyncio.wait_for(blocking.entered.wait(), 10)
        assert (await d.begin(3003))[0] is DedupeState.BUSY
        # shutdown: the handler outlives the 0.2 s grace and is cancelled ...
        await server.stop(grace=0.2)
        await asyncio.wait_for(blocking.cancelled.wait(), 10)
        with pytest.raises(aiohttp.ClientError):
            await post
    # ... and its lease is gone: Telegram's redelivery is handled by another instance now
    assert not await redis.exists(d.key(3003))
    await bot.session.close()
