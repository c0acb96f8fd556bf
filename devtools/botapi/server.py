"""HTTP front of the Bot API double: ``{base}/bot{token}/{method}`` and file downloads.

aiogram's real client talks to it through ``AiohttpSession(api=TelegramAPIServer.from_base(url))``
so end-to-end tests exercise the same request encoding, response decoding and exception mapping
as production. The server runs in the caller's event loop, so tests and the playground drive the
in-process state (:class:`~devtools.botapi.state.BotAPIState`, which this class extends) directly.

A web UI adds its own routes to :attr:`BotAPIServer.app` before :meth:`BotAPIServer.start` and
streams :meth:`~devtools.botapi.state.BotAPIState.subscribe` events to the browser.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from devtools.botapi.core import ConflictPolicy, FilePart
from devtools.botapi.models import APIError, FakeBot
from devtools.botapi.state import BotAPIState
from devtools.botapi.webhook import WebhookDeliverer, round_robin

if TYPE_CHECKING:
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer

__all__ = ["BOTAPI_KEY", "BotAPIServer"]

MAX_REQUEST_SIZE = 50 * 1024 * 1024  # Telegram's upload limit for bots

# Lets a route added by the playground find the double: request.app[BOTAPI_KEY].
BOTAPI_KEY: web.AppKey[BotAPIServer] = web.AppKey("botapi")


class BotAPIServer(BotAPIState):
    """A local Telegram Bot API: start it, point aiogram at :attr:`url`, drive it from Python."""

    def __init__(
        self,
        *,
        tokens: tuple[str, ...] | list[str] = (),
        conflict_policy: ConflictPolicy = "reject_new",
        auto_register: bool = False,
        webhook_retry_base: float = 0.05,
        webhook_retry_cap: float = 1.0,
        webhook_timeout: float = 60.0,
    ) -> None:
        super().__init__(
            tokens=tokens, conflict_policy=conflict_policy, auto_register=auto_register
        )
        self.app = web.Application(client_max_size=MAX_REQUEST_SIZE)
        self.app[BOTAPI_KEY] = self
        self.app.router.add_route("*", "/bot{token}/{method}", self._api_handler)
        self.app.router.add_get("/file/bot{token}/{path:.+}", self._file_handler)
        # A client whose base URL ends in /<tag> (one of several bot processes): same API.
        self.app.router.add_route("*", "/{tag}/bot{token}/{method}", self._api_handler)
        self._runner: web.AppRunner | None = None
        self.url: str | None = None
        #: Telegram's webhook retries: the back-off doubles from ``base`` up to ``cap`` (real
        #: Telegram waits longer; tests want it short), and an answer may take ``timeout``.
        self.webhook_retry = (webhook_retry_base, webhook_retry_cap, webhook_timeout)
        self._deliverers: dict[int, WebhookDeliverer] = {}
        self._webhook_session: aiohttp.ClientSession | None = None
        self._webhook_route: Callable[[str], str] | None = None
        self._background: set[asyncio.Task[None]] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen (port 0 = any free port) and return the base URL, e.g. http://127.0.0.1:8081."""
        if self._runner is not None:
            raise RuntimeError("BotAPIServer is already running")
        # handler_cancellation: a poller that disconnects must free its getUpdates slot at once,
        # otherwise its successor would get a spurious 409.
        runner = web.AppRunner(
            self.app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        address = runner.addresses[0]
        self.url = f"http://{host}:{address[1]}"
        return self.url

    async def stop(self) -> None:
        """Answer pending long polls, stop webhook deliveries and shut the listener down; state
        stays inspectable."""
        self.release_polls()
        for tag in list(self._held_tags):
            self.release_calls(tag)
        deliverers, self._deliverers = list(self._deliverers.values()), {}
        for deliverer in deliverers:
            await deliverer.stop()
        if self._webhook_session is not None:
            session, self._webhook_session = self._webhook_session, None
            await session.close()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> BotAPIServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ webhooks

    def route_webhooks(self, targets: list[str] | None) -> None:
        """Act as the load balancer in front of several bot processes: each delivery attempt
        goes to the next of ``targets`` (``http://host:port``), round-robin; None: to the URL
        itself."""
        self._webhook_route = round_robin(targets) if targets else None
        for deliverer in self._deliverers.values():
            deliverer.route = self._webhook_route

    def _webhook_changed(self, bot: FakeBot) -> None:
        deliverer = self._deliverers.get(bot.id)
        if not bot.webhook_url:
            if deliverer is not None:
                del self._deliverers[bot.id]
                task = asyncio.ensure_future(deliverer.stop())
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            return
        if deliverer is None:
            if self._webhook_session is None:
                # No connection cap here: each bot's max_connections is the cap.
                self._webhook_session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=0)
                )
            base, cap, timeout = self.webhook_retry
            deliverer = WebhookDeliverer(
                self,
                bot,
                self._webhook_session,
                route=self._webhook_route,
                retry_base=base,
                retry_cap=cap,
                timeout=timeout,
            )
            self._deliverers[bot.id] = deliverer
        deliverer.start()

    # ------------------------------------------------------------------ aiogram helpers

    def api_server(self) -> TelegramAPIServer:
        """The aiogram ``TelegramAPIServer`` for this double (requires :meth:`start`)."""
        from aiogram.client.telegram import TelegramAPIServer

        if self.url is None:
            raise RuntimeError("BotAPIServer is not started")
        return TelegramAPIServer.from_base(self.url)

    def aiogram_session(self, **kwargs: Any) -> AiohttpSession:
        """A real aiogram HTTP session aimed at this double."""
        from aiogram.client.session.aiohttp import AiohttpSession

        return AiohttpSession(api=self.api_server(), **kwargs)

    # ------------------------------------------------------------------ HTTP handlers

    async def _api_handler(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        method = request.match_info["method"]
        try:
            params, files = await self._read_params(request)
        except APIError as err:
            return web.json_response(err.to_json(), status=err.error_code)
        tag = request.match_info.get("tag", "")
        status, body = await self.handle(token, method, params, files, tag=tag)
        return web.json_response(body, status=status, dumps=_dumps)

    @staticmethod
    async def _read_params(request: web.Request) -> tuple[dict[str, Any], dict[str, FilePart]]:
        params: dict[str, Any] = dict(request.query)
        files: dict[str, FilePart] = {}
        if request.method != "POST" or not request.can_read_body:
            return params, files
        ctype = request.content_type
        if ctype == "application/json":
            try:
                body = await request.json()
            except ValueError:
                raise APIError(400, "Bad Request: can't parse JSON body") from None
            if not isinstance(body, dict):
                raise APIError(400, "Bad Request: JSON body must be an object")
            params.update(body)
            return params, files
        if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, web.FileField):
                    files[key] = (value.filename or key, value.file.read())
                else:
                    params[key] = value
        return params, files

    async def _file_handler(self, request: web.Request) -> web.StreamResponse:
        try:
            stored = self.file_by_path(request.match_info["token"], request.match_info["path"])
        except APIError as err:
            return web.json_response(err.to_json(), status=err.error_code)
        if stored is None or stored.data is None:
            return web.json_response(
                {"ok": False, "error_code": 404, "description": "Not Found"}, status=404
            )
        ctype = mimetypes.guess_type(stored.file_path)[0] or "application/octet-stream"
        return web.Response(body=stored.data, content_type=ctype)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)
