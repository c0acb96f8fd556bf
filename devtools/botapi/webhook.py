"""Telegram's side of a webhook: the double POSTs a bot's updates to its URL and retries.

What a bot can observe of Telegram's delivery, and what this reproduces:

* Each update is POSTed as JSON to the webhook URL, with ``X-Telegram-Bot-Api-Secret-Token``
  when setWebhook was given a ``secret_token``.
* At most ``max_connections`` deliveries at once; updates of one chat one after another (the
  next waits until the previous one was acknowledged), different chats in parallel.
* Anything but a 2xx (an error status, a refused or broken connection, no answer within the
  timeout: Telegram's is 60 s) is an error: recorded in getWebhookInfo's
  ``last_error_date``/``last_error_message``, and the same update is delivered again after a
  back-off that doubles per attempt, as long as the webhook is set.
* A 2xx answer may carry a Bot API call (a webhook reply: JSON with ``method``, or a multipart
  form, which aiogram sends when a handler returns a method); it is executed like a request.

``route`` is the load balancer in front of several bot processes: each attempt may go to
another base URL (round-robin), keeping the webhook URL's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp

from devtools.botapi.models import FakeBot, WebhookDelivery

if TYPE_CHECKING:
    from devtools.botapi.state import BotAPIState, FilePart

__all__ = ["WebhookDeliverer", "round_robin"]

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


def round_robin(targets: list[str]) -> Callable[[str], str]:
    """A router sending each attempt to the next of ``targets`` (``http://host:port`` bases),
    keeping the path and query of the webhook URL."""
    bases = [urllib.parse.urlsplit(t) for t in targets]
    state = {"next": 0}

    def route(url: str) -> str:
        base = bases[state["next"] % len(bases)]
        state["next"] += 1
        return urllib.parse.urlsplit(url)._replace(scheme=base.scheme, netloc=base.netloc).geturl()

    return route


def _chat_of(update: dict[str, Any]) -> int | None:
    """The chat an update belongs to (Telegram keeps one chat's updates in order)."""
    for kind, payload in update.items():
        if kind == "update_id" or not isinstance(payload, dict):
            continue
        chat = payload.get("chat") or (payload.get("message") or {}).get("chat")
        if isinstance(chat, dict) and isinstance(chat.get("id"), int):
            return int(chat["id"])
        sender = payload.get("from")
        if isinstance(sender, dict) and isinstance(sender.get("id"), int):
            return int(sender["id"])
    return None


class WebhookDeliverer:
    """Delivers one bot's pending updates to its webhook until stopped."""

    def __init__(
        self,
        state: BotAPIState,
        bot: FakeBot,
        session: aiohttp.ClientSession,
        *,
        route: Callable[[str], str] | None,
        retry_base: float,
        retry_cap: float,
        timeout: float,
    ) -> None:
        self.state = state
        self.bot = bot
        self.session = session
        self.route = route
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.timeout = timeout
        self._task: asyncio.Task[None] | None = None
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._chats: set[int] = set()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if not self.running:
            self._task = asyncio.create_task(self._run(), name=f"webhook:{self.bot.id}")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._inflight.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None
        self._inflight.clear()
        self._chats.clear()

    async def _run(self) -> None:
        while self.bot.webhook_url:
            wake = self.bot.wakeup
            self._start_ready()
            waiter = asyncio.ensure_future(wake.wait())
            try:
                await asyncio.wait(
                    {waiter, *self._inflight.values()}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                waiter.cancel()

    def _start_ready(self) -> None:
        room = self.bot.webhook_max_connections - len(self._inflight)
        blocked: set[int] = set(self._chats)
        for update in self.state._deliverable(self.bot, len(self.bot.updates) or 1):
            if room <= 0:
                return
            update_id = int(update["update_id"])
            if update_id in self._inflight:
                continue
            chat = _chat_of(update)
            if chat is not None:
                if chat in blocked:
                    continue
                blocked.add(chat)
                self._chats.add(chat)
            self._inflight[update_id] = asyncio.create_task(self._deliver(update, chat))
            room -= 1

    async def _deliver(self, update: dict[str, Any], chat: int | None) -> None:
        try:
            await self._attempts(update)
        finally:
            self._inflight.pop(int(update["update_id"]), None)
            if chat is not None:
                self._chats.discard(chat)

    async def _attempts(self, update: dict[str, Any]) -> None:
        update_id = int(update["update_id"])
        body = json.dumps(update, ensure_ascii=False).encode()
        attempt = 0
        while self.bot.webhook_url:
            attempt += 1
            url = self.bot.webhook_url
            if self.route is not None:
                url = self.route(url)
            record = WebhookDelivery(update_id, url, attempt, time.monotonic())
            headers = {"Content-Type": "application/json"}
            if self.bot.webhook_secret:
                headers[SECRET_HEADER] = self.bot.webhook_secret
            try:
                async with self.session.post(
                    url,
                    data=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=self.timeout),
                ) as resp:
                    record.status = resp.status
                    if 200 <= resp.status < 300:
                        await self._reply(resp)
                    else:
                        record.error = (
                            f"Wrong response from the webhook: {resp.status} {resp.reason}"
                        )
            except TimeoutError:
                record.error = "Read timeout expired"
            except aiohttp.ClientError as exc:
                record.error = f"Connection failed: {type(exc).__name__}"
            record.finished = time.monotonic()
            if record.ok:
                with contextlib.suppress(ValueError):
                    self.bot.updates.remove(update)
                self.state.record_delivery(record)
                return
            self.bot.webhook_last_error_date = int(time.time())
            self.bot.webhook_last_error_message = record.error
            self.state.record_delivery(record)
            await asyncio.sleep(min(self.retry_cap, self.retry_base * 2 ** (attempt - 1)))

    async def _reply(self, resp: aiohttp.ClientResponse) -> None:
        """Run a Bot API call carried by a 2xx answer (a webhook reply), like Telegram does."""
        params: dict[str, Any] = {}
        files: dict[str, FilePart] = {}
        if resp.content_type == "application/json":
            try:
                data = await resp.json()
            except (ValueError, aiohttp.ContentTypeError):
                return
            if isinstance(data, dict):
                params = data
        elif resp.content_type.startswith("multipart/"):
            reader = aiohttp.MultipartReader.from_response(resp)
            async for part in reader:
                if not isinstance(part, aiohttp.BodyPartReader) or part.name is None:
                    continue
                if part.filename:
                    files[part.name] = (part.filename, await part.read())
                else:
                    params[part.name] = await part.text()
        method = params.pop("method", None)
        if isinstance(method, str) and method:
            await self.state.handle(self.bot.token, method, params, files)
