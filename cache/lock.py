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
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

__all__ = ["RedisLock"]

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
        release, _ = _scripts_for(self.redis)
        self._held = False
        return bool(await release(keys=[self.name], args=[self.token]))

    async def extend(self, lease: float | None = None) -> bool:
        """Reset the lease to ``lease`` (default: the lock's lease) if the lock is still ours."""
        _, extend = _scripts_for(self.redis)
        ms = self.lease_ms if lease is None else max(1, int(lease * 1000))
        ok = bool(await extend(keys=[self.name], args=[self.token, ms]))
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
