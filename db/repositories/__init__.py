"""Repositories: each says WHAT to load, under which key and for how long; the cache engine
(cache/) does the Redis -> Postgres -> source dance once for all of them.

Per update::

    repos = Repositories(session, ctx, generator)   # cheap: no I/O, nothing registered
    user, created = await repos.users.get_or_create_from_telegram(event.from_user)
    text = await repos.horoscopes.get_or_generate(sign, today, lang, count_view=True)

Methods never commit; the unit of work (db/unit_of_work.py) commits and then deletes the cache
entries the transaction made stale.
"""

from __future__ import annotations

from functools import cached_property

from sqlalchemy.ext.asyncio import AsyncSession

from db.repositories.context import DataContext
from db.repositories.horoscopes import HoroscopeRepository
from db.repositories.images import ImageAssetRepository, SessionRequiredError
from db.repositories.users import UserNotFoundError, UserRepository, validate_timezone
from db.repositories.values import (
    FileRef,
    FlushResult,
    HoroscopeData,
    LastSeenFlushResult,
    PushTarget,
    TelegramUserLike,
    UserData,
)
from db.repositories.views import HoroscopeViewRepository
from db.types import HoroscopeGenerator

__all__ = [
    "DataContext",
    "FileRef",
    "FlushResult",
    "HoroscopeData",
    "HoroscopeRepository",
    "HoroscopeViewRepository",
    "ImageAssetRepository",
    "LastSeenFlushResult",
    "PushTarget",
    "Repositories",
    "SessionRequiredError",
    "TelegramUserLike",
    "UserData",
    "UserNotFoundError",
    "UserRepository",
    "validate_timezone",
]


class Repositories:
    """All repositories of one unit of work, each built on first use."""

    def __init__(
        self, session: AsyncSession, ctx: DataContext, generator: HoroscopeGenerator
    ) -> None:
        self.session = session
        self.ctx = ctx
        self._generator = generator

    @cached_property
    def users(self) -> UserRepository:
        return UserRepository(self.session, self.ctx)

    @cached_property
    def images(self) -> ImageAssetRepository:
        return ImageAssetRepository(self.session, self.ctx)

    @cached_property
    def horoscopes(self) -> HoroscopeRepository:
        return HoroscopeRepository(self.ctx, self._generator)

    @cached_property
    def views(self) -> HoroscopeViewRepository:
        return HoroscopeViewRepository(self.ctx)
