"""The Postgres side of the buffer hand-over (cache/buffers.py): claiming and pruning batch ids.

A batch id is claimed in the same transaction that applies the batch; a claim that finds the
id already there means "applied before a crash", so the counts are not added again.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

__all__ = ["KEEP_APPLIED", "claim_batch", "prune_applied"]

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
