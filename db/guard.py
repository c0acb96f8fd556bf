"""Postgres fails fast instead of hanging: a circuit breaker and a bulkhead on every connection.

What the cache has had all along for Redis (timeouts, a breaker: cache/aside.py), Postgres gets
here, at the one place every unit of work, cache loader and job passes through: taking a
connection from the pool (``GuardedPool.connect``), plus the engine's ``handle_error`` event for
statements that fail later. The timeouts themselves are set on the engine (db/engine.py:
connect, command, server-side statement_timeout, pool wait).

* **Breaker** (``cache.breaker.CircuitBreaker``, the one the cache uses for Redis): after
  ``failure_threshold`` consecutive connection failures or timeouts, taking a connection fails at
  once for a cool-down, then one probe is let through; its success closes the breaker. A pool
  that is merely full is not a failure (a burst of our own, as for Redis).
* **Bulkhead**: connections taken on behalf of Telegram updates (code running inside
  ``update_scope()``, which the unit-of-work middleware opens) are limited to ``limit`` at once,
  counting those still waiting for the pool. A caller beyond the limit waits at most ``wait``
  seconds for a slot (a healthy Postgres frees slots in milliseconds), then gets
  DatabaseUnavailable. With ``limit`` below the dispatcher's concurrent-update limit, updates
  stuck on a hung Postgres can never hold every update slot, so updates answered from Redis
  alone keep flowing. Jobs and background work (outside any update) are not limited.

Every failure that means "Postgres cannot answer now" (refused or lost connection, a timeout,
statement_timeout, an exhausted pool, the breaker or the bulkhead saying no) reaches the caller
as :class:`DatabaseUnavailable`, so the bot's error handler tells the person to try again in a
minute with one ``isinstance``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final

import asyncpg
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry, PoolProxiedConnection
from sqlalchemy.util.concurrency import await_, in_greenlet

from cache.breaker import CircuitBreaker

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine, ExceptionContext

__all__ = [
    "DatabaseUnavailable",
    "GuardedPool",
    "PostgresGuard",
    "is_unavailable",
    "outage_reason",
    "outside_updates",
    "unavailable_reason",
    "update_scope",
]

#: True while the current task works for a Telegram update (set by the unit-of-work middleware;
#: tasks it starts, e.g. a shared cache load, inherit it).
_IN_UPDATE: contextvars.ContextVar[bool] = contextvars.ContextVar("db_in_update", default=False)
#: Set by GuardedPool.connect while a bulkhead slot waits to be tied to the connection it buys.
_SLOT_PENDING: contextvars.ContextVar[bool] = contextvars.ContextVar("db_slot", default=False)

#: asyncpg errors that mean the server cannot serve us now (not "your SQL is wrong").
_ASYNCPG_OUTAGES: Final = (
    asyncpg.exceptions.PostgresConnectionError,  # class 08
    asyncpg.exceptions.CannotConnectNowError,  # 57P03 starting up / shutting down
    asyncpg.exceptions.AdminShutdownError,  # 57P01
    asyncpg.exceptions.TooManyConnectionsError,  # 53300
    asyncpg.exceptions.QueryCanceledError,  # 57014: statement_timeout
    asyncpg.exceptions.InterfaceError,  # the connection is closed / was lost
)


#: What a lost or unreachable connection looks like, whoever raised it.
_LOST: Final = (*_ASYNCPG_OUTAGES, ConnectionError, OSError)


class DatabaseUnavailable(Exception):
    """Postgres cannot answer now; ``reason`` is one of ``open`` (breaker), ``busy``
    (bulkhead), ``pool`` (pool wait timed out), ``connect``, ``timeout``, ``lost``."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"Postgres unavailable ({reason})")
        self.reason = reason


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        todo += [item.__cause__, item.__context__]


def outage_reason(exc: BaseException) -> str | None:
    """Why ``exc`` means "Postgres is unavailable", or None when it means something else."""
    if not isinstance(exc, Exception):
        return None  # cancellation, exit: never a database outage
    for item in _chain(exc):
        if isinstance(item, DatabaseUnavailable):
            return item.reason
        if isinstance(item, sa_exc.TimeoutError):
            return "pool"
        if isinstance(item, TimeoutError | asyncpg.exceptions.QueryCanceledError):
            return "timeout"
        if isinstance(item, _LOST):
            return "lost"
        if isinstance(item, sa_exc.DBAPIError) and item.connection_invalidated:
            return "lost"
    return None


