"""Coalescing the Postgres fallbacks of buffered counters while Redis is unavailable.

With Redis down, every view and last-seen stamp would otherwise be its own transaction: at
midnight that is thousands of upserts a second on the same few rows, fighting for the same row
locks and draining the connection pool that horoscope loaders need. Here concurrent writes merge
into one batch; at most one batch per writer is in flight, and each caller awaits the commit of
the batch that holds its write, so nothing is acknowledged before it is durable.
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

__all__ = ["CoalescingWriter", "writer_for"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class CoalescingWriter(Generic[K, V]):
    def __init__(
        self,
        apply: Callable[[dict[K, V]], Awaitable[None]],
        merge: Callable[[V, V], V],
    ) -> None:
        self._apply = apply
        self._merge = merge
        self._pending: dict[K, V] = {}
        self._waiter: asyncio.Future[None] | None = None
        self._running: asyncio.Task[None] | None = None
        self.batches = 0

    async def add(self, key: K, value: V) -> None:
        """Merge ``value`` into the next batch and wait until that batch is committed."""
        pending = self._pending
        pending[key] = self._merge(pending[key], value) if key in pending else value
        if self._waiter is None:
            self._waiter = asyncio.get_running_loop().create_future()
        waiter = self._waiter
        if self._running is None:
            self._running = asyncio.get_running_loop().create_task(self._drain())
        await asyncio.shield(waiter)

    async def _drain(self) -> None:
        try:
            while self._pending:
                await asyncio.sleep(0)  # let writes of this tick join the batch
                batch, self._pending = self._pending, {}
                waiter, self._waiter = self._waiter, None
                try:
                    self.batches += 1
                    await self._apply(batch)
                except Exception as exc:
                    if waiter is not None and not waiter.done():
                        waiter.set_exception(exc)
                        waiter.exception()
                else:
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)
        finally:
            self._running = None


_writers: weakref.WeakKeyDictionary[async_sessionmaker[AsyncSession], dict[str, Any]] = (
    weakref.WeakKeyDictionary()
)


def writer_for(
    factory: async_sessionmaker[AsyncSession],
    name: str,
    apply: Callable[[async_sessionmaker[AsyncSession], dict[K, V]], Awaitable[None]],
    merge: Callable[[V, V], V],
) -> CoalescingWriter[K, V]:
    """One writer per (database, purpose), shared by the per-update repositories.

    Looked up only when a fallback actually runs, so the hot path (building a side command on
    every update) pays nothing for it.
    """
    per_factory = _writers.setdefault(factory, {})
    writer: CoalescingWriter[K, V] | None = per_factory.get(name)
    if writer is None:
        writer = CoalescingWriter(functools.partial(apply, factory), merge)
        per_factory[name] = writer
    return writer
