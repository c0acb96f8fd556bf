"""Claims with a lease: "I am generating this key", without holding a Postgres connection.

Why not an advisory lock: ``pg_advisory_xact_lock`` belongs to a transaction, so the holder
keeps a pooled connection for as long as the model thinks (seconds, a minute when it hangs).
With a slow LLM and a few dozen cold keys that drained the pool and people got errors. A row
in ``generation_claims`` costs two short statements instead (take, then delete with the stored
text) and holds nothing in between. Its lease is renewed while the holder works; a holder that
dies stops renewing and the next claimant takes the row over once the lease has run out.
(A small dedicated pool for advisory locks would also work, but it still pins one connection
per key in flight, caps how many keys can be generated at once at its size, and counts against
Postgres's max_connections for the length of an LLM call.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

__all__ = ["CLAIM_LEASE", "Claim", "take_claim"]

log = logging.getLogger(__name__)

#: Seconds a claim lives without renewal; the holder renews it every third of that.
CLAIM_LEASE: Final = 30.0

_TAKE = text(
    """
    INSERT INTO generation_claims (name, token, expires_at)
    VALUES (:name, :token, now() + make_interval(secs => :lease))
    ON CONFLICT (name) DO UPDATE
    SET token = excluded.token, expires_at = excluded.expires_at
    WHERE generation_claims.expires_at < now()
    RETURNING token
    """
)
_RENEW = text(
    "UPDATE generation_claims SET expires_at = now() + make_interval(secs => :lease)"
    " WHERE name = :name AND token = :token"
)
_RELEASE = text("DELETE FROM generation_claims WHERE name = :name AND token = :token")


class Claim:
    """A claim this process holds; ``kept()`` renews it while the body runs."""

    __slots__ = ("factory", "lease", "name", "token")

    def __init__(
        self, factory: async_sessionmaker[AsyncSession], name: str, token: str, lease: float
    ) -> None:
        self.factory = factory
        self.name = name
        self.token = token
        self.lease = lease

    def _params(self) -> dict[str, object]:
        return {"name": self.name, "token": self.token, "lease": self.lease}

    async def renew(self) -> bool:
        """Push the lease out again; False when the claim is no longer ours."""
        async with self.factory() as s, s.begin():
            result = await s.execute(_RENEW, self._params())
        return bool(getattr(result, "rowcount", 0))

    async def release_in(self, session: AsyncSession) -> None:
        """Delete the claim in the caller's transaction (the one that stores the result)."""
        await session.execute(_RELEASE, self._params())

    async def release(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Delete the claim in a short transaction of its own, within ``timeout`` seconds;
        failures are logged only (the lease runs out by itself)."""
        try:
            async with asyncio.timeout(timeout):
                async with self.factory() as s, s.begin():
                    await self.release_in(s)
        except Exception as exc:
            log.warning("claim %s not released (%r); its lease runs out", self.name, exc)

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                if not await self.renew():
                    log.warning("claim %s lost while held (lease ran out)", self.name)
                    return
            except Exception as exc:  # Postgres away: keep trying, the lease may still hold
                log.warning("claim %s not renewed: %r", self.name, exc)

    @contextlib.asynccontextmanager
    async def kept(self) -> AsyncIterator[None]:
        """Renew the lease in the background while the body runs."""
        keeper = asyncio.create_task(self._keep())
        try:
            yield
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper


async def take_claim(
    session: AsyncSession,
    factory: async_sessionmaker[AsyncSession],
    name: str,
    lease: float = CLAIM_LEASE,
) -> Claim | None:
    """Claim ``name`` in the caller's transaction; None while someone else's lease is live.

    Two claimants at once: the second INSERT waits for the first transaction, then finds a
    live claim (or, if the first released it meanwhile, takes it).
    """
    token = secrets.token_hex(16)
    got = await session.scalar(_TAKE, {"name": name, "token": token, "lease": lease})
    return Claim(factory, name, token, lease) if got is not None else None
