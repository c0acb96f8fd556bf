"""Webhook mode: Telegram POSTs each update to WEBHOOK_URL; N instances behind a load balancer.

The HTTP side is aiogram's own handler (``aiogram.webhook.aiohttp_server.SimpleRequestHandler``
and ``setup_application``) with three changes, each for a reason found in its source:

* ``handle_in_background=False``. aiogram's default answers 200 at once and handles the
  update in a task: Telegram then never redelivers, so an update in flight on an instance that
  dies is lost. Answering after the handler lets a broken connection mean "not handled".
  (aiogram's ``feed_webhook_update`` still answers after 55 s and finishes in the background,
  before Telegram's 60 s timeout; handlers have deadlines far below that.)
* The secret is compared as bytes. ``SimpleRequestHandler.verify_secret`` uses
  ``secrets.compare_digest`` on ``str``, which raises TypeError for a non-ASCII header: a
  stranger's request would get a 500 instead of a 401. A request without the secret, or with
  a wrong one, gets 401 before its body is read; nothing else happens.
* ``register`` is not used: it adds an ``on_shutdown`` hook that closes the bot's HTTP
  session, which the runner still needs afterwards (the jobs' shutdown, the push).

**At most once across instances** (what the Redis dedupe promises, by ``update_id``):

1. The first delivery takes an *in-progress lease*: ``SET {prefix}:v1:upd:<update_id>
   <instance token> NX PX <WEBHOOK_LEASE_SECONDS>``, extended every third of the lease while
   the handler runs (cache.lock.RedisLock).
2. When the handler ends (however it ends: an error is answered by the error handler, and a
   retry would fail the same way), the key becomes a *done mark*: ``SET ... done EX
   <WEBHOOK_DEDUPE_TTL>``, and the answer is 200.
3. A redelivery that finds the done mark is answered 200 and not handled. One that finds a
   lease (the update is being handled right now, here or elsewhere) is answered 503 with
   ``Retry-After``: Telegram tries again later, and then finds the done mark.
4. An instance that dies mid-update stops extending its lease; Telegram redelivers (the
   connection broke), gets 503 until the lease expires (at most WEBHOOK_LEASE_SECONDS), then
   another instance handles the update from the start. So an update is never lost to a dead
   instance, and is handled to completion at most once; what the dead attempt did before it
   died (a counted view, a sent reply) may happen a second time.
5. An update cancelled at shutdown (it outlived the grace period) gives its lease back at
   once, so the redelivery is handled by another instance without waiting.
6. Redis unavailable (an error, a timeout, or the cache's circuit breaker open): the update
   is handled without the check (fail open: answering beats dropping). Telegram redelivers
   only after a failed or slow answer, so a duplicate needs both a Redis outage and a
   redelivery.

The done marks live WEBHOOK_DEDUPE_TTL (an hour): Telegram stops redelivering an update once it
got a 2xx, so a mark only has to outlive the retries of an answer that was lost on its way
back (seconds to minutes). Each costs about 90 bytes of Redis (see docs/scaling.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hmac
import secrets
from typing import TYPE_CHECKING, Any

import structlog
from aiogram import Bot, Dispatcher
from aiogram.exceptions import TelegramRetryAfter
from aiogram.webhook.aiohttp_server import SimpleRequestHandler, setup_application
from aiohttp import web

from bot.ops.health import parse_addr, serve_app
from bot.ops.instance import instance_id
from bot.ops.metrics import WEBHOOK_REQUESTS
from cache.client import REDIS_ERRORS
from cache.lock import RedisLock

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from bot.config import Settings
    from cache.breaker import CircuitBreaker
    from cache.keys import KeySpace

__all__ = [
    "SECRET_HEADER",
    "DedupeState",
    "UpdateDedupe",
    "WebhookHandler",
    "WebhookServer",
    "set_webhook",
    "start_webhook",
]

log = structlog.get_logger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
DONE = b"done"
#: setWebhook attempts at start-up (N instances starting at once may get a 429).
SET_WEBHOOK_ATTEMPTS = 5


class DedupeState(enum.Enum):
    ACQUIRED = "acquired"  # ours to handle: a lease was taken
    DONE = "done"  # handled already: answer 200, do nothing
    BUSY = "busy"  # being handled right now (a live lease): answer 503
    UNCHECKED = "unchecked"  # Redis did not answer: handle it anyway (fail open)


class UpdateDedupe:
    """The Redis side of the promise in the module docstring, one key per ``update_id``.

    ``breaker``: the cache engine's circuit breaker, shared so a Redis outage the cache has
    already noticed costs the webhook no timeout either. Every call is bounded by
    ``op_timeout``.
    """

    def __init__(
        self,
        redis: Redis,
        keyspace: KeySpace,
        *,
        lease: float,
        done_ttl: int,
        op_timeout: float = 0.5,
        breaker: CircuitBreaker | None = None,
        owner: str | None = None,
    ) -> None:
        self.redis = redis
        self.keyspace = keyspace
        self.lease = lease
        self.done_ttl = done_ttl
        self.op_timeout = op_timeout
        self.breaker = breaker
        self.owner = (owner or instance_id()).encode()

    def key(self, update_id: int) -> str:
        return self.keyspace.key("upd", update_id)

    def _failed(self, what: str, exc: BaseException, update_id: int) -> None:
        if self.breaker is not None:
            self.breaker.record_failure()
        log.warning("webhook_dedupe_unavailable", op=what, update_id=update_id, error=repr(exc))

    def _ok(self) -> None:
        if self.breaker is not None:
            self.breaker.record_success()

    async def begin(self, update_id: int) -> tuple[DedupeState, RedisLock | None]:
        """Classify a delivery; with ACQUIRED comes the lease to hold while handling it."""
        if self.breaker is not None and not self.breaker.allow():
            return DedupeState.UNCHECKED, None
        # The token names the instance (for an operator reading the key) and is unique per
        # attempt, so a second delivery to this same instance is BUSY, not "ours".
        token = self.owner + b"/" + secrets.token_hex(8).encode()
        lock = RedisLock(self.redis, self.key(update_id), lease=self.lease, token=token)
        try:
            for _ in range(2):
                if await asyncio.wait_for(lock.acquire(), self.op_timeout):
                    self._ok()
                    return DedupeState.ACQUIRED, lock
                seen = await asyncio.wait_for(self.redis.get(lock.name), self.op_timeout)
                if seen is not None:  # else: the lease expired in between; try once more
                    self._ok()
                    return (DedupeState.DONE if seen == DONE else DedupeState.BUSY), None
        except REDIS_ERRORS as exc:
            self._failed("begin", exc, update_id)
            return DedupeState.UNCHECKED, None
        return DedupeState.BUSY, None

    async def finish(self, lock: RedisLock) -> None:
        """The update was handled: the lease becomes the done mark (whoever holds the key)."""
        lock.forget()  # the lease's holder must not delete the mark on its way out
        try:
            await asyncio.wait_for(
                self.redis.set(lock.name, DONE, ex=self.done_ttl), self.op_timeout
            )
        except REDIS_ERRORS as exc:
            # The lease expires on its own; a redelivery (rare) would be handled again.
            self._failed("finish", exc, 0)


class WebhookHandler(SimpleRequestHandler):
    """aiogram's SimpleRequestHandler, answering after the handler, with the dedupe around it."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        bot: Bot,
        *,
        secret_token: str,
        dedupe: UpdateDedupe | None,
        **data: Any,
    ) -> None:
        if not secret_token:
            raise ValueError("a webhook needs a secret token")
        super().__init__(
            dispatcher, bot, handle_in_background=False, secret_token=secret_token, **data
        )
        self._secret = secret_token.encode()
        self.dedupe = dedupe
        #: requests being answered right now (a graceful stop waits for them)
        self.inflight: set[asyncio.Task[Any]] = set()

    def verify_secret(self, telegram_secret_token: str, bot: Bot) -> bool:
        """Constant-time, on bytes (any header value compares; see the module docstring)."""
        given = telegram_secret_token.encode("utf-8", "surrogateescape")
        return hmac.compare_digest(given, self._secret)

    async def handle(self, request: web.Request) -> web.Response:
        task = asyncio.current_task()
        if task is not None:
            self.inflight.add(task)
        try:
            return await self._handle_request_checked(request)
        finally:
            if task is not None:
                self.inflight.discard(task)

    async def _handle_request_checked(self, request: web.Request) -> web.Response:
        bot = await self.resolve_bot(request)
        if not self.verify_secret(request.headers.get(SECRET_HEADER, ""), bot):
            WEBHOOK_REQUESTS.labels("unauthorized").inc()
            return web.Response(text="Unauthorized", status=401)
        try:
            update = await request.json(loads=bot.session.json_loads)
            update_id = update["update_id"]
            if type(update_id) is not int:
                raise TypeError("update_id is not an integer")
        except (ValueError, TypeError, KeyError) as exc:
            WEBHOOK_REQUESTS.labels("bad_request").inc()
            log.warning("webhook_bad_request", error=repr(exc))
            return web.Response(text="Bad Request", status=400)

        state, lease = DedupeState.UNCHECKED, None
        if self.dedupe is not None:
            state, lease = await self.dedupe.begin(update_id)
        if state is DedupeState.DONE:
            WEBHOOK_REQUESTS.labels("duplicate").inc()
            log.info("webhook_duplicate", update_id=update_id)
            return web.json_response({})
        if state is DedupeState.BUSY:
            WEBHOOK_REQUESTS.labels("busy").inc()
            log.info("webhook_busy_elsewhere", update_id=update_id)
            retry = str(int(self.dedupe.lease)) if self.dedupe is not None else "1"
            return web.Response(text="In progress", status=503, headers={"Retry-After": retry})
        WEBHOOK_REQUESTS.labels("handled" if lease is not None else "unchecked").inc()
        if lease is None or self.dedupe is None:
            return await self._answer(bot, update)
        async with lease.hold(acquire=False):  # extended while it runs; released if cancelled
            response = await self._answer(bot, update)
            await self.dedupe.finish(lease)
            return response

    async def _answer(self, bot: Bot, update: dict[str, Any]) -> web.Response:
        """Handle the update; 200 however the handler ended. An exception that escaped the
        error handler (or an update aiogram cannot parse) is already logged by aiogram, and
        handling it again on Telegram's redelivery would fail the same way."""
        try:
            result: Any = await self.dispatcher.feed_webhook_update(bot, update, **self.data)
        except Exception:
            return web.json_response({})
        return web.Response(body=self._build_response_writer(bot=bot, result=result))


