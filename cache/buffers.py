"""Exactly-once hand-over of a Redis hash buffer to a durable store.

A buffer is a Redis hash that many writers bump in the same round trip as their reads (HINCRBY
for counters, HSET for last-seen stamps). It carries no TTL, so ``volatile-lru`` never evicts
it. Moving it to the database must neither lose nor double-count anything, even when the
flusher crashes at any point. The protocol:

1. **Hand over** (one Lua script, atomic): if the buffer exists, RENAME it to
   ``{buffer}:batch:{id}`` (a fresh, time-ordered id) and SADD the id to ``{buffer}:pending``.
   Writers that arrive afterwards create a new buffer; nothing written is ever in two places.
2. For **every** pending batch, including those a crashed flush left behind: HGETALL it and
   let the caller apply it in ONE database transaction that also records the batch id in a
   table with a unique key (insert-if-absent). If the id was already there, the batch was
   applied before a crash and the counts are not added again.
3. **Ack** after the commit: DEL the batch key and SREM its id in one MULTI. Until then the
   batch is retried at every flush, and recognised as applied by its id.

Crash after 1 or 2 (before commit): the batch is still pending, applied next time. Crash after
the commit but before 3: the next flush finds the id recorded and only acks. This module only
knows hashes and ids; what a batch means (views, last-seen) is the caller's business.
"""

from __future__ import annotations

import secrets
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

__all__ = ["BufferHandoff", "DrainResult"]

# KEYS: buffer, batch key, pending set. ARGV: batch id.
_HAND_OVER = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('RENAME', KEYS[1], KEYS[2])
  redis.call('SADD', KEYS[3], ARGV[1])
  return 1
end
return 0
"""

_scripts: weakref.WeakKeyDictionary[Any, AsyncScript] = weakref.WeakKeyDictionary()


def _hand_over_script(redis: Redis) -> AsyncScript:
    """One registered script per client: repositories are built per update and must stay cheap."""
    script = _scripts.get(redis)
    if script is None:
        script = redis.register_script(_HAND_OVER)
        _scripts[redis] = script
    return script


def new_batch_id() -> str:
    """Millisecond timestamp (so pending batches apply oldest first) + randomness (uniqueness)."""
    return f"{time.time_ns() // 1_000_000:013d}-{secrets.token_hex(6)}"


#: ``apply(batch_id, fields) -> newly_applied``: must commit before returning.
Apply = Callable[[str, dict[bytes, bytes]], Awaitable[bool]]
#: Awaited between steps with the step's name; tests raise there to simulate crashes.
Checkpoint = Callable[[str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class DrainResult:
    """Batches handled in one drain, how many were newly applied, and their field count."""

    batches: int = 0
    applied: int = 0
    fields: int = 0


class BufferHandoff:
    """The Redis side of a buffer flush; see the module docstring for the protocol.

    Redis errors propagate: a flush is a background job, and failing loudly (to be retried at
    the next run) is exactly right there; nothing is lost because nothing is deleted early.
    """

    __slots__ = ("buffer_key", "pending_key", "redis")

    def __init__(self, redis: Redis, buffer_key: str) -> None:
        self.redis = redis
        self.buffer_key = buffer_key
        self.pending_key = buffer_key + ":pending"

    def batch_key(self, batch_id: str) -> str:
        return f"{self.buffer_key}:batch:{batch_id}"

    async def hand_over(self) -> str | None:
        """Atomically move the live buffer to a new pending batch; None when it was empty."""
        batch_id = new_batch_id()
        moved = await _hand_over_script(self.redis)(
            keys=[self.buffer_key, self.batch_key(batch_id), self.pending_key], args=[batch_id]
        )
        return batch_id if moved else None

    async def pending(self) -> list[str]:
        """Ids of batches handed over but not acked yet, oldest first."""
        members = cast("set[bytes]", await self.redis.smembers(self.pending_key))
        return sorted(m.decode() for m in members)

    async def read(self, batch_id: str) -> dict[bytes, bytes]:
        """The batch's fields; empty when its key is already gone (acked half-way)."""
        return cast("dict[bytes, bytes]", await self.redis.hgetall(self.batch_key(batch_id)))

    async def ack(self, batch_id: str) -> None:
        """Forget a batch whose contents are durably applied (DEL + SREM in one MULTI).

        DEL comes first: should the two ever be separated, a pending id without a key reads as
        an empty batch and is simply acked again, whereas a key without a pending id would leak.
        """
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.batch_key(batch_id))
        pipe.srem(self.pending_key, batch_id)
        await pipe.execute()

    async def snapshot(self) -> tuple[dict[bytes, bytes], dict[str, dict[bytes, bytes]]]:
        """The live buffer and every pending batch by id, for statistics.

        Pending batches may already be applied (a crash between commit and ack): the caller
        checks their ids against its applied-batches record before counting them.
        """
        ids = await self.pending()
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.buffer_key)
        for batch_id in ids:
            pipe.hgetall(self.batch_key(batch_id))
        live, *batches = cast("list[dict[bytes, bytes]]", await pipe.execute())
        return live, dict(zip(ids, batches, strict=True))

    async def drain(self, apply: Apply, *, checkpoint: Checkpoint | None = None) -> DrainResult:
        """Hand the buffer over, then apply and ack every pending batch, oldest first.

        Checkpoint names, in order: ``handed_over``, then per batch ``read``, ``committed``,
        ``acked``. (``apply`` may add its own, e.g. ``before_commit``.)
        """

        async def step(name: str) -> None:
            if checkpoint is not None:
                await checkpoint(name)

        await self.hand_over()
        await step("handed_over")
        batches = applied = fields = 0
        for batch_id in await self.pending():
            data = await self.read(batch_id)
            await step("read")
            if data and await apply(batch_id, data):
                applied += 1
                fields += len(data)
            await step("committed")
            await self.ack(batch_id)
            await step("acked")
            batches += 1
        return DrainResult(batches=batches, applied=applied, fields=fields)
