"""Delete cache entries only after the database transaction that changed them committed.

Why after, never before: deleting first lets a concurrent reader miss, read the *old* row
(the write is not committed yet) and put it back into Redis, where it stays until its TTL.
Deleting after the commit closes that window; CacheAside additionally makes an in-flight
locked load that started before the deletion unable to write its (possibly old) value back.

Design (defended in the tests):

* ``invalidate_after_commit(session, *keys)`` records keys on the sync Session's ``info``
  dict and registers ``after_commit`` / ``after_soft_rollback`` listeners once per session.
* ``after_commit`` (a sync event) moves the keys to a "committed" list and schedules a
  background flush as a safety net.
* The unit-of-work middleware calls ``await flush_invalidations(session)`` right after
  ``await session.commit()``: it takes the committed keys synchronously and awaits the DEL,
  so when it returns the keys are gone (the background safety net then finds nothing).
* A rollback of the root transaction discards the pending keys: nothing changed, nothing is
  deleted. A savepoint rollback keeps them (an extra deletion is harmless, a missed one not).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import event

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session, SessionTransaction

__all__ = ["flush_invalidations", "invalidate_after_commit"]

log = logging.getLogger(__name__)

_INFO_KEY = "_cache_aside_invalidation"


class _Invalidator(Protocol):
    async def invalidate(self, *keys: str) -> None: ...

    def _track(self, task: asyncio.Task[Any]) -> None: ...


class _State:
    __slots__ = ("committed", "pending")

    def __init__(self) -> None:
        # dicts keep insertion order and deduplicate; keyed by the cache instance so two
        # caches (or two Redis) can share one session.
        self.pending: dict[_Invalidator, dict[str, None]] = {}
        self.committed: dict[_Invalidator, dict[str, None]] = {}


def _state(sync_session: Session) -> _State:
    state = sync_session.info.get(_INFO_KEY)
    if state is None:
        state = _State()
        sync_session.info[_INFO_KEY] = state
        event.listen(sync_session, "after_commit", _after_commit)
        event.listen(sync_session, "after_soft_rollback", _after_soft_rollback)
    assert isinstance(state, _State)
    return state


def _after_commit(sync_session: Session) -> None:
    state: _State | None = sync_session.info.get(_INFO_KEY)
    if state is None or not state.pending:
        return
    for cache, keys in state.pending.items():
        state.committed.setdefault(cache, {}).update(keys)
    state.pending.clear()
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


async def _flush_one(state: _State, cache: _Invalidator) -> None:
    keys = state.committed.pop(cache, None)
    if keys:
        await cache.invalidate(*keys)


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
    batches = list(state.committed.items())
    state.committed.clear()
    for cache, keys in batches:
        await cache.invalidate(*keys)


def pending_keys(session: AsyncSession) -> list[str]:
    """Keys waiting for the current transaction to commit (for tests and debugging)."""
    state: _State | None = session.sync_session.info.get(_INFO_KEY)
    if state is None:
        return []
    return [k for keys in state.pending.values() for k in keys]
