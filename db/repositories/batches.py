"""The buffer flush, written once for every Redis buffer (views, last-seen stamps).

The Redis side of the hand-over is cache/buffers.py; this is the Postgres side and the glue: a
``BufferKind`` says what one buffer's fields mean (``parse``), how two of them for one row
combine (``merge``) and which statement applies a batch (``apply``). ``flush_buffer`` then
runs the protocol: each pending batch is parsed, its valid items applied in ONE transaction
that also claims the batch id in ``applied_batches`` (a claim that finds the id means "applied
before a crash": the counts are not added again), and after the commit the batch is acked with
its unreadable fields moved to the buffer's dead-letter hash. ``unflushed`` reads what is still
on its way (live buffer + pending batches not applied yet) for statistics, through the same
``parse``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cache.buffers import Applied, BufferHandoff, Checkpoint
from cache.client import REDIS_ERRORS
from db.models import AppliedBatch
from db.repositories.context import DataContext

__all__ = [
    "KEEP_APPLIED",
    "BufferFlushed",
    "BufferKind",
    "claim_batch",
    "flush_buffer",
    "prune_applied",
    "unflushed",
]

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: How long applied batch ids are kept. Pruning runs only after a drain that acked every
#: pending batch, so an id older than this can no longer belong to a pending batch.
KEEP_APPLIED: Final = dt.timedelta(days=7)

_CLAIM = text(
    """
    INSERT INTO applied_batches (batch_id, kind, item_count)
    VALUES (:batch_id, :kind, :n)
    ON CONFLICT (batch_id) DO NOTHING
    RETURNING batch_id
    """
)

_PRUNE = text(
    "DELETE FROM applied_batches"
    " WHERE kind = :kind AND applied_at < now() - CAST(:keep AS interval)"
)


def _one(_: object) -> int:
    return 1


@dataclass(frozen=True, slots=True)
class BufferKind(Generic[K, V]):
    """What the fields of one buffer mean and how a batch of them reaches Postgres.

    ``parse(field, value)`` returns ``(row key, value)`` or None for a field that cannot be
    applied (it goes to the dead letters: never let one bad field stop every later flush).
    ``apply(session, items)`` runs in the transaction that claims the batch and returns the
    rows it touched. ``weight`` is what a value counts for in ``BufferFlushed.total`` (a view
    count for views, 1 per stamp for last-seen).
    """

    name: str
    parse: Callable[[bytes, bytes], tuple[K, V] | None]
    merge: Callable[[V, V], V]
    apply: Callable[[AsyncSession, dict[K, V]], Awaitable[int]]
    weight: Callable[[V], int] = _one

    def read(self, fields: dict[bytes, bytes]) -> tuple[dict[K, V], dict[bytes, bytes]]:
        """The batch's items (merged per row) and the fields that cannot be read."""
        items: dict[K, V] = {}
        bad: dict[bytes, bytes] = {}
        for name, raw in fields.items():
            parsed = self.parse(name, raw)
            if parsed is None:
                bad[name] = raw
                continue
            key, value = parsed
            items[key] = self.merge(items[key], value) if key in items else value
        return items, bad


@dataclass(frozen=True, slots=True)
class BufferFlushed:
    """One flush: batches handled, items newly applied, rows touched, their total weight,
    and fields sent to the dead letters."""

    batches: int = 0
    items: int = 0
    rows: int = 0
    total: int = 0
    dead: int = 0


async def claim_batch(session: AsyncSession, batch_id: str, kind: str, n: int) -> bool:
    """Record ``batch_id`` in the caller's transaction; False if it was already applied.

    Two flushers racing on one batch: the second INSERT waits for the first transaction and
    then finds the id, so exactly one of them applies the counts.
    """
    claimed = await session.scalar(_CLAIM, {"batch_id": batch_id, "kind": kind, "n": n})
    return claimed is not None


async def prune_applied(factory: async_sessionmaker[AsyncSession], kind: str) -> None:
    """Forget ids older than KEEP_APPLIED (the table would otherwise grow by one per flush)."""
    async with factory() as s, s.begin():
        await s.execute(_PRUNE, {"kind": kind, "keep": KEEP_APPLIED})


def _handoff(ctx: DataContext, buffer_key: str, kind: BufferKind[K, V]) -> BufferHandoff | None:
    redis = ctx.cache.redis
    if redis is None:
        return None
    return BufferHandoff(redis, buffer_key, name=kind.name, metrics=ctx.cache.metrics)


async def flush_buffer(
    ctx: DataContext,
    buffer_key: str,
    kind: BufferKind[K, V],
    *,
    checkpoint: Checkpoint | None = None,
) -> BufferFlushed:
    """Move the buffer at ``buffer_key`` to Postgres exactly once (see cache/buffers.py).

    Its own transactions: this is a job, not part of an update. ``checkpoint`` is a test hook
    awaited between steps (``handed_over``, ``read``, ``before_commit``, ``committed``,
    ``acked``); raising there simulates a crash.
    """
    ho = _handoff(ctx, buffer_key, kind)
    if ho is None:
        return BufferFlushed()
    items_total = rows_total = weight_total = 0

    async def apply(batch_id: str, fields: dict[bytes, bytes]) -> Applied:
        nonlocal items_total, rows_total, weight_total
        items, bad = kind.read(fields)
        if not items:  # nothing to apply: no transaction, the ack moves the dead letters
            return Applied(new=False, rejected=bad)
        async with ctx.session_factory() as s, s.begin():
            if not await claim_batch(s, batch_id, kind.name, len(items)):
                return Applied(new=False, rejected=bad)
            rows = await kind.apply(s, items)
            if checkpoint is not None:
                await checkpoint("before_commit")
        items_total += len(items)
        rows_total += rows
        weight_total += sum(kind.weight(v) for v in items.values())
        return Applied(new=True, rejected=bad)

    result = await ho.drain(apply, checkpoint=checkpoint)
    if result.applied:
        await prune_applied(ctx.session_factory, kind.name)
    return BufferFlushed(
        batches=result.batches,
        items=items_total,
        rows=rows_total,
        total=weight_total,
        dead=result.dead,
    )


async def unflushed(
    ctx: DataContext, buffer_key: str, kind: BufferKind[K, V], session: AsyncSession | None = None
) -> dict[K, V]:
    """Items still on their way to Postgres: the live buffer plus pending batches, merged.

    A pending batch already recorded in ``applied_batches`` (a flush died between its commit
    and its ack) is in Postgres already and is left out. Unreadable fields are skipped (the
    next flush dead-letters them). Redis unavailable: empty, so statistics still answer.
    ``session``: the caller's, for the applied-batches query (else a short one of its own).
    """
    ho = _handoff(ctx, buffer_key, kind)
    if ho is None:
        return {}
    try:
        live, batches = await ho.snapshot()
    except REDIS_ERRORS as exc:  # statistics must answer without Redis
        log.warning("%s buffer unavailable for statistics: %r", kind.name, exc)
        return {}
    if batches:
        query = select(AppliedBatch.batch_id).where(AppliedBatch.batch_id.in_(list(batches)))
        if session is not None:
            done = set(await session.scalars(query))
        else:
            async with ctx.session_factory() as s:
                done = set(await s.scalars(query))
        for batch_id in done:
            del batches[batch_id]
    out: dict[K, V] = {}
    for fields in (live, *batches.values()):
        items, _ = kind.read(fields)
        for key, value in items.items():
            out[key] = kind.merge(out[key], value) if key in out else value
    return out
