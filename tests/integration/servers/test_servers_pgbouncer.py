"""PgBouncer in transaction pooling: queries go through it, many clients share few servers."""

from __future__ import annotations

import asyncio

import asyncpg  # type: ignore[import-untyped]
import pytest

from tests.servers.pgbouncer import PgBouncer

pytestmark = pytest.mark.timeout(60)


async def test_query_through_pgbouncer_in_transaction_mode(
    pgbouncer: PgBouncer, database_url: str
) -> None:
    dsn = pgbouncer.url_for(database_url).replace("postgresql+asyncpg://", "postgresql://")
    # statement_cache_size=0: plain asyncpg's own way through transaction pooling.
    conns = [await asyncpg.connect(dsn, statement_cache_size=0) for _ in range(8)]
    try:
        results = await asyncio.gather(
            *(c.fetchval("SELECT count(*) FROM users WHERE $1::int > 0", 1) for c in conns)
        )
        assert results == [0] * 8
    finally:
        for conn in conns:
            await conn.close()

    [pool] = [p for p in pgbouncer.show("POOLS") if p["database"] == dsn.rsplit("/", 1)[1]]
    assert pool["pool_mode"] == "transaction"
    servers = [s for s in pgbouncer.show("SERVERS") if s["database"] == pool["database"]]
    assert 1 <= len(servers) <= 3  # 8 clients, default_pool_size=3 server connections
    clients = pgbouncer.show("STATS")
    assert any(int(row["total_query_count"] or 0) >= 8 for row in clients)
