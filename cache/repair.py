"""Repair of cache entries that are not strings (the engine's GET can never read them).

A value of another type under a cache key (a hash written by hand, a leftover of an old
schema) makes every GET answer WRONGTYPE: the engine counts a Redis error, goes to the loader
and, since it cannot tell what Redis holds, writes nothing back, so the entry would cost a
Postgres query on every read until its TTL, and a hash written by hand has none.

``drop_wrong_type`` is awaited by a loader next to its query (``asyncio.gather``: no added
latency): one TYPE, and a DEL when the key holds another type, so the next read misses and
the engine stores a fresh value. Only on the cold path; a warm read pays nothing.
(Issue 12.4c; where the engine itself learns to treat WRONGTYPE as an undecodable value this
becomes unnecessary.)
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from cache.aside import CacheAside
from cache.client import REDIS_ERRORS
from cache.keys import namespace_of

__all__ = ["drop_wrong_type"]

log = logging.getLogger(__name__)

# DEL only when the key still holds another type (a fresh value may have landed meanwhile).
_DROP = """
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'string' and t ~= 'none' then
  redis.call('DEL', KEYS[1])
  return t
end
return false
"""

_READABLE: Final = (b"string", b"none")


async def drop_wrong_type(cache: CacheAside, key: str) -> bool:
    """Delete ``key`` if it holds anything but a string; True when it did.

    Best effort: skipped while the breaker keeps Redis off, errors are swallowed (the read
    already has its value from the loader; the repair is retried at the next cold read).
    """
    redis = cache.redis
    if redis is None or cache.breaker.is_open:
        return False
    try:
        async with asyncio.timeout(cache.op_timeout):
            kind = await redis.eval(_DROP, 1, key)
    except REDIS_ERRORS as exc:
        log.debug("type check of %s failed: %r", key, exc)
        return False
    if not kind:
        return False
    cache.metrics.event(namespace_of(key), "decode_error")
    name = kind.decode() if isinstance(kind, bytes) else str(kind)
    log.warning(
        "cache entry %s had the wrong type (%s): deleted, the next read reloads it", key, name
    )
    return True
