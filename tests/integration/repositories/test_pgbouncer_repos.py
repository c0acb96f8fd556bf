"""Postgres behind PgBouncer in transaction pooling (DB_PGBOUNCER, db/engine.py).

Without the setting, two client connections that take turns on one server connection collide
on asyncpg's prepared-statement names; with it, the repositories' real queries (users,
horoscopes with their advisory lock, push queries, counts) run many times from several
concurrent sessions multiplexed onto three server connections, and Alembic migrates a fresh
database through the bouncer, three starters at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable
from zoneinfo import ZoneInfo

import asyncpg  # type: ignore[import-untyped]
import pytest
from redis.asyncio import Redis
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from cache import CacheAside, KeySpace
from db.engine import create_engine, create_session_factory
from db.migrate import upgrade
from db.models import Horoscope, User
from db.repositories import DataContext, HoroscopeRepository, UserRepository
from db.testing import drop_database
from db.types import Lang, Sign
from tests.helpers import FakeGenerator, TgUser, unit_of_work
from tests.servers.pgbouncer import PgBouncer

pytestmark = pytest.mark.timeout(120)

DAY = dt.date(2026, 11, 21)


@pytest.mark.parametrize("pgbouncer_mode", [False, True], ids=["default", "DB_PGBOUNCER"])
async def test_a_cached_statement_on_another_server_connection(
    pgbouncer_factory: Callable[..., PgBouncer], database_url: str, pgbouncer_mode: bool
) -> None:
    """The failure the setting prevents, made deterministic. Client A prepares a statement on
    the only server connection S1 (asyncpg and SQLAlchemy cache it); client B's open
    transaction then holds S1, so A's next transaction gets a new server connection S2, where
    the cached statement does not exist."""
    bouncer = pgbouncer_factory(default_pool_size=2)
    engine = create_engine(
        bouncer.url_for(database_url),
        pool_size=2,
        max_overflow=0,
        pgbouncer=pgbouncer_mode,
        statement_timeout=None,  # a start-up parameter PgBouncer would refuse (db/engine.py)
    )
    query = text("SELECT count(*) FROM users WHERE id > :floor")
    try:
        async with engine.connect() as a, engine.connect() as b:
            assert (await a.execute(query, {"floor": 0})).scalar_one() >= 0
            await a.commit()  # S1 is idle again, the statement stays cached on A
            await b.execute(text("SELECT 1"))  # B's transaction takes S1 and keeps it
            try:
                if pgbouncer_mode:
                    assert (await a.execute(query, {"floor": 1})).scalar_one() >= 0
                else:
                    with pytest.raises(DBAPIError, match=r"prepared statement .* does not exist"):
                        await a.execute(query, {"floor": 1})
            finally:
                await a.rollback()
                await b.rollback()
        servers = [
            s for s in bouncer.show("SERVERS") if s["database"] == make_url(database_url).database
        ]
        assert len(servers) == 2  # A really ran on a second server connection
    finally:
        await engine.dispose()


async def test_repositories_through_pgbouncer(
    pgbouncer: PgBouncer,
    database_url: str,
    redis: Redis,
    key_prefix: str,
    db_clean: None,
) -> None:
    engine = create_engine(
        pgbouncer.url_for(database_url), pool_size=8, max_overflow=4, pgbouncer=True
    )
    ctx = DataContext(
        CacheAside(redis), KeySpace(key_prefix), create_session_factory(engine), ZoneInfo("UTC")
    )
    sessions = asyncio.Semaphore(8)
    try:

        async def life_of(user_id: int) -> None:
            sign = list(Sign)[user_id % 12]
            async with sessions:
                async with unit_of_work(ctx.session_factory) as s:
                    user, created = await UserRepository(s, ctx).get_or_create_from_telegram(
                        TgUser(user_id, f"U{user_id}")
                    )
                    assert created and user.id == user_id
                async with unit_of_work(ctx.session_factory) as s:
                    await UserRepository(s, ctx).set_sign(user_id, sign)
                async with unit_of_work(ctx.session_factory) as s:
                    await UserRepository(s, ctx).set_lang(user_id, Lang.EN)
                async with unit_of_work(ctx.session_factory) as s:
                    await UserRepository(s, ctx).set_push(user_id, True, dt.time(9, 0))
                async with ctx.session_factory() as s:
                    again = await UserRepository(s, ctx).get(user_id)
                    assert again is not None and again.zodiac_sign is sign

        await asyncio.gather(*(life_of(uid) for uid in range(1, 61)))

        gen = FakeGenerator()
        horoscopes = HoroscopeRepository(ctx, gen)
        pairs = [(sign, lang) for sign in Sign for lang in Lang]
        # Each pair asked three times at once: the advisory lock keeps it to one generation.
        results = await asyncio.gather(
            *(horoscopes.get_or_generate(s, DAY, lang) for s, lang in pairs for _ in range(3))
        )
        assert {r.text for r in results} == {gen.text_for(s, DAY, lang) for s, lang in pairs}
        assert len(gen.calls) == len(pairs)

        async with ctx.session_factory() as s:
            repo = UserRepository(s, ctx)
            assert await repo.count_total() == 60
            now = dt.datetime(2026, 11, 21, 23, 0, tzinfo=dt.UTC)
            due = await repo.claim_push_batch(
                now, owner="t", until=now + dt.timedelta(minutes=1), limit=100
            )
            assert len(due) == 60
            assert await s.scalar(select(func.count()).select_from(Horoscope)) == len(pairs)
            assert await s.scalar(select(func.count()).where(User.language_code.is_not(None)))
    finally:
        await engine.dispose()

    [pool] = [
        p for p in pgbouncer.show("POOLS") if p["database"] == make_url(database_url).database
    ]
    assert pool["pool_mode"] == "transaction"
    servers = [s for s in pgbouncer.show("SERVERS") if s["database"] == pool["database"]]
    assert len(servers) <= 3  # 8+ client connections took turns on at most 3 server ones
    [stats] = [row for row in pgbouncer.show("STATS") if row["database"] == pool["database"]]
    assert int(stats["total_xact_count"] or 0) > 200


async def test_alembic_migrates_a_fresh_database_through_pgbouncer(
    pgbouncer: PgBouncer, postgres_server_url: str
) -> None:
    """Three starters at once through transaction pooling: the transaction-level lock lets one
    migrate and the others find nothing to do; no lock is left behind on a server connection."""
    server = make_url(postgres_server_url)
    admin_dsn = server.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"horo_bouncer_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = pgbouncer.url_for(server.set(database=name).render_as_string(hide_password=False))
    try:
        await asyncio.gather(*(upgrade(url, pgbouncer=True) for _ in range(3)))
        await upgrade(url, pgbouncer=True)  # again later: nothing to do, no lock held
        direct = await asyncpg.connect(
            server.set(database=name, drivername="postgresql").render_as_string(hide_password=False)
        )
        try:
            assert await direct.fetchval("SELECT count(*) FROM alembic_version") == 1
            assert await direct.fetchval("SELECT count(*) FROM users") == 0
            held = await direct.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            )
            assert held == 0
        finally:
            await direct.close()
    finally:
        await drop_database(admin_dsn, name)