async def set_webhook(bot: Bot, settings: Settings, dispatcher: Dispatcher) -> list[str]:
    """setWebhook with the secret, the update types the routers use, max_connections.

    Every instance calls it at start (same values: idempotent); pending updates are kept.
    A 429 (instances starting together) is waited out. Returns the allowed update types.
    """
    if settings.webhook_url is None or settings.webhook_secret is None:
        raise ValueError("WEBHOOK_URL and WEBHOOK_SECRET are required for webhook mode")
    allowed = dispatcher.resolve_used_update_types()
    for attempt in range(1, SET_WEBHOOK_ATTEMPTS + 1):
        try:
            await bot.set_webhook(
                url=settings.webhook_url,
                secret_token=settings.webhook_secret.get_secret_value(),
                allowed_updates=allowed,
                max_connections=settings.webhook_max_connections,
                drop_pending_updates=False,
            )
            break
        except TelegramRetryAfter as exc:
            if attempt == SET_WEBHOOK_ATTEMPTS:
                raise
            await asyncio.sleep(exc.retry_after)
    log.info(
        "webhook_set",
        url=settings.webhook_url,
        allowed_updates=allowed,
        max_connections=settings.webhook_max_connections,
    )
    return allowed


class WebhookServer:
    """The aiohttp server of WEBHOOK_LISTEN: POST on WEBHOOK_URL's path, nothing else.

    Health and metrics stay on METRICS_ADDR (bot/ops/health.py), a port of their own: the
    webhook port faces the load balancer (and through it the internet), /metrics must not.
    ``stop(grace)`` stops listening at once and takes no new request on open connections (the
    load balancer sends new updates elsewhere), waits up to ``grace`` seconds for the updates
    in flight to be answered, then cancels what is left (their leases are given back).
    """

    def __init__(
        self,
        settings: Settings,
        dispatcher: Dispatcher,
        bot: Bot,
        dedupe: UpdateDedupe | None,
        **data: Any,
    ) -> None:
        if settings.webhook_secret is None:
            raise ValueError("WEBHOOK_SECRET is required for webhook mode")
        self.host, self.port = parse_addr(settings.webhook_listen)
        self.path = settings.webhook_path
        self.app = web.Application()
        self.handler = WebhookHandler(
            dispatcher,
            bot,
            secret_token=settings.webhook_secret.get_secret_value(),
            dedupe=dedupe,
            **data,
        )
        self.app.router.add_post(self.path, self.handler.handle)
        # Dispatcher start-up/shutdown observers run as in polling mode.
        setup_application(self.app, dispatcher, bot=bot, **data)
        self._runner: web.AppRunner | None = None
        self.url: str | None = None

    async def start(self) -> str:
        # shutdown_timeout: what is left after stop()'s own grace is cancelled promptly
        self._runner, base = await serve_app(self.app, self.host, self.port, shutdown_timeout=0.5)
        self.url = f"{base}{self.path}"
        log.info("webhook_server_started", url=self.url)
        return self.url

    async def stop(self, grace: float = 10.0) -> None:
        """Stop listening, let the updates in flight finish within ``grace`` s, cancel the
        rest. Safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        for site in list(runner.sites):
            await site.stop()  # no new connections
        if runner.server is not None:
            runner.server.pre_shutdown()  # no new requests on the open ones
        pending = {t for t in self.handler.inflight if not t.done()}
        if pending:
            _, pending = await asyncio.wait(pending, timeout=grace)
        if pending:
            log.warning("webhook_updates_cancelled_at_shutdown", count=len(pending))
        await runner.cleanup()
        log.info("webhook_server_stopped")


async def start_webhook(
    settings: Settings,
    bot: Bot,
    dispatcher: Dispatcher,
    *,
    redis: Redis | None,
    keyspace: KeySpace,
    breaker: CircuitBreaker | None,
) -> WebhookServer:
    """Listen on WEBHOOK_LISTEN, then setWebhook (Telegram delivers only once we listen).

    The caller stops the returned server (``stop(grace)``); the webhook itself is never
    deleted on the way out: the other instances keep serving it.
    """
    dedupe = None
    if redis is not None:
        dedupe = UpdateDedupe(
            redis,
            keyspace,
            lease=settings.webhook_lease_seconds,
            done_ttl=settings.webhook_dedupe_ttl,
            op_timeout=max(settings.redis_socket_timeout, 0.05) * 2,
            breaker=breaker,
        )
    server = WebhookServer(settings, dispatcher, bot, dedupe)
    await server.start()
    try:
        await set_webhook(bot, settings, dispatcher)
    except BaseException:
        with contextlib.suppress(Exception):
            await server.stop(0)
        raise
    return server
