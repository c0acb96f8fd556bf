"""Migrations: up, down, up on an empty database; no drift between models and migrations;
two starters at once migrate once (advisory lock)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

from db.migrate import downgrade, upgrade
from db.models import Base


@pytest.fixture
async def empty_database(postgres_server_url: str) -> AsyncIterator[str]:
    server = make_url(postgres_server_url)
    admin = server.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"horo_mig_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        conn = await asyncpg.connect(admin)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


async def _tables(url: str) -> set[str]:
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        )
        names = {row[0] for row in rows}
    await engine.dispose()
    return names


async def test_upgrade_downgrade_upgrade(empty_database: str) -> None:
    await upgrade(empty_database)
    assert {"users", "image_assets", "horoscopes", "horoscope_views", "applied_batches"} <= (
        await _tables(empty_database)
    )
    await downgrade(empty_database, "base")
    assert await _tables(empty_database) <= {"alembic_version"}
    await upgrade(empty_database)
    assert "users" in await _tables(empty_database)


async def test_autogenerate_finds_no_difference(database_url: str) -> None:
    engine = create_async_engine(database_url)

    def diff(sync_conn: object) -> list[object]:
        ctx = MigrationContext.configure(
            sync_conn,  # type: ignore[arg-type]
            opts={"compare_type": True, "compare_server_default": True},
        )
        return list(compare_metadata(ctx, Base.metadata))

    async with engine.connect() as conn:
        changes = await conn.run_sync(diff)
    await engine.dispose()
    assert changes == []


async def test_two_starters_migrate_once(empty_database: str) -> None:
    await asyncio.gather(upgrade(empty_database), upgrade(empty_database))
    engine = create_async_engine(empty_database)
    async with engine.connect() as conn:
        versions = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
    await engine.dispose()
    assert len(versions) == 1


async def test_postgres_rejects_unknown_sign(engine, db_clean) -> None:  # type: ignore[no-untyped-def]
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO users (id, first_name) VALUES (1, 'a')"))
    with pytest.raises(IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE users SET zodiac_sign = 'ophiuchus' WHERE id = 1"))
