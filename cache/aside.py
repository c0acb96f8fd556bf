"""The cache-aside engine: Redis first, then the loader, never an error because of Redis.

Read path of ``get_or_load``:

1. One GET. It rides the auto-pipeline (cache/pipelining.py): sent at once from the caller's
   task when nothing else is in flight, in a shared pipeline with every other read when
   something is, so a hundred concurrent hits cost a few round trips. Concurrent calls for one
   key in this process share one read (its GET, and its load on a miss). A hit is decoded and
   returned: no lock, no PTTL, no second command, no timer of the engine's own (the client's
   socket timeout bounds the wait). Values are stored in a self-identifying envelope
   (cache/envelope.py) whose header (kind, expiry, load time) lets negative caching and early
   refresh work from the GET reply alone; anything that is not such an envelope is a miss that
   is counted, deleted and reloaded.
2. Miss: single-flight in this process, then ``SET key:lock token NX PX lease`` across
   processes. The winner loads, and one Lua script writes the value *only if it still holds
   the lock* (an invalidation deletes the lock, so a load that raced a write cannot put the
   old value back), releases the lock and PUBLISHes on ``key:chan``. Losers do not poll:
   they SUBSCRIBE, re-check GET once, wait for the message (bounded by ``lock_wait``), GET.
   After the bound they take the lock if it is free, else load without writing.
3. Redis errors of any kind are counted and swallowed; the circuit breaker skips Redis for
   a cool-down after repeated connection failures/timeouts so a dead Redis costs nothing.
   Loader exceptions propagate (to every single-flight waiter) and are never cached.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar, cast

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException
from redis.exceptions import TimeoutError as RedisTimeoutError

from cache.breaker import CircuitBreaker
from cache.client import REDIS_ERRORS, is_cluster
from cache.codec import Codec, CodecError
from cache.envelope import NOT_FOUND, open_envelope, seal, stamp
from cache.invalidation import flush_invalidations as _flush_invalidations
from cache.invalidation import invalidate_after_commit as _invalidate_after_commit
from cache.keys import namespace_of, related_key
from cache.lock import RedisLock, compare_and_apply, script_or_fallback
from cache.metrics import CacheMetrics, default_metrics
from cache.pipelining import NotSentError, PipelineBatcher
from cache.singleflight import SingleFlight
from cache.slots import ClusterBatcher

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["NOT_FOUND", "CacheAside", "Load", "SideCommand", "Ttl"]

log = logging.getLogger(__name__)

T = TypeVar("T")
V = TypeVar("V")

#: ttl in seconds, or a function of the loaded value returning seconds (<= 0: do not cache)
Ttl = float | Callable[[Any], float]

#: Errors that mean "Redis is unavailable right now" and trip the breaker.
#: (A cluster client raises RedisClusterException, which is no RedisError, when no node
#: answers at all or a slot has no node: unavailable too.)
_UNAVAILABLE: Final = (
    RedisConnectionError,
    RedisTimeoutError,
    RedisClusterException,
    OSError,
    TimeoutError,
)

# Write the value only while we still hold the lock, release it, wake the waiters. Publishing
# happens even when the write is dropped so that waiters fall back at once instead of after
# lock_wait. ARGV: token, payload, px (0 = do not write), channel.
_COMMIT = """
local ours = redis.call('GET', KEYS[2]) == ARGV[1]
if ours then
  if tonumber(ARGV[3]) > 0 then
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  end
  redis.call('DEL', KEYS[2])
end
redis.call('PUBLISH', ARGV[4], '1')
if ours then return 1 end
return 0
"""


class _Undecodable:
    """What ``_open`` returns for bytes that are not a readable envelope (already counted)."""

    __slots__ = ()


_UNDECODABLE: Final = _Undecodable()


def _pool_exhausted(exc: BaseException) -> bool:
    """redis-py's BlockingConnectionPool says "No connection available." after its timeout."""
    while exc is not None:
        if isinstance(exc, RedisConnectionError) and "No connection available" in str(exc):
            return True
        exc = exc.__cause__  # type: ignore[assignment]
    return False


def _side_namespace(cmd: SideCommand) -> str:
    """Metrics label of a side command: the namespace of the key it writes."""
    return namespace_of(str(cmd.args[1])) if len(cmd.args) > 1 else "?"


