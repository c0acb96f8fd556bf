"""Delete cache entries only after the database transaction that changed them committed.

Why after, never before: deleting first lets a concurrent reader miss, read the *old* row
(the write is not committed yet) and put it back into Redis, where it stays until its TTL.
Deleting after the commit closes that window; CacheAside additionally makes an in-flight
locked load that started before the deletion unable to write its (possibly old) value back.

Design (defended in the tests):

* ``invalidate_after_commit(session, *keys)`` records keys on the sync Session's ``info``
  dict and registers ``before_commit`` / ``after_commit`` / ``after_soft_rollback``
  listeners once per session.
* ``before_commit``: when a **journal** is set for the cache (``use_journal``; db/outbox.py
  is the one: a table), the keys are written to it *in the committing transaction*, so the
  obligation to delete them is exactly as durable as the change itself.
* ``after_commit`` (a sync event) moves the keys to a "committed" list and schedules a
  background flush as a safety net.
* The unit of work (db/unit_of_work.py) calls ``await flush_invalidations(session)`` right
  after ``await session.commit()``: it takes the committed keys synchronously and awaits the
  DEL, so when it returns the keys are gone (the background safety net then finds nothing).
  With a journal the DEL is confirmed (``deliver``) and the journal told how it went
  (``settle``): delivered ones are crossed off, the others kept and replayed when Redis
  answers again.
* A rollback of the root transaction discards the pending keys: nothing changed, nothing is
  deleted. A savepoint rollback keeps them (an extra deletion is harmless, a missed one not).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from redis.asyncio import Redis
from sqlalchemy import event

from cache.client import REDIS_ERRORS

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session, SessionTransaction

    from cache.breaker import CircuitBreaker

__all__ = [
    "Journal",
    "background",
    "deliver",
    "flush_invalidations",
    "invalidate_after_commit",
    "journal_of",
    "use_journal",
]

log = logging.getLogger(__name__)

_INFO_KEY = "_cache_aside_invalidation"


class _Invalidator(Protocol):
    redis: Redis | None
    breaker: CircuitBreaker
    op_timeout: float

    async def invalidate(self, *keys: str) -> None: ...

    def lock_key(self, key: str) -> str: ...

    def _track(self, task: asyncio.Task[Any]) -> None: ...


class Journal(Protocol):
    """A durable record of the invalidations a transaction makes due (db/outbox.py)."""

    def record(self, session: Session, keys: list[str]) -> list[int]:
        """Write ``keys`` in ``session``'s transaction (sync: called from ``before_commit``);
        returns ids to settle them by."""
        ...

    async def settle(self, keys: list[str], ids: list[int], delivered: bool) -> None:
        """After the commit: the keys were deleted in Redis (``delivered``), or not."""
        ...


_journals: weakref.WeakKeyDictionary[Any, Journal] = weakref.WeakKeyDictionary()


def use_journal(cache: _Invalidator, journal: Journal | None) -> None:
    """Record the invalidations of ``cache`` in ``journal`` from now on (None: stop)."""
    if journal is None:
        _journals.pop(cache, None)
    else:
        _journals[cache] = journal


def journal_of(cache: _Invalidator) -> Journal | None:
    return _journals.get(cache)


def background(cache: _Invalidator, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    """Run ``coro`` as a task the cache keeps alive and stops in ``aclose``."""
    task = asyncio.get_running_loop().create_task(coro)
    cache._track(task)
    return task


class _State:
    __slots__ = ("committed", "committed_ids", "pending", "pending_ids")

    def __init__(self) -> None:
        # dicts keep insertion order and deduplicate; keyed by the cache instance so two
        # caches (or two Redis) can share one session.
        self.pending: dict[_Invalidator, dict[str, None]] = {}
        self.committed: dict[_Invalidator, dict[str, None]] = {}
        # journal ids of the keys, recorded before the commit
        self.pending_ids: dict[_Invalidator, list[int]] = {}
        self.committed_ids: dict[_Invalidator, list[int]] = {}


def _state(sync_session: Session) -> _State:
    state = sync_session.info.get(_INFO_KEY)
    if state is None:
        state = _State()
        sync_session.info[_INFO_KEY] = state
        event.listen(sync_session, "before_commit", _before_commit)
        event.listen(sync_session, "after_commit", _after_commit)
        event.listen(sync_session, "after_soft_rollback", _after_soft_rollback)
    assert isinstance(state, _State)
    return state


def _before_commit(sync_session: Session) -> None:
    state: _State | None = sync_session.info.get(_INFO_KEY)
    if state is None or not state.pending:
        return
    for cache, keys in state.pending.items():
        journal = _journals.get(cache)
        if journal is not None and keys:
            ids = journal.record(sync_session, list(keys))
            state.pending_ids.setdefault(cache, []).extend(ids)


def _after_commit(sync_session: Session) -> None:
    state: _State | None = sync_session.info.get(_INFO_KEY)
    if state is None or not state.pending:
        return
    for cache, keys in state.pending.items():
        state.committed.setdefault(cache, {}).update(keys)
    for cache, ids in state.pending_ids.items():
        state.committed_ids.setdefault(cache, []).extend(ids)
    state.pending.clear()
    state.pending_ids.clear()
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # sync use without a loop: only the explicit flush can run
        return
    # Safety net for callers that forget flush_invalidations(); normally the explicit flush
    # runs first and this task finds nothing to do.
    for cache in list(state.committed):
        cache._track(loop.create_task(_flush_one(state, cache)))


def _after_soft_rollback(sync_session: Session, previous_transaction: SessionTransaction) -> None:
    if previous_transaction.parent is not None:  # a savepoint: keep what we have
        return
    state: _State | None = sync_session.info.get(_INFO_KEY)
    if state is not None:
        state.pending.clear()
        state.pending_ids.clear()


async def deliver(cache: _Invalidator, keys: Sequence[str]) -> bool:
    """Delete ``keys`` (and their load locks); True only when Redis confirmed the DEL.

    ``cache.invalidate`` first: it also detaches in-process loads and GETs in flight, so no
    caller arriving now joins a load that may have read the old row. Its DEL swallows errors
    (it cannot say whether it reached Redis), hence the confirming DEL here. False at once
    while the breaker keeps Redis off: that costs no timeout.
    """
    await cache.invalidate(*keys)
    redis = cache.redis
    if redis is None:
        return True  # no cache: nothing can be stale
    if cache.breaker.is_open:
        return False
    names = [*keys, *(cache.lock_key(k) for k in keys)]
    try:
        async with asyncio.timeout(cache.op_timeout):
            await redis.delete(*names)
    except REDIS_ERRORS as exc:
        log.debug("invalidation not delivered: %r", exc)
        return False
    return True


async def _flush(cache: _Invalidator, keys: list[str], ids: list[int]) -> None:
    journal = _journals.get(cache)
    if journal is None:
        await cache.invalidate(*keys)
        return
    delivered = await deliver(cache, keys)
    await journal.settle(keys, ids, delivered)


async def _flush_one(state: _State, cache: _Invalidator) -> None:
    keys = state.committed.pop(cache, None)
    ids = state.committed_ids.pop(cache, [])
    if keys:
        await _flush(cache, list(keys), ids)


def invalidate_after_commit(cache: _Invalidator, session: AsyncSession, *keys: str) -> None:
    """Delete ``keys`` from ``cache`` once ``session``'s current transaction commits."""
    if not keys:
        return
    state = _state(session.sync_session)
    state.pending.setdefault(cache, {}).update(dict.fromkeys(keys))


async def flush_invalidations(session: AsyncSession) -> None:
    """Delete the keys of the transaction that just committed; call right after commit().

    Keys are taken synchronously before the first await, so the background safety net can
    never delete them a second time, and a rollback cannot resurrect them.
    """
    state: _State | None = session.sync_session.info.get(_INFO_KEY)
    if state is None or not state.committed:
        return
    batches = [
        (cache, list(keys), state.committed_ids.pop(cache, []))
        for cache, keys in state.committed.items()
    ]
    state.committed.clear()
    state.committed_ids.clear()
    for cache, keys, ids in batches:
        await _flush(cache, keys, ids)


def pending_keys(session: AsyncSession) -> list[str]:
    """Keys waiting for the current transaction to commit (for tests and debugging)."""
    state: _State | None = session.sync_session.info.get(_INFO_KEY)
    if state is None:
        return []
    return [k for keys in state.pending.values() for k in keys]
