"""The one way a write ends: commit, then delete the cache entries the transaction made stale.

Every writer uses this (the per-update middleware, the push job, the error handler, the image
sender's file_id store, tests): "commit, then flush invalidations" is written once. The flush
is what cache/invalidation.py does after a commit: the keys recorded with
``cache.invalidate_after_commit`` (and, through the invalidation outbox, kept durably in the
same transaction: db/outbox.py) are deleted in Redis, confirmed, or kept for replay.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cache import flush_invalidations

__all__ = ["commit", "unit_of_work"]


async def commit(session: AsyncSession) -> None:
    """Commit what ``session`` wrote (if anything), then drop the stale cache entries.

    After commit, never before: deleting first would let a concurrent reader put the old row
    back. A session that wrote nothing costs nothing (no connection is checked out).
    """
    if session.in_transaction():
        await session.commit()
    await flush_invalidations(session)


@contextlib.asynccontextmanager
async def unit_of_work(
    session_factory: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A session of its own: committed (and its invalidations flushed) when the block ends,
    rolled back (nothing invalidated) when it raises."""
    async with session_factory() as session:
        try:
            yield session
        except BaseException:
            if session.in_transaction():
                await session.rollback()
            raise
        await commit(session)
