"""Throwaway databases for the test suite and the benchmarks.

``temporary_database`` creates a uniquely named database on a Postgres server, migrates it to
head (``db.migrate.upgrade``), yields its URL and drops it at the end (``WITH (FORCE)``: open
connections do not keep it alive). Not used by the bot itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine


@contextlib.asynccontextmanager
async def temporary_database(
    server_url: str, name_prefix: str, *, drop_retry_delay: float = 0.0
) -> AsyncIterator[str]:
    """A database ``<name_prefix>_<10 hex>`` on ``server_url``'s server, migrated to head; its
    URL (the server URL's driver and credentials) is yielded, the database dropped after."""
    import asyncpg

    from db.migrate import upgrade

    server = make_url(server_url)
    name = f"{name_prefix}_{uuid.uuid4().hex[:10]}"
    admin_dsn = server.set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = server.set(database=name).render_as_string(hide_password=False)
    try:
        await upgrade(url)
        yield url
    finally:
        await drop_database(admin_dsn, name, retry_delay=drop_retry_delay)


async def drop_database(
    admin_dsn: str, name: str, *, attempts: int = 3, retry_delay: float = 0.0
) -> None:
    """Drop ``name``; a further attempt (after ``retry_delay`` s) covers a connection the server
    just closed. The last attempt's error is raised."""
    import asyncpg

    for attempt in range(attempts):
        try:
            conn = await asyncpg.connect(admin_dsn)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await conn.close()
            return
        except (asyncpg.PostgresError, OSError):
            if attempt == attempts - 1:
                raise
            if retry_delay:
                await asyncio.sleep(retry_delay)


async def truncate_all(engine: AsyncEngine) -> None:
    """Empty every table of the models (not alembic_version): what a test or a benchmark round
    starts from. Read from the metadata, so a new table is never left out."""
    from db.models import Base

    names = ", ".join(table.name for table in Base.metadata.sorted_tables)
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {names}"))
