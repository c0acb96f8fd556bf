"""The small jobs: flush the Redis buffers into Postgres, replay deferred cache invalidations,
warm file_ids into Redis.

Each is one repository call; they live here as named jobs so the scheduler, the shutdown path
and tests call the same function. The repositories own the exactly-once hand-over of buffers
(cache/buffers.py): a flush that dies half-way is completed by the next one, on any instance.
"""

from __future__ import annotations

import structlog

from db.outbox import outbox_of
from db.repositories.users import UserRepository
from db.repositories.values import FlushResult, LastSeenFlushResult
from db.repositories.views import HoroscopeViewRepository
from jobs.deps import JobDeps

__all__ = ["flush_last_seen", "flush_views", "replay_invalidations", "warm_file_ids"]

log = structlog.get_logger(__name__)


async def flush_views(deps: JobDeps) -> FlushResult:
    """Buffered view counters (HINCRBY in Redis) -> horoscope_views, exactly once."""
    result = await HoroscopeViewRepository(deps.data).flush()
    if result.batches:
        log.info("views_flushed", batches=result.batches, rows=result.rows, views=result.views)
    return result


async def flush_last_seen(deps: JobDeps) -> LastSeenFlushResult:
    """Buffered last-seen stamps (HSET in Redis) -> users.last_seen_at, exactly once."""
    async with deps.session_factory() as session:
        # The repository opens its own transactions for the flush; this session stays unused.
        result = await UserRepository(session, deps.data).flush_last_seen()
    if result.batches:
        log.info(
            "last_seen_flushed", batches=result.batches, stamps=result.stamps, rows=result.rows
        )
    return result


async def replay_invalidations(deps: JobDeps) -> int:
    """Cache invalidations that did not reach Redis (db/outbox.py), delivered once it answers.

    Every instance runs it (no leader lock: deleting a key twice is harmless, and the process
    that can reach Redis is the one that should): its own deferred keys, and the outbox rows of
    the others and of processes that died between a commit and its DEL.
    """
    outbox = outbox_of(deps.cache)
    if outbox is None:
        return 0
    replayed = await outbox.replay()
    if replayed:
        log.info("invalidations_replayed", keys=replayed)
    return replayed


async def warm_file_ids(deps: JobDeps) -> int:
    """All of this bot's file_ids from Postgres into Redis (one query, one pipeline).

    At start-up, so the first pushes and inline answers after a deploy or a Redis restart
    send by file_id instead of asking Postgres once per picture.
    """
    from db.repositories.images import ImageAssetRepository

    bot_id = deps.bot_id
    if bot_id is None:
        log.info("warm_file_ids_skipped", reason="no bot id (no token)")
        return 0
    async with deps.session_factory() as session:
        count = await ImageAssetRepository(session, deps.data).warm(bot_id)
    log.info("file_ids_warmed", bot_id=bot_id, count=count)
    return count
