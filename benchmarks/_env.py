"""Benchmark plumbing shared by the bot-level benchmarks.

* a database of our own on the Postgres server (created, migrated, dropped: tests/conftest.py's
  approach) and a Redis key prefix of our own (deleted with SCAN + DEL, never FLUSHDB);
* counters: SQL statements (SQLAlchemy ``before_cursor_execute``); Redis commands and round
  trips are counted on the client's connections (devtools/traffic.py);
* a Bot session that answers locally (no HTTP): it prepares the request like aiogram's aiohttp
  session does, then parses a plausible JSON reply through ``check_response``;
* a closed port and a "hung" Redis (accepts connections, never answers).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, cast

from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.base import BaseSession
from aiogram.enums import ParseMode
from aiogram.methods import TelegramMethod
from aiogram.methods.base import TelegramType
from aiogram.types import Update
from redis.asyncio import Redis
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.config import Settings
from bot.ops.stores import bot_engine as bot_engine  # the bot's own engine: pool, timeouts, guard
from cache import create_redis
from db.testing import temporary_database
from db.testing import truncate_all as truncate_all

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
TOKEN = "700000001:BENCH-local-session-token-aaaaaaaaaaaa"
BOT_ID = 700000001


def redis_url() -> str:
    return os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL


def server_database_url() -> str:
    url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    return str(make_url(url).set(drivername="postgresql+asyncpg").render_as_string(False))


def new_prefix() -> str:
    return f"bench{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------- stores


@contextlib.asynccontextmanager
async def bench_database(server_url: str | None = None) -> AsyncIterator[str]:
    """A uniquely named database on the server, migrated to head, dropped at the end."""
    async with temporary_database(
        server_url or server_database_url(), "horo_bench", drop_retry_delay=0.5
    ) as url:
        yield url


async def database_or_bench(stack: contextlib.AsyncExitStack, database_url: str | None) -> str:
    """``database_url`` when the caller brings one, else a ``bench_database`` kept by ``stack``."""
    if database_url is not None:
        return database_url
    return await stack.enter_async_context(bench_database())


def bot_redis(url: str, settings: Settings) -> Redis:
    """A Redis client with the bot's timeouts and pool size."""
    return create_redis(
        url,
        socket_timeout=settings.redis_socket_timeout,
        socket_connect_timeout=settings.redis_socket_timeout,
        max_connections=settings.redis_max_connections,
    )


async def delete_prefix(client: Redis, prefix: str) -> int:
    """Delete every key of ``prefix`` (SCAN + DEL in batches); returns how many."""
    deleted = 0
    batch: list[bytes] = []
    async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += int(await client.delete(*batch))
            batch.clear()
    if batch:
        deleted += int(await client.delete(*batch))
    return deleted


async def server_versions(redis: Redis, engine: AsyncEngine) -> dict[str, str]:
    from sqlalchemy import text

    info = await redis.info("server")
    out = {"redis": str(info.get("redis_version") or info.get("valkey_version") or "?")}
    async with engine.connect() as conn:
        out["postgres"] = str(await conn.scalar(text("SHOW server_version")))
    return out


