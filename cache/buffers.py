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

**Poison.** Anything unreadable would otherwise stop every later flush (the oldest pending batch
fails first, every time, and batches pile up behind it): a field the caller cannot parse
(``HSET …:buf:views 2026-12-05:leo abc``), a batch that is not a hash at all (a string SET at the
buffer key is renamed like any buffer), a pending set of the wrong type. They go to a
**dead-letter hash** ``{buffer}:dead`` (field ``{batch id}|{field}``, value cut to 512 bytes) in
the same atomic step as the ack, with a metric (``cache_dead_letters_total{buffer}``) and one
log line per batch; the valid fields of the batch are applied as usual, exactly once.

The dead-letter hash has **no TTL but a cap** (``DEAD_LETTER_CAP`` fields): it is evidence an
operator needs to explain the metric, so ``volatile-lru`` must not evict it (like the buffers it
comes from), yet poison written in a loop must not grow it without bound. Past the cap, further
dead letters are only counted and logged. An operator empties it with ``DEL`` once read.

**Redis Cluster.** The hand-over script RENAMEs the buffer to its batch key and SADDs to the
pending set; the ack script touches the batch, the pending set and the dead letters: all of them
must share the buffer's hash slot. They are named by ``cache.keys.related_key``: a buffer key
with a hash tag (``horo:v1:buf:{views}``, what a ``KeySpace(hash_tags=True)`` builds) gives
``horo:v1:buf:{views}:pending`` etc.; off a cluster the names are the historical ones
(``…:buf:views:pending``), so buffered counts of a running deployment stay readable.
"""

from __future__ import annotations

import logging
import secrets
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from cache.client import is_cluster
from cache.keys import related_key
from cache.metrics import CacheMetrics

__all__ = ["DEAD_LETTER_CAP", "Applied", "BufferHandoff", "DrainResult"]

log = logging.getLogger(__name__)

#: Fields kept in a dead-letter hash; beyond this they are counted and logged only.
DEAD_LETTER_CAP: Final = 1000
#: Bytes of a dead value kept (enough to see what it was, never a large blob).
DEAD_VALUE_BYTES: Final = 512

# KEYS: buffer, batch key, pending set. ARGV: batch id.
# -1: the pending set has the wrong type (nothing moved; the caller repairs it and retries).
_HAND_OVER = """
local t = redis.call('TYPE', KEYS[3]).ok
if t ~= 'set' and t ~= 'none' then return -1 end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('RENAME', KEYS[1], KEYS[2])
  redis.call('SADD', KEYS[3], ARGV[1])
  return 1
end
return 0
"""

# KEYS: dead-letter hash, then (for an ack) batch key and pending set. ARGV: batch id, cap,
# then field, value pairs. Dead letters and the ack in one atomic step: a crash leaves either
# both or neither (a rewrite of a field already there uses no room). Returns the dead letters
# kept (already there or written; the rest did not fit under the cap).
_ACK = """
local kept = 0
if #ARGV > 2 then
  local t = redis.call('TYPE', KEYS[1]).ok
  if t ~= 'hash' and t ~= 'none' then redis.call('DEL', KEYS[1]) end
  local room = tonumber(ARGV[2]) - redis.call('HLEN', KEYS[1])
  for i = 3, #ARGV, 2 do
    if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
      kept = kept + 1
    elseif room > 0 then
      redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
      room = room - 1
      kept = kept + 1
    end
  end
end
if #KEYS == 3 then
  redis.call('DEL', KEYS[2])
  redis.call('SREM', KEYS[3], ARGV[1])
