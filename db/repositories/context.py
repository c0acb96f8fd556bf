"""What every repository needs, bundled so a handler can build repositories per update for free.

The context is built once at start-up (one CacheAside, one KeySpace, one session factory, the
bot's zone); a repository is then just this plus the update's unit-of-work session.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cache import CacheAside, KeySpace
from db.outbox import install_outbox

__all__ = ["DataContext"]


@dataclass(frozen=True, slots=True)
class DataContext:
    """Shared, immutable dependencies of the repositories.

    ``session_factory`` is for cache loaders and background flushes only: a single-flight load
    is shared by concurrent updates and may outlive the caller that started it, so it must not
    borrow that caller's unit-of-work session. ``tz`` is the bot's zone, used for "today" and
    for users without a zone of their own.
    """

    cache: CacheAside
    keys: KeySpace
    session_factory: async_sessionmaker[AsyncSession]
    tz: ZoneInfo

    def __post_init__(self) -> None:
        # Every context on a real cache and database records its invalidations durably
        # (db/outbox.py), whoever builds it: the app, the jobs, a benchmark, a test.
        install_outbox(self.cache, self.session_factory)

    def today(self, now: dt.datetime | None = None) -> dt.date:
        """Today's date in the bot's zone (never the server clock's local date)."""
        return (now or dt.datetime.now(dt.UTC)).astimezone(self.tz).date()
