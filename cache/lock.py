"""A Redis lock with owner tokens and a lease.

Why not redis-py's Lock: we need a non-blocking acquire (losers subscribe for the value rather
than spin), an explicit lease that a long holder keeps extending, and a standalone object the
jobs' leader election can reuse. Safety rules:

* acquire is ``SET name token NX PX lease``: atomic, and a crashed holder's lease expires.
* release / extend are Lua compare-and-delete / compare-and-pexpire: a holder whose lease
  already expired can never delete or prolong somebody else's lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError, WatchError

__all__ = ["RedisLock", "compare_and_apply", "script_or_fallback"]

log = logging.getLogger(__name__)

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_scripts: weakref.WeakKeyDictionary[Any, tuple[AsyncScript, AsyncScript]] = (
    weakref.WeakKeyDictionary()
)


def _scripts_for(redis: Redis) -> tuple[AsyncScript, AsyncScript]:
    """Register the Lua scripts once per client (EVALSHA afterwards, loaded on NOSCRIPT)."""
    found = _scripts.get(redis)
    if found is None:
        found = (redis.register_script(_RELEASE), redis.register_script(_EXTEND))
        _scripts[redis] = found
    return found


_no_lua: weakref.WeakSet[Any] = weakref.WeakSet()

R = TypeVar("R")


async def script_or_fallback(
    redis: Redis,
    script_call: Callable[[], Awaitable[R]],
    fallback: Callable[[], Awaitable[R]],
) -> R:
    """Run a Lua script; on a server that refuses it, do the same with WATCH/MULTI.

    Some Redis-compatible servers (and fakeredis without lupa) have no scripting. When the
    script fails with a ResponseError and the WATCH/MULTI fallback then succeeds, the client
    is remembered as script-less so later calls skip the doomed attempt. When the fallback
    fails too (e.g. OOM), that error propagates and nothing is remembered.
    """
    if redis in _no_lua:
        return await fallback()
    try:
        return await script_call()
    except ResponseError:
        result = await fallback()
        _no_lua.add(redis)
        return result


async def compare_and_apply(
    redis: Redis, name: str, token: bytes, apply: Callable[[Pipeline], Any]
) -> bool:
    """If ``name`` holds ``token``, run ``apply``'s queued commands atomically (WATCH/MULTI)."""
    async with redis.pipeline(transaction=True) as pipe:
        await pipe.watch(name)
        if await pipe.get(name) != token:
            await pipe.unwatch()  # type: ignore[no-untyped-call]
            return False
        pipe.multi()  # type: ignore[no-untyped-call]
        apply(pipe)
        try:
            await pipe.execute()
        except WatchError:
            return False
        return True


class RedisLock:
    """A lease-based lock on ``name``. Redis errors propagate: the caller decides the policy."""

    __slots__ = ("_held", "lease", "lost", "name", "redis", "token")

    def __init__(
        self, redis: Redis, name: str, *, lease: float = 10.0, token: bytes | None = None
    ) -> None:
        if lease <= 0:
            raise ValueError("lease must be positive")
        self.redis = redis
        self.name = name
        self.lease = lease
        self.token = token if token is not None else secrets.token_hex(16).encode()
        self._held = False
        #: set when an extend found the lock no longer ours (lease expired, or deleted)
        self.lost = False

    @property
    def lease_ms(self) -> int:
        return max(1, int(self.lease * 1000))

    @property
    def held(self) -> bool:
        """Whether this object believes it holds the lock (it may have expired meanwhile)."""
        return self._held

    async def acquire(self) -> bool:
        """Try once, never wait: True when the lock is now ours."""
        ok = await self.redis.set(self.name, self.token, nx=True, px=self.lease_ms)
        self._held = bool(ok)
        if self._held:
            self.lost = False
        return self._held

    async def release(self) -> bool:
        """Delete the lock if it is still ours; False when it had expired or changed hands."""
        self._held = False
        release, _ = _scripts_for(self.redis)

        async def lua() -> bool:
            return bool(await release(keys=[self.name], args=[self.token]))

        async def cas() -> bool:
            return await compare_and_apply(
                self.redis, self.name, self.token, lambda p: p.delete(self.name)
            )

        return await script_or_fallback(self.redis, lua, cas)

    async def extend(self, lease: float | None = None) -> bool:
        """Reset the lease to ``lease`` (default: the lock's lease) if the lock is still ours."""
        ms = self.lease_ms if lease is None else max(1, int(lease * 1000))
        _, extend = _scripts_for(self.redis)

        async def lua() -> bool:
            return bool(await extend(keys=[self.name], args=[self.token, ms]))

        async def cas() -> bool:
            return await compare_and_apply(
                self.redis, self.name, self.token, lambda p: p.pexpire(self.name, ms)
            )

        ok = await script_or_fallback(self.redis, lua, cas)
        if not ok:
            self._held = False
            self.lost = True
        return ok

    def forget(self) -> None:
        """Mark as not held without a round trip (someone else released it atomically)."""
        self._held = False

    async def _keep_alive(self) -> None:
        interval = self.lease / 3
        while True:
            await asyncio.sleep(interval)
            try:
                if not await self.extend():
                    log.warning("lock %s lost while held", self.name)
                    return
            except Exception as exc:  # Redis down: keep trying, the lease may still hold
                log.warning("lock %s extend failed: %r", self.name, exc)

    @contextlib.asynccontextmanager
    async def hold(self, *, acquire: bool = True) -> AsyncIterator[bool]:
        """Hold the lock for the body, extending the lease every lease/3 in the background.

        Yields whether the lock is held (acquiring first when ``acquire`` and not yet held).
        When not held the body still runs (with False) and nothing is extended or released,
        so a leader-election job writes ``async with lock.hold() as leader: if leader: ...``.
        Releases at the end unless the lock was already released/forgotten meanwhile.
        """
        if acquire and not self._held:
            await self.acquire()
        if not self._held:
            yield False
            return
        keeper = asyncio.create_task(self._keep_alive())
        try:
            yield True
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            if self._held:
                try:
                    await self.release()
                except Exception as exc:  # the lease will expire on its own
                    log.warning("lock %s release failed: %r", self.name, exc)