class _OwnerGone(Exception):
    """The coalesced GET's owner was cancelled; joiners issue their own GET."""


@dataclass(frozen=True, slots=True)
class SideCommand:
    """A Redis write sent in the same round trip as a read (e.g. a view counter HINCRBY).

    ``fallback`` is awaited when the command could not run (Redis error, breaker open, cache
    disabled): the caller's way to write the same fact straight to Postgres so nothing is
    lost. Fallback exceptions are logged and swallowed.

    ``on_result`` receives the command's reply when it ran (e.g. the INCR of a throttle
    window), so a decision that needs a Redis answer still costs no extra round trip. It is not
    called when the command could not run; the caller keeps its fail-open default then.
    """

    args: tuple[Any, ...]
    fallback: Callable[[], Awaitable[None]] | None = None
    on_result: Callable[[Any], None] | None = None


@dataclass(frozen=True, slots=True)
class Load(Generic[T]):
    """One entry of ``load_many``: the same options as ``get_or_load``."""

    key: str
    loader: Callable[[], Awaitable[T | None]]
    codec: Codec[T]
    ttl: Ttl
    negative_ttl: float | None = None
    lock: bool = True
    early_refresh: float | None = None


class CacheAside:
    """Redis-first cache-aside with single-flight, a cross-process lock and graceful degrade.

    ``redis=None`` disables the cache (every call goes to the loader, still single-flighted).
    ``op_timeout`` bounds the engine's writes and lock commands, and its reads when the client
    has no socket timeouts of its own (``create_redis`` sets them; then they bound the reads).
    """

    #: XFetch beta: >1 refreshes earlier, <1 later. 1.0 is the paper's optimum.
    xfetch_beta: float = 1.0

    def __init__(
        self,
        redis: Redis | None,
        *,
        metrics: CacheMetrics | None = None,
        breaker: CircuitBreaker | None = None,
        jitter: float = 0.1,
        lock_lease: float = 10.0,
        lock_wait: float = 5.0,
        op_timeout: float = 0.3,
    ) -> None:
        if not 0 <= jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        self.redis = redis
        self.metrics = metrics if metrics is not None else default_metrics()
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        self.breaker.on_change = self.metrics.set_breaker_state
        self.metrics.set_breaker_state(self.breaker.state)
        self.jitter = jitter
        self.lock_lease = lock_lease
        self.lock_wait = lock_wait
        self.op_timeout = op_timeout
        #: a Redis Cluster: per-node pipelines, and lock/channel names in the key's slot
        self.cluster = is_cluster(redis)
        self._batcher: PipelineBatcher | ClusterBatcher = (
            ClusterBatcher(timeout=op_timeout)
            if self.cluster
            else PipelineBatcher(timeout=op_timeout)
        )
        self._flight = SingleFlight()
        # one background refresh per key in this process (the refreshes' single-flight)
        self._refreshing: dict[str, asyncio.Task[None]] = {}
        #: get_or_load calls in flight, by key: the owner's GET command (its identity) ...
        self._reads: dict[str, tuple[str, str]] = {}
        #: ... and, by id of that tuple, the futures of callers who joined it
        self._joined: dict[int, list[asyncio.Future[Any]]] = {}
        #: what the owner's read amounted to (read right after it returns, see get_or_load)
        self._outcome = ""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._last_failure: BaseException | None = None
        self._refresh_backoff: dict[str, float] = {}
        self._commit_script: AsyncScript | None = (
            redis.register_script(_COMMIT) if redis is not None else None
        )

    # ------------------------------------------------------------------ helpers

    def _track(self, task: asyncio.Task[Any]) -> None:
        """Keep a strong reference to a background task until it ends (asyncio keeps weak)."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def lock_key(self, key: str) -> str:
        """The load lock of ``key`` (``key:lock``; in ``key``'s slot on a cluster)."""
        return related_key(key, "lock", cluster=self.cluster)

    def _channel(self, key: str) -> str:
        """Where the lock holder announces that ``key``'s load is done."""
        return related_key(key, "chan", cluster=self.cluster)

    def _usable(self) -> Redis | None:
        redis = self.redis
        if redis is not None and self.breaker.allow():
            return redis
        return None

    def _redis_failed(self, ns: str, exc: BaseException) -> None:
        self.metrics.event(ns, "redis_error")
        if exc is self._last_failure:
            # The same failed round trip, seen by another caller who shared it (a pipeline,
            # a coalesced GET): one failure for the breaker, not one per caller.
            return
        self._last_failure = exc
        if _pool_exhausted(exc):
            # Our own pool was busy for pool_timeout: a local burst, not a sign Redis is down.
            pass
        elif isinstance(exc, _UNAVAILABLE):
            self.breaker.record_failure()
        else:  # the server answered (OOM, READONLY, WRONGTYPE...): it is alive
            self.breaker.record_success()
        log.debug("redis error in namespace %s: %r", ns, exc)

    def _ttl_ms(self, ttl: Ttl, value: Any) -> int:
        """Jittered TTL in ms for ``value``; 0 means "do not cache"."""
        seconds = ttl(value) if callable(ttl) else ttl
        if seconds <= 0:
            return 0
        if self.jitter:
            seconds *= 1.0 + self.jitter * (2.0 * random.random() - 1.0)
        return max(1, int(seconds * 1000))

    def _open(self, data: bytes, codec: Codec[V], key: str, ns: str, *, hit: bool = True) -> Any:
        """The one decoder of a stored value, for every read path: V, NOT_FOUND or _UNDECODABLE.

        Counts the outcome (``hit`` / ``negative_hit``, unless ``hit=False``; and always
        ``decode_error``). The caller deletes an undecodable value (``_drop``), then treats it
        as a miss: a foreign or stale value heals itself instead of failing every read.
        """
        try:
            value = open_envelope(data, codec)
        except CodecError as exc:
            self.metrics.event(ns, "decode_error")
            log.warning("undecodable cache value at %s: %s", key, exc)
            return _UNDECODABLE
        if hit:
            self.metrics.event(ns, "negative_hit" if value is NOT_FOUND else "hit")
        return value

    async def _drop(self, redis: Redis, keys: Sequence[str], ns: str) -> None:
        """Delete undecodable values (one DEL), so the next read loads instead of failing."""
        await self._delete_quietly(redis, keys, ns)

    async def _run_fallbacks(self, also: Sequence[SideCommand]) -> None:
        for cmd in also:
            if cmd.fallback is None:
                continue
            try:
                await cmd.fallback()
            except Exception:
                log.exception("side command fallback failed: %r", cmd.args[:2])

    async def _side_failed(self, also: Sequence[SideCommand], exc: BaseException) -> None:
        """Replay side commands through their fallbacks only when they surely did not run.

        ``NotSentError`` (no connection: refused, handshake or pool timeout, failed health
        check) means nothing reached Redis: replay. Anything after the write (a timeout, a
        reset before the reply) is ambiguous: the pipeline may have run. Replaying it into
        Postgres could count a view twice, so it is counted (``side_unknown``) and logged.
        """
        if not also:
            return
        if not isinstance(exc, NotSentError):
            self.metrics.event(_side_namespace(also[0]), "side_unknown", len(also))
            log.warning(
                "side commands may have run, not replayed (%s): %r",
                type(exc).__name__,
                [c.args[:2] for c in also],
            )
            return
        await self._run_fallbacks(also)

    async def send(self, *commands: SideCommand) -> None:
        """Side commands on their own, in one pipeline (e.g. a view counted without a read).

        Same guarantees as ``also=`` on a read: fallbacks run when Redis is unavailable.
        """
        if not commands:
            return
        redis = self._usable()
        if redis is None:
            await self._run_fallbacks(commands)
            return
        try:
            await self._read_with_side(redis, None, commands)
            self.breaker.record_success()
        except REDIS_ERRORS as exc:
            self._redis_failed(_side_namespace(commands[0]), exc)
            await self._side_failed(commands, exc)

    async def _get(self, redis: Redis, key: str) -> bytes | None:
        """GET through the auto-pipeline."""
        return cast("bytes | None", await self._batcher.execute_one(redis, ("GET", key)))

    async def _read_with_side(
        self, redis: Redis, cmd: tuple[Any, ...] | None, also: Sequence[SideCommand]
    ) -> Any:
        """Send one read (if any) plus the side commands in one (shared) pipeline.

        Side commands whose reply is an error run their fallbacks; replies go to on_result.
        """
        if not also:
            return await self._batcher.execute_one(redis, cmd) if cmd is not None else None
        commands = [side.args for side in also]
        if cmd is not None:
            commands.insert(0, cmd)
        results = await self._batcher.execute(redis, commands)
        if cmd is None:
            results = [None, *results]
        failed = []
        for side, reply in zip(also, results[1:], strict=True):
            if isinstance(reply, Exception):
                failed.append(side)
            elif side.on_result is not None:
                try:
                    side.on_result(reply)
                except Exception:
                    log.exception("side command on_result failed: %r", side.args[:2])
        if failed:
            await self._run_fallbacks(failed)
        first = results[0]
        if isinstance(first, Exception):
            if isinstance(first, NotSentError):
                # Only on a cluster (the read's node ran nothing, other nodes ran their side
                # commands): the sides are settled above, so the caller must not replay them.
                raise RedisConnectionError(str(first)) from first
            raise first
        return first

    # ------------------------------------------------------------------ reads

    async def get_or_load(
        self,
        key: str,
        loader: Callable[[], Awaitable[T | None]],
        *,
        ttl: Ttl,
        codec: Codec[T],
        negative_ttl: float | None = None,
        lock: bool = True,
        early_refresh: float | None = None,
        also: Sequence[SideCommand] = (),
    ) -> T | None:
        """Return the cached value of ``key``, loading (once, everywhere) on a miss.

        None means "not found" (the loader returned None); that is cached for
        ``negative_ttl`` seconds when given. ``also`` are extra Redis writes sent in the same
        round trip as the GET.

        Concurrent calls for one key in this process share one read: the first caller's GET
        (and, on a miss, its load); the others wait for its result, each on a future of its
        own (a cancelled one cancels only itself). A call with ``also`` has commands of its
        own to send, so it always reads for itself. ``invalidate`` detaches the key, so a call
        arriving after it starts afresh.
        """
        if also:
            return await self._read(
                key, loader, ttl, codec, negative_ttl, lock, early_refresh, also
            )
        reads = self._reads
        owner = reads.get(key)
        while owner is not None:
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            waiting = self._joined.get(id(owner))
            if waiting is None:
                self._joined[id(owner)] = [fut]
            else:
                waiting.append(fut)
            with contextlib.suppress(_OwnerGone):
                return cast("T | None", await fut)
            owner = reads.get(key)  # the owner was cancelled: another joiner may own it now
        token = ("GET", key)  # this read's identity, and its GET command
        reads[key] = token
        try:
            value = await self._read(
                key, loader, ttl, codec, negative_ttl, lock, early_refresh, (), token
            )
        except BaseException as exc:
            if reads.get(key) is token:
                del reads[key]
            waiting = self._joined.pop(id(token), None) if self._joined else None
            if waiting:
                shared = exc if isinstance(exc, Exception) else _OwnerGone()
                for f in waiting:
                    if not f.done():
                        f.set_exception(shared)
                        f.exception()  # retrieved: no noise if that joiner is gone too
            raise
        # Set by _read just before it returned: no other task ran in between.
        outcome = self._outcome
        if reads.get(key) is token:
            del reads[key]
        if self._joined:
            waiting = self._joined.pop(id(token), None)
            if waiting:
                for f in waiting:
                    if not f.done():
                        f.set_result(value)
                self._count_joined(key, outcome, len(waiting))
        return value

    def _count_joined(self, key: str, outcome: str, n: int) -> None:
        """Each caller that shared a read is a lookup of its own (the hit ratio counts them):
        a hit (``stale``: a hit served while its refresh is due), a negative hit, or a miss
        that joined the owner's load; "" when Redis was not asked (down, breaker open)."""
        ns = namespace_of(key)
        if outcome == "stale":
            self.metrics.event(ns, "hit", n)
            self.metrics.event(ns, "stale_served", n)
            return
        if outcome:
            self.metrics.event(ns, outcome, n)
        if outcome != "hit" and outcome != "negative_hit":
            self.metrics.event(ns, "singleflight_joined", n)

    async def _read(
        self,
        key: str,
        loader: Callable[[], Awaitable[T | None]],
        ttl: Ttl,
        codec: Codec[T],
        negative_ttl: float | None,
        lock: bool,
        early_refresh: float | None,
        also: Sequence[SideCommand],
        cmd: tuple[str, str] | None = None,
    ) -> T | None:
        """One read of ``key``: GET (with ``also``), decode, or load. Sets ``_outcome``."""
        redis = self.redis
        use_redis = False
        outcome = ""
        if redis is None or not self.breaker.allow():
            if also:
                await self._run_fallbacks(also)
        else:
            try:
                if also:
                    data = await self._read_with_side(redis, ("GET", key), also)
                else:
                    data = await self._batcher.execute_one(redis, cmd or ("GET", key))
            except REDIS_ERRORS as exc:
                self._redis_failed(namespace_of(key), exc)
                if also:
                    await self._side_failed(also, exc)
            else:
                self.breaker.record_success()
                ns = namespace_of(key)
                if data is not None:
                    value = self._open(data, codec, key, ns)
                    if value is NOT_FOUND:
                        self._outcome = "negative_hit"
                        return None
                    if value is not _UNDECODABLE:
                        self._outcome = "hit"
                        if early_refresh is not None and self._refresh_due(data, early_refresh):
                            spec = Load(key, loader, codec, ttl, negative_ttl, lock, early_refresh)
                            self._start_refresh(spec, ns)
                            self._outcome = "stale"
                        return cast("T", value)
                    await self._drop(redis, (key,), ns)
                self.metrics.event(ns, "miss")
                outcome = "miss"
                use_redis = True
        spec = Load(key, loader, codec, ttl, negative_ttl, lock, early_refresh)
        loaded = await self._load(spec, namespace_of(key), use_redis)
        self._outcome = outcome
        return loaded

    async def load_many(
        self, loads: Sequence[Load[Any]], *, also: Sequence[SideCommand] = ()
    ) -> list[Any]:
        """``get_or_load`` for several keys with ONE round trip (MGET + side commands).

        Misses then load concurrently, each through single-flight and the lock.
        """
        n = len(loads)
        datas: list[bytes | None] = [None] * n
        use_redis = False
        redis = self._usable()
        first_ns = namespace_of(loads[0].key) if loads else "?"
        if redis is None:
            await self._run_fallbacks(also)
        elif n or also:
            try:
                cmd = ("MGET", *(ld.key for ld in loads)) if n else None
                got = await self._read_with_side(redis, cmd, also)
                if n:
                    datas = got
                use_redis = True
                self.breaker.record_success()
            except REDIS_ERRORS as exc:
                self._redis_failed(first_ns, exc)
                await self._side_failed(also, exc)
        results: list[Any] = [None] * n
        pending: list[tuple[int, Awaitable[Any]]] = []
        bad: list[str] = []
        for i, (ld, data) in enumerate(zip(loads, datas, strict=True)):
            ns = namespace_of(ld.key)
            if data is not None:
                value = self._open(data, ld.codec, ld.key, ns)
                if value is not _UNDECODABLE:
                    if value is not NOT_FOUND:
                        results[i] = value
                        if ld.early_refresh is not None and self._refresh_due(
                            data, ld.early_refresh
                        ):
                            self._start_refresh(ld, ns)
                    continue
                bad.append(ld.key)
            if use_redis:
                self.metrics.event(ns, "miss")
            pending.append((i, self._load(ld, ns, use_redis)))
        if bad and redis is not None:
            await self._drop(redis, bad, first_ns)
        if pending:
            values = await asyncio.gather(*(c for _, c in pending))
            for (i, _), value in zip(pending, values, strict=True):
                results[i] = value
        return results

    async def get_many(self, keys: Sequence[str], codec: Codec[T]) -> list[T | None]:
        """One MGET; a miss, NOT_FOUND, an undecodable value or a Redis error give None.

        Undecodable values are deleted (one DEL) like on every other read path.
        """
        if not keys:
            return []
        redis = self._usable()
        ns = namespace_of(keys[0])
        if redis is None:
            return [None] * len(keys)
        try:
            datas = cast(
                "list[bytes | None]", await self._batcher.execute_one(redis, ("MGET", *keys))
            )
        except REDIS_ERRORS as exc:
            self._redis_failed(ns, exc)
            return [None] * len(keys)
        self.breaker.record_success()
        out: list[T | None] = []
        bad: list[str] = []
        for key, data in zip(keys, datas, strict=True):
            kns = namespace_of(key)
            if data is None:
                self.metrics.event(kns, "miss")
                out.append(None)
                continue
            value = self._open(data, codec, key, kns)
            if value is _UNDECODABLE:
                bad.append(key)
                value = None
            elif value is NOT_FOUND:
                value = None
            out.append(cast("T | None", value))
        if bad:
            await self._drop(redis, bad, ns)
        return out

    # ------------------------------------------------------------------ loading

    async def _load(self, ld: Load[T], ns: str, use_redis: bool) -> T | None:
        if ld.key in self._flight:
            self.metrics.event(ns, "singleflight_joined")

        async def once() -> T | None:
            return await self._load_once(ld, ns, use_redis)

        return await self._flight.do(ld.key, once)

    async def _call_loader(self, ns: str, loader: Callable[[], Awaitable[T | None]]) -> T | None:
        start = time.perf_counter()
        try:
            value = await loader()
        except BaseException:
            self.metrics.event(ns, "load_error")
            raise
        finally:
            self.metrics.observe_load(ns, time.perf_counter() - start)
        self.metrics.event(ns, "load")
        return value

    def _payload(self, value: T | None, ld: Load[T], delta: int) -> tuple[bytes, int]:
        """Envelope + PX for a loaded value; px 0 means "do not cache"."""
        if value is None:
            if ld.negative_ttl is None:
                return b"", 0
            px = self._ttl_ms(ld.negative_ttl, None)
            return (seal(px, delta, None), px) if px else (b"", 0)
        px = self._ttl_ms(ld.ttl, value)
        if not px:
            return b"", 0
        return seal(px, delta, ld.codec.encode(value)), px

    async def _load_once(self, ld: Load[T], ns: str, use_redis: bool) -> T | None:
        key, loader = ld.key, ld.loader
        redis = self._usable() if use_redis else None
        if redis is None:
            return await self._call_loader(ns, loader)
        if not ld.lock:
            start = time.perf_counter()
            value = await self._call_loader(ns, loader)
            delta = int((time.perf_counter() - start) * 1000)
            await self._write_plain(redis, ld, ns, value, delta)
            return value
        lk = RedisLock(redis, self.lock_key(key), lease=self.lock_lease)
        if await self._try_acquire(lk, ns):
            return await self._load_as_holder(lk, ld, ns)
        if lk.lost:  # Redis failed while trying: degrade to the loader, do not wait
            return await self._call_loader(ns, loader)
        self.metrics.event(ns, "lock_waited")
        data = await self._wait_for_value(redis, key, ns)
        if data is not None:
            value = self._open(data, ld.codec, key, ns, hit=False)
            if value is NOT_FOUND:
                return None
            if value is not _UNDECODABLE:
                return cast("T", value)
            await self._drop(redis, (key,), ns)
        # No value after the bound (holder crashed, failed, or its write was invalidated):
        # take the lock if it is free now, otherwise load without writing.
        if self.breaker.allow() and await self._try_acquire(lk, ns):
            return await self._load_as_holder(lk, ld, ns)
        return await self._call_loader(ns, loader)

    async def _try_acquire(self, lk: RedisLock, ns: str) -> bool:
        """Non-blocking acquire; on a Redis error sets ``lk.lost`` and returns False."""
        try:
            async with asyncio.timeout(self.op_timeout):
                got = await lk.acquire()
        except REDIS_ERRORS as exc:
            self._redis_failed(ns, exc)
            lk.lost = True
            return False
        self.breaker.record_success()
        if got:
            self.metrics.event(ns, "lock_acquired")
        return got

    async def _load_as_holder(self, lk: RedisLock, ld: Load[T], ns: str) -> T | None:
        payload, px = b"", 0
        async with lk.hold(acquire=False):
            start = time.perf_counter()
            try:
                value = await self._call_loader(ns, ld.loader)
                delta = int((time.perf_counter() - start) * 1000)
                payload, px = self._payload(value, ld, delta)
            finally:
                # Runs on success and on loader errors (px 0: just release and wake the
                # waiters so they fall back at once). Marks the lock released so that
                # hold() does not spend a round trip releasing it again.
                await self._commit(lk, ld.key, ns, payload, px)
        return value

    async def _commit(self, lk: RedisLock, key: str, ns: str, payload: bytes, px: int) -> None:
        script = self._commit_script
        assert script is not None
        channel = self._channel(key)

        async def lua() -> None:
            await script(keys=[key, lk.name], args=[lk.token, payload, px, channel])

        async def cas() -> None:
            def apply(pipe: Pipeline) -> None:
                if px:
                    pipe.set(key, payload, px=px)
                pipe.delete(lk.name)

            await compare_and_apply(lk.redis, lk.name, lk.token, apply)
            await lk.redis.publish(channel, b"1")

        try:
            async with asyncio.timeout(self.op_timeout):
                await script_or_fallback(lk.redis, lua, cas)
            lk.forget()
        except REDIS_ERRORS as exc:
            self._redis_failed(ns, exc)
            lk.forget()  # do not try again in hold(); the lease expires by itself

    async def _write_plain(
        self, redis: Redis, ld: Load[T], ns: str, value: T | None, delta: int
    ) -> None:
        payload, px = self._payload(value, ld, delta)
        if not px:
            return
        try:
            async with asyncio.timeout(self.op_timeout):
                await redis.set(ld.key, payload, px=px)
        except REDIS_ERRORS as exc:
            self._redis_failed(ns, exc)

    async def _wait_for_value(self, redis: Redis, key: str, ns: str) -> bytes | None:
        """Wait (without polling) for the lock holder's value; None after lock_wait or errors.

        Commands: SUBSCRIBE, one GET re-check (the value may have landed before we
        subscribed), then one GET when the holder's message arrives.
        """
        pubsub = redis.pubsub()
        try:
            async with asyncio.timeout(self.op_timeout):
                await pubsub.subscribe(self._channel(key))
            data = await self._get(redis, key)
            if data is not None:
                return data
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.lock_wait
            async with asyncio.timeout(self.lock_wait + self.op_timeout):
                while True:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        return None
                    msg = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=remaining
                    )
                    if msg is not None and msg.get("type") == "message":
                        break
            return await self._get(redis, key)
        except REDIS_ERRORS as exc:
            self._redis_failed(ns, exc)
            return None
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    # ------------------------------------------------------------------ early refresh

    def _refresh_due(self, data: bytes, early_refresh: float) -> bool:
        """XFetch: refresh when ``now + early_refresh - delta * beta * ln(rand) >= expiry``.

        ``early_refresh`` is a deterministic margin in seconds (0 = pure XFetch); the
        probabilistic part is scaled by the recorded load time, so slow loaders start earlier
        and processes spread their attempts. Asked on every hit that wants early refresh, so it
        only reads the envelope's header: nothing is built unless a refresh is due.
        """
        expiry, delta = stamp(data)
        gap = early_refresh * 1000.0
        if delta:
            gap -= delta * self.xfetch_beta * math.log(1.0 - random.random())
        return time.time() * 1000.0 + gap >= expiry

    def _start_refresh(self, ld: Load[Any], ns: str) -> None:
        """One refresh per key per process (single-flight) and one across processes (the key's
        Redis lock); everyone else gets the current value meanwhile."""
        self.metrics.event(ns, "stale_served")
        key = ld.key
        if key in self._refreshing:
            return
        backoff = self._refresh_backoff.get(key)
        if backoff is not None:
            if backoff > time.time() * 1000.0:
                return
            del self._refresh_backoff[key]
        task = asyncio.get_running_loop().create_task(self._refresh(ld, ns))
        self._refreshing[key] = task
        self._track(task)
        task.add_done_callback(lambda t: self._refresh_done(key, t))

    def _refresh_done(self, key: str, task: asyncio.Task[None]) -> None:
        if self._refreshing.get(key) is task:
            del self._refreshing[key]

    async def _refresh(self, ld: Load[Any], ns: str) -> None:
        key = ld.key
        redis = self._usable()
        if redis is None:
            return
        lk = RedisLock(redis, self.lock_key(key), lease=self.lock_lease)
        if not await self._try_acquire(lk, ns):
            # Another process is refreshing (or loading): do not retry on every hit.
            if len(self._refresh_backoff) > 4096:
                self._refresh_backoff.clear()
            self._refresh_backoff[key] = time.time() * 1000.0 + 1000.0
            return
        self.metrics.event(ns, "early_refresh")
        try:
            await self._load_as_holder(lk, ld, ns)
        except Exception:  # keep serving the current value; the next window retries
            log.exception("early refresh of %s failed", key)

    # ------------------------------------------------------------------ writes

    async def set(self, key: str, value: T, *, ttl: Ttl, codec: Codec[T]) -> None:
        """Write one value (jittered TTL). Redis errors are counted and swallowed."""
        await self.set_many([(key, value)], ttl=ttl, codec=codec)

    async def set_many(
        self,
        items: Mapping[str, T] | Sequence[tuple[str, T]],
        *,
        ttl: Ttl,
        codec: Codec[T],
    ) -> None:
        """Write many values in one pipeline, each with its own jittered TTL.

        Jitter matters most here: a warm-up writes a batch at once, and without jitter the
        whole batch would expire (and be reloaded) in the same second.
        """
        pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
        writes: list[tuple[str, bytes, int]] = []
        for key, value in pairs:
            px = self._ttl_ms(ttl, value)
            if px:
                writes.append((key, seal(px, 0, codec.encode(value)), px))
        if not writes:
            return
        redis = self._usable()
        if redis is None:
            return
        ns = namespace_of(writes[0][0])
        try:
            async with asyncio.timeout(self.op_timeout):
                pipe = redis.pipeline(transaction=False)
                for key, payload, px in writes:
                    pipe.set(key, payload, px=px)
                await pipe.execute()
        except REDIS_ERRORS as exc:
            self._redis_failed(ns, exc)
            return
        self.breaker.record_success()

    async def invalidate(self, *keys: str) -> None:
        """Delete ``keys`` (and their load locks) in one DEL.

        Deleting the lock too means that a load which started before this call cannot write
        its possibly old value back (its commit is conditional on still holding the lock),
        and in-process loads/GETs in flight are detached so later callers start afresh.
        If Redis is unavailable the error is counted and swallowed: the entry then simply
        lives until its TTL (keep TTLs of invalidated data short for that reason).
        """
        if not keys:
            return
        for key in keys:
            self._flight.forget(key)
            self._reads.pop(key, None)
        redis = self._usable()
        if redis is None:
            return
        names = [*keys, *(self.lock_key(k) for k in keys)]
        await self._delete_quietly(redis, names, namespace_of(keys[0]))

    async def _delete_quietly(self, redis: Redis, names: Sequence[str], ns: str) -> None:
        try:
            await self._batcher.execute_one(redis, ("DEL", *names))
        except REDIS_ERRORS as exc:
            self._redis_failed(ns, exc)
            return
        self.breaker.record_success()

    def invalidate_after_commit(self, session: AsyncSession, *keys: str) -> None:
        """Delete ``keys`` once ``session`` commits; nothing happens on rollback.

        Call ``await cache.flush_invalidations(session)`` right after ``session.commit()``
        to have the keys gone when it returns (a background flush is the safety net).
        """
        _invalidate_after_commit(self, session, *keys)

    async def flush_invalidations(self, session: AsyncSession) -> None:
        """Delete the keys recorded for the transaction ``session`` just committed."""
        await _flush_invalidations(session)

    # ------------------------------------------------------------------ lifecycle

    async def healthy(self) -> bool:
        """PING within op_timeout (bypasses the breaker: this is what a probe asks)."""
        if self.redis is None:
            return False
        try:
            async with asyncio.timeout(self.op_timeout):
                return bool(await self.redis.ping())
        except REDIS_ERRORS:
            return False

    @property
    def in_flight(self) -> int:
        """Loads running right now in this process (for tests and debugging)."""
        return len(self._flight)

    async def aclose(self, *, cancel: bool = True) -> None:
        """Stop background refreshes (cancel, or wait when ``cancel=False``)."""
        await self._batcher.aclose()
        tasks = list(self._tasks)
        if cancel:
            for task in tasks:
                task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def wait_background(self) -> None:
        """Wait for running background refreshes (tests use this to observe them)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
