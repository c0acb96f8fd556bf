"""What the jobs need, in one small dataclass the runner builds from the app's context.

Why not pass the whole AppContext: the jobs are plain functions that tests and the CLI call
with a hand-made JobDeps (a fake clock, no Bot, a counting generator), so the bundle must be
small and explicit about what is optional. ``bot`` is None in the CLI and in tests that do not
push; ``images``/``generator`` may be None where no job needs them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from bot.domain.clock import Clock, utc_now
from bot.ops.instance import instance_id
from cache import CacheAside, KeySpace
from db.repositories.context import DataContext
from db.types import HoroscopeGenerator

if TYPE_CHECKING:
    from aiogram import Bot

    from bot.domain.services.images import ImageSender

__all__ = ["JobDeps"]


@dataclass
class JobDeps:
    """Dependencies of every job. ``clock`` is wall time (aware UTC), ``monotonic`` durations."""

    settings: Settings
    cache: CacheAside
    keyspace: KeySpace
    session_factory: async_sessionmaker[AsyncSession]
    redis: Redis | None
    bot: Bot | None = None
    images: ImageSender | None = None
    generator: HoroscopeGenerator | None = None
    clock: Clock = utc_now
    monotonic: Callable[[], float] = time.monotonic
    #: this process, as named in shared records (the push's claims): bot.ops.instance
    instance: str = field(default_factory=instance_id)

    @cached_property
    def data(self) -> DataContext:
        """The repositories' context (built once: it is immutable and shared)."""
        return DataContext(
            cache=self.cache,
            keys=self.keyspace,
            session_factory=self.session_factory,
            tz=self.settings.tz,
        )

    @property
    def bot_id(self) -> int | None:
        """The bot's id: from the Bot when there is one, else from the token in Settings."""
        if self.bot is not None:
            return self.bot.id
        return self.settings.bot_id
