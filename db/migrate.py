"""Run Alembic migrations to head, once, even when several bot processes start together.

A Postgres advisory lock serialises concurrent starters: the first migrates, the others wait for
the lock and then find nothing left to do.

Behind PgBouncer in transaction pooling (``pgbouncer=True``, from DB_PGBOUNCER) a session-level
lock cannot work: it would be taken on one server connection and released on another, or
never, and block the next start for good. There the lock is transaction-level and every
migration runs inside that one transaction (Postgres DDL is transactional), so all of it stays
on one server connection; statements are not cached (db.engine.pgbouncer_connect_args).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import structlog
from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

import migrations
from db.engine import pgbouncer_connect_args

log = structlog.get_logger(__name__)

#: The migrations package's folder: found by import, so it works installed and in a checkout.
SCRIPT_LOCATION = Path(migrations.__file__).resolve().parent
# Any constant 64-bit number, the same for every process of this application.
MIGRATION_LOCK_ID = 0x686F726F_6D696772  # "horomigr"


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _run(connection: Connection, step: Callable[[Config, str], None], revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    step(cfg, revision)


async def _migrate(
    url: str, step: Callable[[Config, str], None], revision: str, *, pgbouncer: bool = False
) -> None:
    """Run one Alembic command on one connection, holding the migration advisory lock."""
    engine = create_async_engine(url, connect_args=pgbouncer_connect_args() if pgbouncer else {})
    try:
        async with engine.connect() as connection:
            if pgbouncer:
                # Alembic sees the transaction already open and runs every migration in it.
                async with connection.begin():
                    await connection.execute(
                        text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID}
                    )
                    log.info("migrations_started", command=step.__name__, target=revision)
                    await connection.run_sync(_run, step, revision)
                log.info("migrations_done", command=step.__name__, target=revision)
                return
            await connection.execute(
                text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID}
            )
            await connection.commit()
            try:
                log.info("migrations_started", command=step.__name__, target=revision)
                await connection.run_sync(_run, step, revision)
                await connection.commit()
                log.info("migrations_done", command=step.__name__, target=revision)
            finally:
                await connection.execute(
                    text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID}
                )
                await connection.commit()
    finally:
        await engine.dispose()


async def upgrade(url: str, revision: str = "head", *, pgbouncer: bool = False) -> None:
    await _migrate(url, command.upgrade, revision, pgbouncer=pgbouncer)


async def downgrade(url: str, revision: str = "base", *, pgbouncer: bool = False) -> None:
    await _migrate(url, command.downgrade, revision, pgbouncer=pgbouncer)
