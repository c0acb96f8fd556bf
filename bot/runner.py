"""The `run` command: open the stores, then serve until SIGINT/SIGTERM.

Placeholder until the Telegram side lands: it connects to both stores, logs that it is ready
and waits for a signal. It does not pretend to serve Telegram.
"""

from __future__ import annotations

import asyncio
import signal

import structlog
from sqlalchemy import text

from bot.config import Settings
from bot.stores import open_stores

log = structlog.get_logger(__name__)


async def run(settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with open_stores(settings) as stores:
        async with stores.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        await stores.redis.ping()
        log.info("ready", note="stores answer; Telegram handlers are not wired yet")
        await stop.wait()
        log.info("stopping")
    return 0
