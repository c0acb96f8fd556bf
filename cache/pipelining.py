"""Auto-pipelining: concurrent command groups share one Redis pipeline.

A read that carries side commands (a view counter, a last-seen stamp) cannot be coalesced with
other reads of the same key, so without this every such read takes a pooled connection of its
own. In a burst (10,000 people asking at midnight) that exhausts the pool, trips the breaker and
sends every counter to Postgres one statement at a time. Here, groups submitted while a pipeline
is in flight wait for the next one: at most ``max_in_flight`` pipelines (connections) are used,
and each carries everything that queued up meanwhile. One group's commands stay contiguous and
in order, so its reply slice is exactly what a pipeline of its own would have returned.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["NotSentError", "PipelineBatcher"]


class NotSentError(RedisConnectionError):
    """No connection could be had (refused, handshake timed out, pool empty): nothing ran.

    A connection error to the engine (it counts toward the breaker), and the proof that side
    commands may be replayed through their fallbacks.
    """


class PipelineBatcher:
    def __init__(self, *, timeout: float, max_in_flight: int = 4, max_batch: int = 1024) -> None:
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self.max_batch = max_batch
        self._pending: list[tuple[Redis, Sequence[tuple[Any, ...]], asyncio.Future[list[Any]]]] = []
        self._in_flight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        #: (pool, connection) kept between pipelines, at most ``max_in_flight``: taking a
        #: connection from redis-py's blocking pool and giving it back (its Condition and
        #: bookkeeping) cost a tenth of a warm update's CPU, twice per update.
        self._held: list[tuple[Any, Any]] = []
        self._closed = False
        self.pipelines = 0  # executed pipelines, for tests and metrics

    async def execute(self, redis: Redis, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Run ``commands`` in a shared pipeline; replies in order (errors as exceptions).

        Raises NotSentError when nothing was sent, TimeoutError when the reply did not come
        in time after sending (ambiguous), or another Redis error.
        """
        if not self._in_flight and not self._pending:
            # Nothing to share with: send from the caller's own task (no extra task, no loop
            # hop). Groups arriving meanwhile queue up and go together once this one is back.
            self._in_flight += 1
            try:
                return await self._send(redis, list(commands))
            finally:
                self._in_flight -= 1
                self._schedule()
        fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._pending.append((redis, commands, fut))
        self._schedule()
        # Shielded: a cancelled caller must not cancel a pipeline other callers share.
        return await asyncio.shield(fut)

    def _schedule(self) -> None:
        if self._scheduled or not self._pending or self._in_flight >= self.max_in_flight:
            return
        self._scheduled = True
        asyncio.get_running_loop().call_soon(self._start)

    def _start(self) -> None:
        self._scheduled = False
        while self._pending and self._in_flight < self.max_in_flight:
            redis = self._pending[0][0]
            batch = [g for g in self._pending[: self.max_batch] if g[0] is redis]
            taken = {id(g) for g in batch}
            self._pending = [g for g in self._pending if id(g) not in taken]
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._run(redis, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(
        self,
        redis: Redis,
        batch: list[tuple[Redis, Sequence[tuple[Any, ...]], asyncio.Future[list[Any]]]],
    ) -> None:
        progress = _Progress()
        try:
            replies = await self._send(
                redis, [cmd for _, cmds, _ in batch for cmd in cmds], progress
            )
        except asyncio.CancelledError:
            # Shutdown (aclose): the callers learn whether their commands may have run.
            self._fail(batch, progress.outcome_unknown("pipeline cancelled"))
            raise
        except Exception as exc:
            self._fail(batch, exc)
        else:
            i = 0
            for _, cmds, fut in batch:
                if not fut.done():
                    fut.set_result(replies[i : i + len(cmds)])
                i += len(cmds)
        finally:
            self._in_flight -= 1
            self._schedule()

    @staticmethod
    def _fail(
        batch: list[tuple[Redis, Sequence[tuple[Any, ...]], asyncio.Future[list[Any]]]],
        exc: Exception,
    ) -> None:
        for _, _, fut in batch:
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # a cancelled caller leaves it unretrieved: no noise

    async def _send(
        self, redis: Redis, commands: list[tuple[Any, ...]], progress: _Progress | None = None
    ) -> list[Any]:
        """One pipeline on one pooled connection: pack, write once, read one reply per command.

        This is what redis-py's non-transactional ``Pipeline.execute`` does on the wire, without
        its per-call machinery (a Pipeline object, retry wrapper, response callbacks), and
        replies stay raw (bytes, ints, lists), which is what the engine decodes anyway. A
        command that Redis rejects comes back as its ResponseError in place, the rest still run.

        Raises NotSentError when nothing can have reached Redis: no connection (refused,
        handshake or pool timeout, failed health check). Anything after the write is
        ambiguous (the commands may have run) and is raised as it is.
        """
        progress = progress or _Progress()
        pool = redis.connection_pool
        conn: Any = None
        ok = False
        try:
            async with asyncio.timeout(self.timeout):
                try:
                    conn = await self._connection(pool)
                    # redis-py would PING an idle connection inside the write: do it before,
                    # so a failed check is "not sent" rather than "sent, no reply".
                    await conn.check_health()
                except Exception as exc:
                    raise NotSentError(f"{type(exc).__name__}: {exc}") from exc
                packed = conn.pack_commands(commands)  # bad arguments: raised as they are
                progress.sent = True
                self.pipelines += 1
                await conn.send_packed_command(packed, check_health=False)
                replies: list[Any] = []
                for _ in commands:
                    try:
                        replies.append(await conn.read_response())
                    except ResponseError as exc:
                        replies.append(exc)
                ok = True
                return replies
        except BaseException as exc:
            if isinstance(exc, TimeoutError) and not progress.sent:
                # the timeout above fired while waiting for a connection: nothing was sent
                raise NotSentError(f"no connection within {self.timeout}s") from exc
            if progress.sent and conn is not None:
                # Cut off mid-exchange (timeout, cancel, reset): unread replies would reach
                # the next user of this connection. Drop it; the pool opens a fresh one.
                await conn.disconnect(nowait=True)
            raise
        finally:
            if conn is not None and not (ok and self._keep(pool, conn)):
                await pool.release(conn)

    async def _connection(self, pool: Any) -> Any:
        """A kept connection of ``pool`` (checked as the pool checks it), else a pooled one."""
        for i in range(len(self._held) - 1, -1, -1):
            if self._held[i][0] is pool:
                conn = self._held.pop(i)[1]
                try:
                    await _ready(conn)
                except BaseException:
                    await pool.release(conn)
                    raise
                return conn
        return await pool.get_connection()

    def _keep(self, pool: Any, conn: Any) -> bool:
        # at most a quarter of a small pool, so GETs and locks always find connections
        limit = min(self.max_in_flight, max(1, getattr(pool, "max_connections", 4) // 4))
        if self._closed or len(self._held) >= limit:
            return False
        self._held.append((pool, conn))
        return True

    async def aclose(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        held, self._held = self._held, []
        for pool, conn in held:
            with contextlib.suppress(Exception):
                await pool.release(conn)


async def _ready(conn: Any) -> None:
    """Make a kept connection safe to send on: reconnect when the server closed it meanwhile
    (EOF) or it holds unread bytes. redis-py's own pool skips this check when maintenance
    notifications are on "auto" (its default), which would turn a connection the server
    dropped while idle into a "sent, no reply" failure, and side commands into unknowns.
    Raises (nothing sent) when no connection can be made."""
    await conn.connect()  # no-op when connected
    try:
        dirty = await conn.can_read()
    except (RedisConnectionError, OSError):
        dirty = True
    if dirty:
        await conn.disconnect()
        await conn.connect()


class _Progress:
    """How far one pipeline got: once ``sent``, a failure leaves its outcome unknown."""

    __slots__ = ("sent",)

    def __init__(self) -> None:
        self.sent = False

    def outcome_unknown(self, what: str) -> Exception:
        if self.sent:
            return RedisTimeoutError(f"{what} after sending: outcome unknown")
        return NotSentError(f"{what} before sending")
