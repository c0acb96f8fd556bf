"""The invalidation outbox: after-commit cache deletions that survive a Redis outage and a crash.

Before, an invalidation that could not reach Redis was lost: a sign changed while Redis was down
was shown in its old form for a day once Redis came back from its AOF. Now (issue 12.7):

1. **Durable, in the same transaction.** ``record`` (called by cache/invalidation.py in
   ``before_commit``) inserts the keys into ``cache_invalidations`` in the transaction that
   changes the rows: the change and the obligation to delete its cache entries commit together.
2. **Delivered after the commit**, confirmed (``cache.invalidation.deliver``). Delivered:
   the row ids are remembered and deleted in bulk, one statement for many writes, by the next
   ``replay`` (the job runs every few seconds) or once ``ACK_BATCH`` have gathered: a write
   costs one INSERT in its own transaction and nothing after it. A lost ack (a crash) only
   costs one more harmless DEL at a later replay.
3. **Not delivered** (Redis down or slow, breaker open): the keys are kept *in this process*
   too (``waiting``, a gauge), with one WARNING; they are replayed as soon as Redis answers
   again: when the breaker closes, after the next delivery that got through, and by the
   ``replay_invalidations`` job.
4. **Across processes.** ``replay`` also delivers every row older than ``grace`` (by default
   30 s: younger ones are normally delivered and acked by their writer, whose job runs every
   ``INVALIDATION_REPLAY_SECONDS``), whoever wrote it: the process whose Redis comes back
   first, or which starts after a crash, cleans up for all.

Deleting an entry twice is harmless (one more load); deleting it never is what this prevents.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cache import CacheAside
from cache.breaker import CLOSED
from cache.invalidation import background, deliver, journal_of, use_journal

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = ["InvalidationOutbox", "install_outbox", "outbox_of"]

log = logging.getLogger(__name__)

#: Rows younger than this are left to their writer (it delivers and acks them itself): well
#: above the replay job's interval, which is when a writer deletes its delivered rows.
GRACE: Final = dt.timedelta(seconds=30)
#: Rows handled per replay round.
REPLAY_BATCH: Final = 500
#: Delivered rows deleted at once without waiting for the job.
ACK_BATCH: Final = 500

_RECORD = text(
    "INSERT INTO cache_invalidations (cache_key) SELECT unnest(CAST(:keys AS varchar[]))"
    " RETURNING id"
)
_DUE = text(
    "SELECT id, cache_key FROM cache_invalidations"
    " WHERE created_at < now() - CAST(:grace AS interval) ORDER BY id LIMIT :limit"
)
_ACK = text("DELETE FROM cache_invalidations WHERE id = ANY(CAST(:ids AS bigint[]))")


class InvalidationOutbox:
    """The Journal of one CacheAside on one database; see the module docstring."""

    def __init__(
        self,
        cache: CacheAside,
        session_factory: async_sessionmaker[AsyncSession],
        *,
        grace: dt.timedelta = GRACE,
    ) -> None:
        self.cache = cache
        self.session_factory = session_factory
        self.grace = grace
        #: this process's undelivered invalidations: outbox id -> key
        self.waiting: dict[int, str] = {}
        self._acks: set[int] = set()
        self._acking: asyncio.Task[None] | None = None
        self._replaying: asyncio.Task[int] | None = None
        self._hook_breaker()

    # ------------------------------------------------------------------ the Journal

    def record(self, session: Session, keys: list[str]) -> list[int]:
        """Insert ``keys`` in the committing transaction (sync: ``before_commit``)."""
        return list(session.execute(_RECORD, {"keys": keys}).scalars())

    async def settle(self, keys: list[str], ids: list[int], delivered: bool) -> None:
        metrics = self.cache.metrics
        if delivered:
            metrics.invalidations("delivered", len(keys))
            self._ack(ids)
            if self.waiting:  # Redis answers again: deliver what waits at once
                self.replay_soon()
            return
        metrics.invalidations("deferred", len(keys))
        if not self.waiting:
            log.warning(
                "cache invalidations deferred: Redis did not answer; kept in the outbox and"
                " replayed when it does (e.g. %s)",
                keys[0],
            )
        self.waiting.update(zip(ids, keys, strict=True))
        metrics.invalidations_waiting(len(self.waiting))

    # ------------------------------------------------------------------ acks

    def _ack(self, ids: Sequence[int]) -> None:
        """Remember delivered rows; they are deleted in bulk by the next ``replay`` (or at once
        in the background when many have gathered)."""
        self._acks.update(ids)
        if len(self._acks) >= ACK_BATCH and self._acking is None:
            self._acking = background(self.cache, self._flush_acks())

    async def _flush_acks(self) -> None:
        """Delete the delivered rows remembered so far (one statement). On failure they stay:
        a later replay deletes their keys once more, harmlessly, and then the rows."""
        try:
            while self._acks:
                ids, self._acks = sorted(self._acks), set()
                await self._delete_quietly(ids)
        finally:
            self._acking = None

    async def _delete(self, ids: Sequence[int]) -> None:
        async with self.session_factory() as s, s.begin():
            await s.execute(_ACK, {"ids": list(ids)})

    # ------------------------------------------------------------------ replay

    def _hook_breaker(self) -> None:
        """Replay when the breaker closes (Redis answered a probe). Chained onto the hook the
        engine gives its metrics gauge, which keeps working as before."""
        breaker = self.cache.breaker
        previous = breaker.on_change
        ref = weakref.ref(self)

        def on_change(state: int) -> None:
            if previous is not None:
                previous(state)
            outbox = ref()
            if outbox is not None and state == CLOSED and outbox.waiting:
                outbox.replay_soon()

        breaker.on_change = on_change

    def replay_soon(self) -> None:
        """Start a replay in the background unless one is running."""
        if self._replaying is not None:
            return
        try:
            task = background(self.cache, self.replay())
        except RuntimeError:  # no running loop (a sync caller): the job will do it
            return
        self._replaying = task
        task.add_done_callback(self._replay_done)

    def _replay_done(self, task: asyncio.Task[int]) -> None:
        self._replaying = None
        if not task.cancelled() and task.exception() is not None:
            log.warning("outbox replay failed: %r", task.exception())

    async def replay(self) -> int:
        """Deliver what waits: this process's deferred keys (no Postgres needed for that),
        then every row older than ``grace`` (other processes', crashed ones'). Returns the
        keys delivered; stops at the first delivery Redis does not confirm."""
        if self._acks and self._acking is None:
            await self._flush_acks()  # delivered rows first: they must not be replayed
        done = 0
        if self.waiting:
            batch = dict(self.waiting)
            if not await deliver(self.cache, sorted(set(batch.values()))):
                return 0
            for outbox_id in batch:
                self.waiting.pop(outbox_id, None)
            done += len(batch)
            self._settled_waiting(len(batch))
            await self._delete_quietly(list(batch))
        while True:
            try:
                rows = await self._due()
            except (SQLAlchemyError, OSError) as exc:  # Postgres down: the next run retries
                log.debug("outbox not readable: %r", exc)
                return done
            if not rows:
                return done
            keys = sorted({key for _, key in rows})
            if not await deliver(self.cache, keys):
                return done
            for outbox_id, _ in rows:
                self.waiting.pop(outbox_id, None)
            self.cache.metrics.invalidations("replayed", len(rows))
            done += len(rows)
            if not await self._delete_quietly([outbox_id for outbox_id, _ in rows]):
                return done  # the same rows would come back: stop, the next run retries
            if len(rows) < REPLAY_BATCH:
                return done

    def _settled_waiting(self, n: int) -> None:
        self.cache.metrics.invalidations("replayed", n)
        self.cache.metrics.invalidations_waiting(len(self.waiting))
        if not self.waiting:
            log.info("cache invalidations replayed: Redis answers again (%d keys)", n)

    async def _due(self) -> list[tuple[int, str]]:
        async with self.session_factory() as s:
            result = await s.execute(_DUE, {"grace": self.grace, "limit": REPLAY_BATCH})
            return [(int(row[0]), str(row[1])) for row in result.all()]

    async def _delete_quietly(self, ids: list[int]) -> bool:
        try:
            await self._delete(ids)
        except (SQLAlchemyError, OSError) as exc:
            log.debug("outbox cleanup failed: %r", exc)
            return False
        return True


def install_outbox(
    cache: CacheAside, session_factory: async_sessionmaker[AsyncSession] | None
) -> InvalidationOutbox | None:
    """The outbox of ``cache`` (one per cache; created on first call). None when there is
    nothing to make durable: no Redis (the cache is off) or no database."""
    if cache.redis is None or session_factory is None:
        return None
    found = journal_of(cache)
    if isinstance(found, InvalidationOutbox):
        return found
    outbox = InvalidationOutbox(cache, session_factory)
    use_journal(cache, outbox)
    return outbox


def outbox_of(cache: CacheAside) -> InvalidationOutbox | None:
    found = journal_of(cache)
    return found if isinstance(found, InvalidationOutbox) else None
