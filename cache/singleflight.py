"""In-process request coalescing ("single-flight").

Why: when a hot key is missing, hundreds of concurrent handlers would each run the same
loader (N identical Postgres queries, or worse, N generator calls). Here the first caller
starts the load as a task; every concurrent caller of that key awaits the same task. The
entry disappears as soon as the load ends, so the map only ever holds keys being loaded
right now (no dict that grows with every key ever seen).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["SingleFlight"]

T = TypeVar("T")


class SingleFlight:
    """Concurrent ``do(key, fn)`` calls for one key share one run of ``fn``.

    * A loader exception reaches every waiter and is not remembered: the next call retries.
    * The load runs as its own task and each waiter awaits it through ``asyncio.shield``:
      cancelling one waiter (a client went away) does not cancel the load for the others.
    """

    __slots__ = ("_calls",)

    def __init__(self) -> None:
        self._calls: dict[str, asyncio.Future[Any]] = {}

    def __len__(self) -> int:
        return len(self._calls)

    def __contains__(self, key: object) -> bool:
        return key in self._calls

    @property
    def in_flight(self) -> int:
        """Number of keys being loaded right now."""
        return len(self._calls)

    async def do(self, key: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` once for all concurrent callers of ``key`` and return its result."""
        fut = self._calls.get(key)
        if fut is None:
            fut = asyncio.ensure_future(fn())
            self._calls[key] = fut
            fut.add_done_callback(lambda f: self._done(key, f))
        result: T = await asyncio.shield(fut)
        return result

    def _done(self, key: str, fut: asyncio.Future[Any]) -> None:
        if self._calls.get(key) is fut:
            del self._calls[key]
        if not fut.cancelled():
            # Mark the exception retrieved: if every waiter was cancelled nobody else will,
            # and asyncio would log "exception was never retrieved".
            fut.exception()

    def forget(self, key: str) -> None:
        """Detach an in-flight load so that later callers start a fresh one.

        Used by invalidation: a load that started before a write committed may return the
        old row, and a caller arriving after the invalidation must not join it.
        """
        self._calls.pop(key, None)
