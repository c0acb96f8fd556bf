"""Auto-pipelining: every cache read rides a shared Redis pipeline when another is in flight.

A read sent while no pipeline is in flight goes out at once from the caller's own task (no extra
task, no loop hop). Reads arriving while a pipeline is in flight queue up and go together in the
next one: at most ``max_in_flight`` pipelines (connections) are used, and each carries
everything that queued up meanwhile. A hundred concurrent GETs thus cost a few round trips and a
few connections instead of a hundred of each (a raw redis-py GET per caller takes a pooled
connection of its own, and in a burst exhausts the pool). One group's commands stay contiguous
and in order, so its reply slice is exactly what a pipeline of its own would have returned.

What keeps a reply from ever reaching the wrong caller: replies are read in order on one
connection, and a connection cut off mid-exchange (a timeout, a cancelled caller, a reset) is
disconnected, never reused with replies still on the wire.

What bounds the time: the client's own socket timeouts (``create_redis`` sets them) bound every
wait (pool, connect, write, each read that waits for the network), so a hung Redis costs at most
one socket timeout per wait and the engine adds no timer of its own on the hot path. A client
without such timeouts (or with longer ones than ``timeout``) gets the batcher's ``timeout``
around the whole exchange instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Sequence
from typing import Any, Final

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

try:  # hiredis is a dependency; without it every reply is read through redis-py's read_response
    from redis._parsers.hiredis import NOT_ENOUGH_DATA as _NOT_ENOUGH_DATA
    from redis._parsers.hiredis import _AsyncHiredisParser
except ImportError:  # pragma: no cover
    _AsyncHiredisParser = None  # type: ignore[assignment,misc]
    _NOT_ENOUGH_DATA = object()

__all__ = ["NotSentError", "PipelineBatcher"]

#: (client, commands, future of the replies, one: a single command whose reply is the result)
_Group = tuple[Redis, Sequence[tuple[Any, ...]], "asyncio.Future[Any]", bool]

_READ_RESPONSE: Final = AbstractConnection.read_response


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
        self._pending: list[_Group] = []
        self._in_flight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        #: (pool, connection) kept between pipelines, at most ``max_in_flight``: taking a
        #: connection from redis-py's blocking pool and giving it back (its Condition and
        #: bookkeeping) cost a tenth of a warm update's CPU, twice per update.
        self._held: list[tuple[Any, Any]] = []
        #: per pool: do the client's own timeouts bound every wait (no timer of ours needed)?
        self._self_bounded: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()
        self._closed = False
        self.pipelines = 0  # executed pipelines, for tests and metrics

    async def execute(self, redis: Redis, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Run ``commands`` in a shared pipeline; replies in order (error replies as exceptions).

        Raises NotSentError when nothing was sent, a timeout when the reply did not come in time
        after sending (ambiguous: the commands may have run), or another Redis error.
        """
        if not self._in_flight and not self._pending:
            # Nothing to share with: send from the caller's own task. Groups arriving meanwhile
            # queue up and go together once this one is back (or on another connection).
            self._in_flight += 1
            try:
                return await self._send(redis, commands)
            finally:
                self._in_flight -= 1
                if self._pending:
                    self._schedule()
        return await self._enqueue(redis, commands, False)  # type: ignore[no-any-return]

    async def execute_one(self, redis: Redis, command: tuple[Any, ...]) -> Any:
        """One command through the shared pipeline; its reply (an error reply is raised)."""
        if not self._in_flight and not self._pending:
            self._in_flight += 1
            try:
                reply = (await self._send(redis, (command,)))[0]
            finally:
                self._in_flight -= 1
                if self._pending:
                    self._schedule()
            if isinstance(reply, Exception):
                raise reply
            return reply
        return await self._enqueue(redis, (command,), True)

    def _enqueue(
        self, redis: Redis, commands: Sequence[tuple[Any, ...]], one: bool
    ) -> asyncio.Future[Any]:
        # Awaited as it is, not shielded: a cancelled caller cancels its own future only; the
        # pipeline runs in its own task and still carries the group (its side commands run),
        # and the reply is simply not delivered.
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((redis, commands, fut, one))
        self._schedule()
        return fut

    def _schedule(self) -> None:
        if self._scheduled or not self._pending or self._in_flight >= self.max_in_flight:
            return
        self._scheduled = True
        asyncio.get_running_loop().call_soon(self._start)

    def _start(self) -> None:
        self._scheduled = False
        loop = asyncio.get_running_loop()
        while self._pending and self._in_flight < self.max_in_flight:
            pending = self._pending
            redis = pending[0][0]
            if len(pending) <= self.max_batch and all(g[0] is redis for g in pending):
                batch, self._pending = pending, []
            else:
                batch = [g for g in pending[: self.max_batch] if g[0] is redis]
                taken = {id(g) for g in batch}
                self._pending = [g for g in pending if id(g) not in taken]
            self._in_flight += 1
            task = loop.create_task(self._run(redis, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, redis: Redis, batch: list[_Group]) -> None:
        progress = _Progress()
        try:
            commands = batch[0][1] if len(batch) == 1 else [c for g in batch for c in g[1]]
            replies = await self._send(redis, commands, progress)
        except asyncio.CancelledError:
            # Shutdown (aclose): the callers learn whether their commands may have run.
            self._fail(batch, progress.outcome_unknown("pipeline cancelled"))
            raise
        except Exception as exc:
            self._fail(batch, exc)
        else:
            i = 0
            for _, cmds, fut, one in batch:
                n = len(cmds)
                if not fut.done():
                    if one:
                        reply = replies[i]
                        if isinstance(reply, Exception):
                            fut.set_exception(reply)
                        else:
                            fut.set_result(reply)
                    else:
                        fut.set_result(replies[i : i + n])
                i += n
        finally:
            self._in_flight -= 1
            self._schedule()

    @staticmethod
    def _fail(batch: list[_Group], exc: Exception) -> None:
        for _, _, fut, _ in batch:
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # a cancelled caller leaves it unretrieved: no noise

    def _bounded_by_client(self, pool: Any) -> bool:
        """Do the pool's own timeouts bound every wait within ``timeout``?

        Socket timeout (each write and each read that waits), connect timeout, and the
        blocking pool's wait for a free connection (a non-blocking pool never waits).
        """
        found = self._self_bounded.get(pool)
        if found is None:
            kw = getattr(pool, "connection_kwargs", {})
            waits = [kw.get("socket_timeout"), kw.get("socket_connect_timeout")]
            if hasattr(pool, "timeout"):  # BlockingConnectionPool
                waits.append(pool.timeout)
            found = all(w is not None and 0 < w <= self.timeout for w in waits)
            with contextlib.suppress(TypeError):  # a test double that takes no weak reference
                self._self_bounded[pool] = found
        return found

    async def _send(
        self, redis: Redis, commands: Sequence[tuple[Any, ...]], progress: _Progress | None = None
    ) -> list[Any]:
        pool = redis.connection_pool
        if self._bounded_by_client(pool):
            return await self._exchange(pool, commands, progress)
        progress = progress or _Progress()
        try:
            async with asyncio.timeout(self.timeout):
                return await self._exchange(pool, commands, progress)
        except TimeoutError as exc:
            if not progress.sent:
                # the timeout fired while waiting for a connection: nothing was sent
                raise NotSentError(f"no connection within {self.timeout}s") from exc
            raise

    async def _exchange(
        self, pool: Any, commands: Sequence[tuple[Any, ...]], progress: _Progress | None
    ) -> list[Any]:
        """One pipeline on one connection: pack, write once, read one reply per command.

        This is what redis-py's non-transactional ``Pipeline.execute`` does on the wire, without
        its per-call machinery (a Pipeline object, retry wrapper, response callbacks), and
        replies stay raw (bytes, ints, lists), which is what the engine decodes anyway. A
        command that Redis rejects comes back as its ResponseError in place, the rest still run.

        Raises NotSentError when nothing can have reached Redis: no connection (refused,
        handshake or pool timeout, failed health check). Anything after the write is ambiguous
        (the commands may have run) and is raised as it is.
        """
        conn: Any = None
        sent = ok = False
        try:
            try:
                conn = await self._connection(pool)
                # redis-py would PING an idle connection inside the write: do it before, so a
                # failed check is "not sent" rather than "sent, no reply".
                await conn.check_health()
            except Exception as exc:
                raise NotSentError(f"{type(exc).__name__}: {exc}") from exc
            packed = conn.pack_commands(commands)  # bad arguments: raised as they are
            sent = True
            if progress is not None:
                progress.sent = True
            self.pipelines += 1
            writer = _direct_writer(conn, packed)
            if writer is not None:
                writer.writelines(packed)
                await writer.drain()
            else:
                await conn.send_packed_command(packed, check_health=False)
            replies = await _read_replies(conn, len(commands))
            ok = True
            return replies
        except BaseException:
            if sent and conn is not None:
                # Cut off mid-exchange (timeout, cancel, reset): unread replies would reach
                # the next user of this connection. Drop it; the pool opens a fresh one.
                await conn.disconnect(nowait=True)
            raise
        finally:
            if conn is not None and not (ok and self._keep(pool, conn)):
                await pool.release(conn)

    async def _connection(self, pool: Any) -> Any:
        """A kept connection of ``pool`` (checked as the pool checks it), else a pooled one."""
        held = self._held
        for i in range(len(held) - 1, -1, -1):
            if held[i][0] is pool:
                conn = held.pop(i)[1]
                try:
                    await _ready(conn)
                except BaseException:
                    await pool.release(conn)
                    raise
                return conn
        return await pool.get_connection()

    def _keep(self, pool: Any, conn: Any) -> bool:
        # at most a quarter of a small pool, so lock and write commands always find connections
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


_fast_types: dict[type[Any], bool] = {}

#: A write this small on a connection with nothing buffered never waits: asyncio and uvloop
#: pause a writer only above their high-water mark (64 KiB), and the batcher reuses a
#: connection only after every reply of its previous pipeline came back.
_SMALL_WRITE: Final = 16 * 1024
_SEND: Final = AbstractConnection.send_packed_command


def _direct_writer(conn: Any, packed: list[Any]) -> Any:
    """The stream writer to put a small pipeline on directly, else None (send it through
    ``send_packed_command``).

    redis-py's ``send_packed_command`` bounds the write with ``asyncio.wait_for``, which on
    Python 3.11 creates a task per call: a fifth of a hit's time. A small write cannot block
    (see _SMALL_WRITE), so only the read that follows needs a bound, and it has one (the socket
    timeout, in ``read_response``). Only for redis-py's own hiredis connections whose send is
    not wrapped (a traffic counter, fakeredis): those are sent through their wrapper.
    """
    if _hiredis_reader(conn) is None:
        return None
    if "send_packed_command" in vars(conn) or type(conn).send_packed_command is not _SEND:
        return None
    writer = conn._writer
    if writer is None or writer.transport.is_closing():
        return None  # redis-py's send raises the proper "connection closed" error
    if sum(len(chunk) for chunk in packed) > _SMALL_WRITE:
        return None
    return writer


def _hiredis_reader(conn: Any) -> Any:
    """The connection's hiredis reader when replies may be taken from it directly, else None.

    Only for redis-py's own connection class (a test double or fakeredis overrides
    ``read_response`` and is read through it) with the hiredis parser, connected.
    """
    kind = type(conn)
    fast = _fast_types.get(kind)
    if fast is None:
        fast = _fast_types[kind] = getattr(kind, "read_response", None) is _READ_RESPONSE
    if not fast:
        return None
    parser = getattr(conn, "_parser", None)
    if _AsyncHiredisParser is None or type(parser) is not _AsyncHiredisParser:
        return None
    return parser._reader if parser._connected else None


async def _read_replies(conn: Any, n: int) -> list[Any]:
    """``n`` replies in order; error replies in place, as their ResponseError.

    Every wait for the network goes through redis-py's ``read_response``: bounded by the
    socket timeout, and the connection is disconnected when a wait fails. Replies that are
    already buffered (most of a pipeline's, after the first read) are taken straight from the
    hiredis reader: one timer per wait, not one per reply.
    """
    replies: list[Any] = []
    reader = _hiredis_reader(conn)
    if reader is not None:
        push_type = conn._parser._hiredis_PushNotificationType
        while len(replies) < n:
            reply = reader.gets()
            if reply is _NOT_ENOUGH_DATA:
                try:
                    reply = await conn.read_response()
                except ResponseError as exc:
                    reply = exc
            elif isinstance(reply, RedisConnectionError):  # e.g. LOADING: as redis-py raises
                raise reply
            elif push_type is not None and isinstance(reply, push_type):
                await conn._parser.handle_push_response(reply)
                continue
            replies.append(reply)
        return replies
    for _ in range(n):
        try:
            replies.append(await conn.read_response())
        except ResponseError as exc:
            replies.append(exc)
    return replies


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
