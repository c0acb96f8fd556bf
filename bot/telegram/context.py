"""What handlers and middlewares receive as ``app``: the dependencies built once per bot.

It lives here, below the handlers and above the services, and not in the app factory that
fills it (bot/app.py): handlers import this module, and the factory imports the handlers, so
keeping the two apart is what keeps the import graph one-way (see the import contracts in
pyproject.toml).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from bot.domain.clock import Clock, utc_now
from bot.domain.services.horoscope import HoroscopeService
from bot.domain.services.images import ImageSender, RepositoryFileIds
from bot.domain.services.stats import StatsService
from bot.domain.services.throttle import Throttle
from cache import CacheAside, KeySpace
from db.repositories.context import DataContext
from db.types import HoroscopeGenerator

__all__ = ["AppContext"]


@dataclass
class AppContext:
    """Everything a handler may need, built once per app.

    ``now`` is the clock (aware UTC): "today" everywhere derives from it, and tests pin it.
    ``errors`` counts updates that ended in the error handler with an unexpected exception.
    """

    settings: Settings
    cache: CacheAside
    keyspace: KeySpace
    session_factory: async_sessionmaker[AsyncSession]
    data: DataContext
    generator: HoroscopeGenerator
    images: ImageSender
    file_ids: RepositoryFileIds
    horoscopes: HoroscopeService
    stats: StatsService
    throttle: Throttle
    redis: Redis | None
    now: Clock = utc_now
    errors: int = 0
    #: picks the welcome picture; tests seed it
    rng: random.Random = field(default_factory=random.Random)
    #: tasks handling an update right now (the runner waits for them at shutdown)
    inflight: set[asyncio.Task[Any]] = field(default_factory=set)

    async def wait_inflight(self, timeout: float) -> int:  # noqa: ASYNC109
        """Wait up to ``timeout`` s for running handlers; returns how many did not finish."""
        tasks = {t for t in self.inflight if not t.done() and t is not asyncio.current_task()}
        if not tasks:
            return 0
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        return len(pending)