end
return kept
"""

_scripts: weakref.WeakKeyDictionary[Any, tuple[AsyncScript, AsyncScript]] = (
    weakref.WeakKeyDictionary()
)


def _scripts_for(redis: Redis) -> tuple[AsyncScript, AsyncScript]:
    """Registered once per client: repositories are built per update and must stay cheap."""
    found = _scripts.get(redis)
    if found is None:
        found = (redis.register_script(_HAND_OVER), redis.register_script(_ACK))
        _scripts[redis] = found
    return found


def new_batch_id() -> str:
    """Millisecond timestamp (so pending batches apply oldest first) + randomness (uniqueness)."""
    return f"{time.time_ns() // 1_000_000:013d}-{secrets.token_hex(6)}"


def _is_wrongtype(exc: ResponseError) -> bool:
    return str(exc).startswith("WRONGTYPE")


@dataclass(frozen=True, slots=True)
class Applied:
    """What ``apply`` did with a batch: ``new`` when it applied it now (False: it had been
    applied before a crash, or held nothing applicable), ``rejected`` the fields it could not
    read (they go to the dead letters, whether or not the batch was new)."""

    new: bool
    rejected: Mapping[bytes, bytes] = field(default_factory=dict)


#: ``apply(batch_id, fields) -> Applied``: must commit before returning.
Apply = Callable[[str, dict[bytes, bytes]], Awaitable[Applied]]
#: Awaited between steps with the step's name; tests raise there to simulate crashes.
Checkpoint = Callable[[str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class DrainResult:
    """Batches handled in one drain, how many were newly applied, their field count, and the
    fields sent to the dead letters."""

    batches: int = 0
    applied: int = 0
    fields: int = 0
    dead: int = 0


class BufferHandoff:
    """The Redis side of a buffer flush; see the module docstring for the protocol.

    Redis errors propagate: a flush is a background job, and failing loudly (to be retried at
    the next run) is exactly right there; nothing is lost because nothing is deleted early.
    Unreadable data is not an error: it goes to the dead letters (``dead_key``).
    """

    __slots__ = ("buffer_key", "cluster", "dead_key", "metrics", "name", "pending_key", "redis")

    def __init__(
        self,
        redis: Redis,
        buffer_key: str,
        *,
        name: str = "",
        metrics: CacheMetrics | None = None,
    ) -> None:
        self.redis = redis
        self.buffer_key = buffer_key
        self.cluster = is_cluster(redis)
        self.pending_key = related_key(buffer_key, "pending", cluster=self.cluster)
        self.dead_key = related_key(buffer_key, "dead", cluster=self.cluster)
        self.name = name or buffer_key.rsplit(":", 1)[-1].strip("{}")
        self.metrics = metrics

    def batch_key(self, batch_id: str) -> str:
        return related_key(self.buffer_key, f"batch:{batch_id}", cluster=self.cluster)

    async def hand_over(self) -> str | None:
        """Atomically move the live buffer to a new pending batch; None when it was empty."""
        script = _scripts_for(self.redis)[0]
        for _ in range(2):
            batch_id = new_batch_id()
            moved = await script(
                keys=[self.buffer_key, self.batch_key(batch_id), self.pending_key],
                args=[batch_id],
            )
            if moved != -1:
                return batch_id if moved else None
            await self._repair_pending()
        return None

    async def pending(self) -> list[str]:
        """Ids of batches handed over but not acked yet, oldest first."""
        try:
            members = cast("set[bytes]", await self.redis.smembers(self.pending_key))
        except ResponseError as exc:
            if not _is_wrongtype(exc):
                raise
            await self._repair_pending()
            members = cast("set[bytes]", await self.redis.smembers(self.pending_key))
        return sorted(m.decode() for m in members)

    async def _repair_pending(self) -> None:
        """The pending set is not a set: keep what it was as a dead letter, then rebuild it
        from the batch keys themselves (they carry their ids), so no batch is forgotten."""
        summary = await self._describe(self.pending_key)
        await self._dead_letters({b"pending|*": summary}, "pending set of the wrong type")
        await self.redis.delete(self.pending_key)
        prefix = self.batch_key("")
        ids = [
            key.decode()[len(prefix) :]
            async for key in self.redis.scan_iter(match=prefix + "*", count=1000)
        ]
        if ids:
            await self.redis.sadd(self.pending_key, *ids)

    async def _describe(self, key: str) -> bytes:
        """A short readable account of a key of an unexpected type (for a dead letter)."""
        kind = cast("bytes", await self.redis.type(key)).decode()
        if kind == "string":
            return cast("bytes", await self.redis.getrange(key, 0, DEAD_VALUE_BYTES - 1))
        return f"<{kind}>".encode()

    async def read(self, batch_id: str) -> tuple[dict[bytes, bytes], dict[bytes, bytes]]:
        """The batch's fields, and the dead letters for a batch that is not a hash at all.

        Empty when its key is already gone (acked half-way).
        """
        key = self.batch_key(batch_id)
        try:
            return cast("dict[bytes, bytes]", await self.redis.hgetall(key)), {}
        except ResponseError as exc:
            if not _is_wrongtype(exc):
                raise
        return {}, {f"{batch_id}|*".encode(): await self._describe(key)}

    async def ack(self, batch_id: str, dead: Mapping[bytes, bytes] | None = None) -> int:
        """Forget a batch whose contents are durably applied, keeping ``dead`` fields in the
        dead-letter hash: DEL + SREM (+ HSET) in one atomic script; returns dead letters kept.

        DEL comes first: should the two ever be separated, a pending id without a key reads as
        an empty batch and is simply acked again, whereas a key without a pending id would leak.
        """
        keys = [self.dead_key, self.batch_key(batch_id), self.pending_key]
        return await self._ack_script(keys, batch_id, dead or {})

    async def _ack_script(self, keys: list[str], batch_id: str, dead: Mapping[bytes, bytes]) -> int:
        args: list[Any] = [batch_id, DEAD_LETTER_CAP]
        for name, value in dead.items():
            args += [name, value[:DEAD_VALUE_BYTES]]
        return int(await _scripts_for(self.redis)[1](keys=keys, args=args))

    async def _dead_letters(self, dead: Mapping[bytes, bytes], what: str) -> None:
        """Dead letters outside a batch ack (a repaired pending set)."""
        kept = await self._ack_script([self.dead_key], "", dead)
        self._count_dead(len(dead), kept, what, next(iter(dead)))

    def _count_dead(self, n: int, kept: int, what: str, sample: bytes) -> None:
        if self.metrics is not None:
            self.metrics.dead_letters(self.name, n)
        log.warning(
            "buffer %s: %d dead letter(s) (%s) moved to %s, %d kept (cap %d); e.g. %r",
            self.name,
            n,
            what,
            self.dead_key,
            kept,
            DEAD_LETTER_CAP,
            sample[:80],
        )

    async def snapshot(self) -> tuple[dict[bytes, bytes], dict[str, dict[bytes, bytes]]]:
        """The live buffer and every pending batch by id, for statistics.

        Pending batches may already be applied (a crash between commit and ack): the caller
        checks their ids against its applied-batches record before counting them. Keys of the
        wrong type read as empty here (the next flush moves them to the dead letters).
        """
        ids = await self.pending()
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.buffer_key)
        for batch_id in ids:
            pipe.hgetall(self.batch_key(batch_id))
        replies = await pipe.execute(raise_on_error=False)
        live, *batches = (r if isinstance(r, dict) else {} for r in replies)
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
        batches = applied = fields = dead_total = 0
        for batch_id in await self.pending():
            data, dead = await self.read(batch_id)
            await step("read")
            if data:
                outcome = await apply(batch_id, data)
                if outcome.new:
                    applied += 1
                    fields += len(data) - len(outcome.rejected)
                prefix = f"{batch_id}|".encode()
                dead.update((prefix + name, value) for name, value in outcome.rejected.items())
            await step("committed")
            kept = await self.ack(batch_id, dead)
            if dead:
                dead_total += len(dead)
                self._count_dead(len(dead), kept, f"batch {batch_id}", next(iter(dead)))
            await step("acked")
            batches += 1
        return DrainResult(batches=batches, applied=applied, fields=fields, dead=dead_total)
