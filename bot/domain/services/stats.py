"""The figures behind the admin /stats command.

Kept out of the handler because it talks to Postgres, to Redis (INFO memory, the view and
last-seen buffers) and to the cache metrics; the handler only formats. Every part degrades on
its own: a dead Redis turns the memory line into "unavailable", never the whole answer into an
error.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import structlog
from redis.asyncio import Redis

from bot.domain.clock import Clock, zone
from cache import CacheMetrics
from db.repositories.context import DataContext
from db.repositories.horoscopes import HoroscopeRepository
from db.repositories.users import UserRepository
from db.repositories.views import HoroscopeViewRepository
from db.types import HoroscopeGenerator, Sign

__all__ = ["Stats", "StatsService"]

log = structlog.get_logger(__name__)

#: Namespaces whose hit ratio is shown (others appear when they have lookups).
NAMESPACES = ("user", "horoscope", "fileid")


@dataclass(slots=True)
class Stats:
    date: dt.date
    views: dict[Sign, int] = field(default_factory=dict)
    users_total: int = 0
    users_today: int = 0
    push_subscribers: int = 0
    hit_ratio: dict[str, float | None] = field(default_factory=dict)
    lookups: dict[str, int] = field(default_factory=dict)
    redis_memory: dict[str, Any] | None = None
    generations_today: int = 0

    @property
    def views_total(self) -> int:
        return sum(self.views.values())


class StatsService:
    def __init__(
        self,
        data: DataContext,
        generator: HoroscopeGenerator,
        clock: Clock,
        bot_timezone: str,
        metrics: CacheMetrics,
        redis: Redis | None,
    ) -> None:
        self.data = data
        self.clock = clock
        self.bot_timezone = bot_timezone
        self.metrics = metrics
        self.redis = redis
        self.views = HoroscopeViewRepository(data)
        self.horoscopes = HoroscopeRepository(data, generator)

    async def redis_memory(self) -> dict[str, Any] | None:
        """INFO memory: used / peak / maxmemory and the eviction policy; None if unreachable."""
        if self.redis is None:
            return None
        try:
            async with asyncio.timeout(1.0):
                info = await self.redis.info("memory")
        except Exception as exc:
            log.warning("redis_info_failed", error=repr(exc))
            return None

        def get(name: str) -> Any:
            value = info.get(name)
            return value.decode() if isinstance(value, bytes) else value

        return {
            "used": get("used_memory_human"),
            "peak": get("used_memory_peak_human"),
            "max": get("maxmemory_human"),
            "policy": get("maxmemory_policy"),
        }

    def cache_ratios(self) -> tuple[dict[str, float | None], dict[str, int]]:
        snapshot = self.metrics.snapshot()
        names = [*NAMESPACES, *sorted(n for n in snapshot if n not in NAMESPACES)]
        ratios: dict[str, float | None] = {}
        lookups: dict[str, int] = {}
        for ns in names:
            counts = snapshot.get(ns, {})
            total = counts.get("hit", 0) + counts.get("negative_hit", 0) + counts.get("miss", 0)
            if total or ns in NAMESPACES:
                ratios[ns] = self.metrics.hit_ratio(ns)
                lookups[ns] = int(total)
        return ratios, lookups

    async def collect(self) -> Stats:
        now = self.clock()
        tz = zone(None, self.bot_timezone)
        local = now.astimezone(tz)
        today = local.date()
        start = dt.datetime.combine(today, dt.time(), tz)
        stats = Stats(date=today)

        async def views() -> None:
            flushed, buffered = await asyncio.gather(
                self.views.totals(today), self.views.buffered(today)
            )
            for sign in Sign:
                count = flushed.get(sign, 0) + buffered.get(sign, 0)
                if count:
                    stats.views[sign] = count

        async def users() -> None:
            async with self.data.session_factory() as session:
                repo = UserRepository(session, self.data)
                stats.users_total = await repo.count_total()
                stats.users_today = await repo.count_seen_since(start)
                stats.push_subscribers = await repo.count_push_subscribers()

        async def generations() -> None:
            stats.generations_today = await self.horoscopes.count_generated_since(start)

        async def memory() -> None:
            stats.redis_memory = await self.redis_memory()

        results = await asyncio.gather(
            views(), users(), generations(), memory(), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                log.warning("stats_part_failed", error=repr(result))
        stats.hit_ratio, stats.lookups = self.cache_ratios()
        return stats
