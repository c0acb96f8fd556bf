"""`run_playground`: what `make run` does when there is no BOT_TOKEN.

The bot itself is not special-cased at all: it gets a token and a ``TELEGRAM_API_URL`` that
point at the local double and runs exactly as in production (long polling, handlers, scheduler,
stores). Everything playground-specific lives on the double's side of the HTTP boundary, so
what a newcomer sees in the browser is the behaviour real users would get.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TextIO

from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from bot.config import Settings
from bot.ops.metrics import REGISTRY
from devtools.botapi.server import BotAPIServer
from devtools.playground.web import Playground, attach

__all__ = ["PLAYGROUND_TOKEN", "PlaygroundHandle", "banner", "open_playground", "run_playground"]

#: Fixed so that file_ids stored in Postgres/Redis by one playground run stay valid for the bot
#: id of the next (file_ids belong to a bot). It authorises nothing outside this machine.
PLAYGROUND_TOKEN = "1000001:PLAYGROUND-local-token-not-secret-000000"
PLAYGROUND_BOT_USERNAME = "horoscope_playground_bot"
PLAYGROUND_BOT_NAME = "Horoscope Bot"

RunBot = Callable[[Settings], Awaitable[int]]


@dataclass(frozen=True)
class PlaygroundHandle:
    server: BotAPIServer
    playground: Playground
    page_url: str  # what a person opens
    api_url: str  # what the bot uses as TELEGRAM_API_URL (same listener)
    token: str


def _split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def _connect_host(host: str) -> str:
    """A wildcard listen address is not something a client can connect to."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


@contextlib.asynccontextmanager
async def open_playground(
    addr: str,
    *,
    token: str = PLAYGROUND_TOKEN,
    registries: Iterable[CollectorRegistry] | None = None,
) -> AsyncIterator[PlaygroundHandle]:
    """Start the double with the web routes on ``addr`` (port 0: any free port), stop it after."""
    server = BotAPIServer(auto_register=True)
    # Registered up front (not on the bot's first call) so the page can act as users and show
    # the bot's name before the bot process has finished opening its stores.
    server.add_bot(token, username=PLAYGROUND_BOT_USERNAME, first_name=PLAYGROUND_BOT_NAME)
    if registries is None:
        # build_app puts the cache engine's metrics on the bot's registry too: one to read.
        registries = (REGISTRY,)
    playground = attach(server, registries=registries)
    host, port = _split_addr(addr)
    try:
        await server.start(host, port)
    except OSError as exc:
        raise RuntimeError(
            f"cannot listen on PLAYGROUND_ADDR={addr} ({exc.strerror}); "
            f"set PLAYGROUND_ADDR=127.0.0.1:<another port>"
        ) from None
    assert server.url is not None
    bound_port = int(server.url.rsplit(":", 1)[1])
    base = f"http://{_connect_host(host)}:{bound_port}"
    try:
        yield PlaygroundHandle(
            server=server, playground=playground, page_url=f"{base}/", api_url=base, token=token
        )
    finally:
        await server.stop()


def banner(handle: PlaygroundHandle, settings: Settings) -> str:
    """The start-up text: where to click, where the stores are, how to go real."""
    data_dir = settings.data_dir
    postgres = (
        "DATABASE_URL (from your environment)"
        if settings.database_url
        else f"embedded, data in {data_dir}/ (its URL is logged as stores_opened)"
    )
    redis = (
        "REDIS_URL (from your environment)"
        if settings.redis_url
        else f"embedded Valkey, data in {data_dir}/ (its URL is logged as stores_opened)"
    )
    metrics = f"http://{settings.metrics_addr}/metrics" if settings.metrics_addr else "off"
    lines = [
        "",
        "Horoscope bot playground: no BOT_TOKEN, so a local Bot API stands in for Telegram.",
        f"  Chat with the bot:  {handle.page_url}",
        f"  Local Bot API:      {handle.api_url}/bot<token>/<method> (the bot polls it)",
        f"  Postgres:           {postgres}",
        f"  Redis:              {redis}",
        f"  Metrics:            {metrics}",
        "  Real Telegram:      BOT_TOKEN=123456:ABC... make run",
        "",
    ]
    return "\n".join(lines)


async def run_playground(
    settings: Settings,
    run_bot: RunBot,
    *,
    out: TextIO | None = None,
    on_ready: Callable[[PlaygroundHandle], None] | None = None,
) -> int:
    """Serve the playground on PLAYGROUND_ADDR and run the real bot against it until it returns.

    ``run_bot`` is the runner's "run the bot with these Settings" (it owns stores, signals and
    shutdown); it gets the playground token and the double's URL and nothing else changes.
    ``on_ready`` (tests) receives the handle once the page is being served.
    """
    async with open_playground(settings.playground_addr) as handle:
        print(banner(handle, settings), file=out or sys.stdout, flush=True)
        if on_ready is not None:
            on_ready(handle)
        bot_settings = settings.model_copy(
            update={"bot_token": SecretStr(handle.token), "telegram_api_url": handle.api_url}
        )
        return await run_bot(bot_settings)