def bench_settings(prefix: str, **overrides: Any) -> Settings:
    """Settings for a benchmark app: no .env, our prefix, a throttle refilling every 1 ms (the
    benchmarks replay a user every few hundred ms: a real person is not that fast; the
    throttle still runs, so its script is part of what is measured)."""
    values: dict[str, Any] = {
        "bot_token": TOKEN,
        "cache_prefix": prefix,
        "throttle_rate": 0.001,
        "scheduler_enabled": False,
        "run_migrations": False,
        "log_format": "console",
        "log_level": "WARNING",
        "metrics_addr": "",
        "playground_addr": "",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@dataclass
class BenchStores:
    """What build_app needs (bot.app.StoresLike): any Redis client on one session factory."""

    session_factory: Any
    redis: Redis


# ---------------------------------------------------------------- counters


class SQLCounter:
    """Counts statements an engine sends (``before_cursor_execute``); a context manager."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.count = 0
        self.kinds: Counter[str] = Counter()

    def _on_execute(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.count += 1
        self.kinds[statement.lstrip().split(None, 1)[0].upper()] += 1

    def reset(self) -> None:
        self.count = 0
        self.kinds.clear()

    def __enter__(self) -> SQLCounter:
        event.listen(self.engine.sync_engine, "before_cursor_execute", self._on_execute)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine.sync_engine, "before_cursor_execute", self._on_execute)


class LocalSession(BaseSession):
    """Answers Bot API calls in-process: the request is prepared as aiogram's aiohttp session
    prepares it (``model_dump`` + ``prepare_value``), the reply is JSON parsed and validated by
    ``check_response``; only the HTTP round trip is missing. Counts calls per method."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()
        #: photos sent as a new file (not by file_id)
        self.uploads = 0
        self._message_ids = itertools.count(1)

    def reset(self) -> None:
        self.calls.clear()
        self.uploads = 0

    def _result(self, bot: Bot, method: TelegramMethod[Any], fields: dict[str, Any]) -> Any:
        name = method.__api_method__
        if name not in {"sendPhoto", "sendMessage", "editMessageMedia", "editMessageText"}:
            return True
        chat_id = fields.get("chat_id") or 1
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": {"id": int(chat_id), "type": "private", "first_name": "Bench"},
            "from": {"id": bot.id, "is_bot": True, "first_name": "Horoscope bot"},
        }
        if name in {"sendPhoto", "editMessageMedia"}:
            photo = fields.get("photo")
            if not isinstance(photo, str) or photo.startswith("attach://"):
                self.uploads += 1
                seed = hashlib.sha256(str(photo).encode()).hexdigest()
                photo = "AgACAgIAAxkDAAI" + seed[:64]  # ~80 chars, like Telegram's
            # ascending sizes, as Telegram sends them; the largest carries the file_id
            message["photo"] = [
                {
                    "file_id": photo if width == 1024 else f"{photo}-{width}",
                    "file_unique_id": f"AQAD{photo[-12:]}{width}",
                    "width": width,
                    "height": width,
                    "file_size": width * 40,
                }
                for width in (90, 320, 1024)
            ]
            if fields.get("caption"):
                message["caption"] = fields["caption"]
        else:
            message["text"] = fields.get("text") or "…"
        return message

    async def make_request(
        self,
        bot: Bot,
        method: TelegramMethod[TelegramType],
        timeout: int | None = None,  # noqa: ASYNC109
    ) -> TelegramType:
        files: dict[str, Any] = {}
        fields: dict[str, Any] = {}
        for key, value in method.model_dump(warnings=False).items():
            prepared = self.prepare_value(value, bot=bot, files=files)
            if prepared:
                fields[key] = prepared
        self.calls[method.__api_method__] += 1
        content = json.dumps({"ok": True, "result": self._result(bot, method, fields)})
        response = self.check_response(bot=bot, method=method, status_code=200, content=content)
        return cast(TelegramType, response.result)

    async def stream_content(
        self,
        url: str,
        headers: dict[str, Any] | None = None,
        timeout: int = 30,  # noqa: ASYNC109
        chunk_size: int = 65536,
        raise_for_status: bool = True,
    ) -> AsyncGenerator[bytes, None]:
        raise NotImplementedError
        yield b""  # pragma: no cover

    async def close(self) -> None:
        return None


def local_bot(session: LocalSession | None = None) -> tuple[Bot, LocalSession]:
    session = session or LocalSession()
    bot = Bot(token=TOKEN, session=session, default=DefaultBotProperties(parse_mode=ParseMode.HTML))
    return bot, session


def tg_user(user_id: int, lang: str) -> dict[str, Any]:
    """The Telegram profile of benchmark user ``user_id`` (what the users table also holds)."""
    return {
        "id": user_id,
        "is_bot": False,
        "first_name": f"User{user_id}",
        "last_name": None,
        "username": f"bench_user_{user_id}",
        "language_code": lang,
        "is_premium": False,
    }


_update_ids = itertools.count(1)


def command_update(bot: Bot, user_id: int, lang: str, text: str = "/today") -> Update:
    """A private-chat command from benchmark user ``user_id``, parsed (and mounted on ``bot``)
    the way polling parses Telegram's JSON."""
    profile = {k: v for k, v in tg_user(user_id, lang).items() if v is not None}
    n = next(_update_ids)
    raw = {
        "update_id": n,
        "message": {
            "message_id": n,
            "date": int(time.time()),
            "chat": {"id": user_id, "type": "private", "first_name": profile["first_name"]},
            "from": profile,
            "text": text,
            "entities": [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}],
        },
    }
    return Update.model_validate(raw, context={"bot": bot})


# ---------------------------------------------------------------- broken Redis


def free_port() -> int:
    """A port nobody listens on (bound, read, released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def hung_redis() -> AsyncIterator[str]:
    """A TCP listener that accepts connections and never answers: the URL of a "hung" Redis."""
    writers: list[asyncio.StreamWriter] = []

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(Exception):
            while await reader.read(65536):  # swallow whatever is sent, answer nothing
                pass

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.close()
        for w in writers:
            w.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """WARNING and above only: the bot logs a line per upload, per throttle..."""
    from bot.ops.logs import configure_logging

    configure_logging("WARNING", "console")
    yield