def unavailable_reason(exc: BaseException) -> str | None:
    """Like ``outage_reason``, but only for errors that come from Postgres (through SQLAlchemy
    or asyncpg) or from the guard: a bare ``TimeoutError`` of some HTTP call does not count."""
    for item in _chain(exc):
        if isinstance(item, DatabaseUnavailable):
            return item.reason
        if isinstance(
            item,
            sa_exc.SQLAlchemyError
            | asyncpg.exceptions.PostgresError
            | asyncpg.exceptions.InterfaceError,
        ):
            return outage_reason(exc)
    return None


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says Postgres cannot answer now."""
    return unavailable_reason(exc) is not None


@contextlib.contextmanager
def update_scope() -> Iterator[None]:
    """Mark the current task (and tasks it starts) as working for a Telegram update."""
    token = _IN_UPDATE.set(True)
    try:
        yield
    finally:
        _IN_UPDATE.reset(token)


def outside_updates() -> None:
    """Called first in a background task started by an update that outlives it (a generation
    finishing after the person got their answer): its connections do not take update slots.
    A task owns a copy of its context, so this changes nothing for the update itself."""
    _IN_UPDATE.set(False)


class PostgresGuard:
    """Breaker + bulkhead of one engine (see the module docstring).

    ``on_reject(reason)`` is called for every refused checkout and ``on_failure(reason)`` for
    every failure the breaker counts (metrics hook in there); the breaker's own ``on_change``
    reports its transitions.
    """

    def __init__(
        self,
        *,
        breaker: CircuitBreaker | None = None,
        limit: int = 32,
        wait: float = 0.25,
        on_reject: Callable[[str], None] | None = None,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.breaker = breaker if breaker is not None else CircuitBreaker(3, 5.0)
        self.limit = limit
        self.wait = wait
        self.on_reject = on_reject
        self.on_failure = on_failure
        #: update slots taken (connections held or being waited for on behalf of updates)
        self.in_use = 0
        self._held: set[ConnectionPoolEntry] = set()
        self._waiters: deque[asyncio.Future[None]] = deque()

    # -------------------------------------------------------------- wiring

    def attach(self, engine: Engine) -> None:
        """Hook the guard into a (sync) engine whose pool is a GuardedPool."""
        pool = engine.pool
        if not isinstance(pool, GuardedPool):
            raise TypeError("the engine's pool must be a GuardedPool (db.engine.create_engine)")
        pool.guard = self
        event.listen(engine, "checkout", self._on_checkout)
        event.listen(engine, "checkin", self._on_checkin)
        event.listen(engine, "handle_error", self._on_error)

    # -------------------------------------------------------------- outcomes

    def _reject(self, reason: str) -> DatabaseUnavailable:
        if self.on_reject is not None:
            self.on_reject(reason)
        return DatabaseUnavailable(reason)

    def _failed(self, reason: str) -> None:
        self.breaker.record_failure()
        if self.on_failure is not None:
            self.on_failure(reason)

    # -------------------------------------------------------------- bulkhead

    def _take_slot(self) -> None:
        if self.in_use < self.limit and not self._waiters:
            self.in_use += 1
            return
        if self.wait <= 0 or not in_greenlet():
            raise self._reject("busy")
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await_(asyncio.wait_for(asyncio.shield(waiter), self.wait))
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                self._free_slot()  # handed over just as we gave up: pass it on
            raise self._reject("busy") from None
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
        # the slot was handed over by _free_slot: in_use already counts it

    def _free_slot(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # hand the slot over; in_use stays the same
                return
        self.in_use -= 1

    # -------------------------------------------------------------- checkout

    def checkout(self, connect: Callable[[], PoolProxiedConnection]) -> PoolProxiedConnection:
        """``connect()`` (the pool's own checkout) behind the breaker and, in updates, the
        bulkhead; failures come out as DatabaseUnavailable."""
        if not self.breaker.allow():
            raise self._reject("open")
        scoped = _IN_UPDATE.get()
        if scoped:
            self._take_slot()
        token = _SLOT_PENDING.set(scoped)
        try:
            try:
                conn = connect()
            except sa_exc.TimeoutError as exc:  # our own pool stayed full for pool_timeout
                raise self._reject("pool") from exc
            except Exception as exc:
                reason = outage_reason(exc)
                if reason is None:
                    raise
                self._failed(reason)
                raise self._reject("connect") from exc
        except BaseException:
            if _SLOT_PENDING.get():
                self._free_slot()
            raise
        else:
            if _SLOT_PENDING.get():  # no checkout event tied it to a connection
                self._free_slot()
        finally:
            _SLOT_PENDING.reset(token)
        self.breaker.record_success()
        return conn

    def _on_checkout(self, _dbapi: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        if _SLOT_PENDING.get():
            self._held.add(record)
            _SLOT_PENDING.set(False)

    def _on_checkin(self, _dbapi: Any, record: ConnectionPoolEntry) -> None:
        if record in self._held:
            self._held.discard(record)
            self._free_slot()

    # -------------------------------------------------------------- statements

    def _on_error(self, ctx: ExceptionContext) -> BaseException | None:
        """A statement failed: count outages, drop the connection, raise DatabaseUnavailable."""
        if ctx.is_pre_ping:
            return None  # the checkout reports the outcome of its ping
        original = ctx.original_exception
        reason = outage_reason(original)
        if reason is None:
            return None
        if reason == "timeout" and isinstance(original, TimeoutError):
            # the client gave up on a connection that stopped answering: never reuse it
            ctx.is_disconnect = True
        self._failed(reason)
        return self._reject(reason)


class GuardedPool(AsyncAdaptedQueuePool):
    """The asyncio queue pool with a PostgresGuard in front of every checkout."""

    guard: PostgresGuard | None = None

    def connect(self) -> PoolProxiedConnection:
        guard = self.guard
        if guard is None:
            return super().connect()
        return guard.checkout(super().connect)

    def recreate(self) -> GuardedPool:
        # engine.dispose() builds a new pool of the same class: keep the guard on it
        pool = super().recreate()
        assert isinstance(pool, GuardedPool)
        pool.guard = self.guard
        return pool
