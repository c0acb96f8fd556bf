"""Invalidations that could not reach Redis are kept and replayed (issue 12.7).

A Valkey of our own (devtools.embedded, with AOF, like production) is stopped and restarted
from its AOF for real; the shared Redis is never touched. A process dying between its commit
and its DEL is a real child process that exits there.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cache import CacheAside, CacheMetrics, CircuitBreaker, KeySpace, create_redis
from db.models import CacheInvalidation
from db.outbox import InvalidationOutbox, outbox_of
from db.repositories import DataContext, UserRepository
from db.types import Sign
from devtools.embedded import EmbeddedServer, start_valkey
from tests.helpers import TgUser, unit_of_work

ROOT = Path(__file__).resolve().parents[3]
TZ = ZoneInfo("Europe/Moscow")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[EmbeddedServer]:
    server = start_valkey(tmp_path / "valkey", default_port=None, persist=True)
    try:
        yield server
    finally:
        server.stop()


def restart(server: EmbeddedServer) -> EmbeddedServer:
    """The same server again: same directory (so its AOF), same port (so the same URL)."""
    server.stop()
    return start_valkey(server.data_dir, port=server.port, persist=True)


@pytest.fixture
async def own(
    valkey: EmbeddedServer,
    key_prefix: str,
    session_factory: async_sessionmaker[AsyncSession],
    db_clean: None,
) -> AsyncIterator[tuple[DataContext, Clock, CollectorRegistry]]:
    """A context on the test's own Valkey, its breaker on a clock the test moves."""
    clock, registry = Clock(), CollectorRegistry()
    client = create_redis(valkey.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    cache = CacheAside(
        client,
        metrics=CacheMetrics(registry),
        breaker=CircuitBreaker(failure_threshold=1, cooldown=5.0, clock=clock),
    )
    try:
        yield DataContext(cache, KeySpace(key_prefix), session_factory, TZ), clock, registry
    finally:
        await cache.aclose()
        await client.aclose()


async def outbox_rows(ctx: DataContext) -> int:
    async with ctx.session_factory() as s:
        return int(await s.scalar(select(func.count()).select_from(CacheInvalidation)) or 0)


async def ack_delivered(ctx: DataContext) -> None:
    """Delete the outbox rows of delivered invalidations (what the replay job does first);
    with the default grace no row is young enough to be replayed here."""
    outbox = outbox_of(ctx.cache)
    assert outbox is not None
    assert await outbox.replay() == 0


async def sign_of(ctx: DataContext, user_id: int) -> Sign | None:
    async with ctx.session_factory() as s:
        user = await UserRepository(s, ctx).get(user_id)
    assert user is not None
    return user.zodiac_sign


async def set_sign(ctx: DataContext, user_id: int, sign: Sign) -> None:
    async with unit_of_work(ctx.session_factory) as s:
        await UserRepository(s, ctx).set_sign(user_id, sign)


async def test_a_change_made_while_redis_was_down_is_not_undone_by_its_aof(
    own: tuple[DataContext, Clock, CollectorRegistry], valkey: EmbeddedServer
) -> None:
    ctx, clock, registry = own
    async with unit_of_work(ctx.session_factory) as s:
        await UserRepository(s, ctx).get_or_create_from_telegram(TgUser(71))
    await set_sign(ctx, 71, Sign.ARIES)
    assert await sign_of(ctx, 71) is Sign.ARIES  # cached now, and in the AOF
    key = UserRepository(None, ctx).key(71)  # type: ignore[arg-type]
    await ack_delivered(ctx)
    valkey.stop()

    await set_sign(ctx, 71, Sign.PISCES)  # committed; the DEL cannot reach Redis
    outbox = outbox_of(ctx.cache)
    assert outbox is not None and list(outbox.waiting.values()) == [key]
    assert await outbox_rows(ctx) == 1  # durably, written in the same transaction
    assert registry.get_sample_value("cache_invalidations_waiting") == 1

    server = restart(valkey)
    try:
        probe = Redis.from_url(server.url)
        assert await probe.exists(key) == 1  # the old entry is back from the AOF
        await probe.aclose()
        # The breaker is open (threshold 1): once its cool-down is over, the first read is
        # its probe; Redis answers, the breaker closes, and that starts the replay.
        clock.now += 10
        await sign_of(ctx, 71)
        await ctx.cache.wait_background()
        assert outbox.waiting == {}
        assert await sign_of(ctx, 71) is Sign.PISCES
        assert await outbox_rows(ctx) == 0
        assert registry.get_sample_value("cache_invalidations_total", {"outcome": "replayed"}) == 1
        assert registry.get_sample_value("cache_invalidations_waiting") == 0
    finally:
        server.stop()


async def test_another_process_replays_what_a_process_could_not_deliver(
    own: tuple[DataContext, Clock, CollectorRegistry], valkey: EmbeddedServer, redis_url: str
) -> None:
    """Process A changes a sign while its Redis is unreachable (here: a Redis that is down);
    process B (another CacheAside and outbox, as another process has) sees Redis answer and
    replays A's invalidation from the table; A never does anything more."""
    a, _, _ = own
    async with unit_of_work(a.session_factory) as s:
        await UserRepository(s, a).get_or_create_from_telegram(TgUser(72))
    await set_sign(a, 72, Sign.LEO)
    assert await sign_of(a, 72) is Sign.LEO
    await ack_delivered(a)
    valkey.stop()
    await set_sign(a, 72, Sign.VIRGO)
    server = restart(valkey)
    client = create_redis(server.url)
    try:
        b = DataContext(CacheAside(client), a.keys, a.session_factory, TZ)
        b_outbox = outbox_of(b.cache)
        assert b_outbox is not None and b_outbox is not outbox_of(a.cache)
        assert b_outbox.waiting == {}  # B knows nothing in-process
        assert await sign_of(b, 72) is Sign.LEO  # stale: the AOF brought the old entry back
        b_outbox.grace = dt.timedelta(0)  # A's row is old enough (30 s by default)
        assert await b_outbox.replay() == 1
        assert await sign_of(b, 72) is Sign.VIRGO
        assert await outbox_rows(a) == 0
    finally:
        await client.aclose()
        server.stop()


CHILD = textwrap.dedent(
    """
    import asyncio, os, sys
    from zoneinfo import ZoneInfo
    from cache import CacheAside, KeySpace, create_redis
    from db.engine import create_engine, create_session_factory
    from db.repositories import DataContext, UserRepository
    from db.types import Sign

    async def main(db_url, redis_url, prefix):
        engine = create_engine(db_url)
        ctx = DataContext(
            CacheAside(create_redis(redis_url)), KeySpace(prefix),
            create_session_factory(engine), ZoneInfo("UTC"),
        )
        async with ctx.session_factory() as s:
            await UserRepository(s, ctx).set_sign(73, Sign.GEMINI)
            await s.commit()
        os._exit(0)  # died between the commit and the DEL

    asyncio.run(main(*sys.argv[1:]))
    """
)


async def test_a_process_dying_between_commit_and_del_leaves_it_to_the_others(
    ctx: DataContext, redis: Redis, database_url: str, redis_url: str, tmp_path: Path
) -> None:
    async with unit_of_work(ctx.session_factory) as s:
        await UserRepository(s, ctx).get_or_create_from_telegram(TgUser(73))
    await set_sign(ctx, 73, Sign.TAURUS)
    assert await sign_of(ctx, 73) is Sign.TAURUS
    await ack_delivered(ctx)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        database_url,
        redis_url,
        ctx.keys.prefix,
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert await sign_of(ctx, 73) is Sign.TAURUS  # stale: nobody deleted the entry
    assert await outbox_rows(ctx) == 1  # but the obligation committed with the change
    from jobs.maintenance import replay_invalidations

    outbox = outbox_of(ctx.cache)
    assert outbox is not None
    outbox.grace = dt.timedelta(0)
    deps: Any = type("Deps", (), {"cache": ctx.cache})()
    assert await replay_invalidations(deps) == 1
    assert await sign_of(ctx, 73) is Sign.GEMINI
    assert await outbox_rows(ctx) == 0


async def test_rolled_back_changes_leave_no_row_and_delivered_ones_are_acked(
    ctx: DataContext, sql_counter: Any
) -> None:
    async with unit_of_work(ctx.session_factory) as s:
        await UserRepository(s, ctx).get_or_create_from_telegram(TgUser(74))
    with pytest.raises(RuntimeError):
        async with unit_of_work(ctx.session_factory) as s:
            await UserRepository(s, ctx).set_sign(74, Sign.LIBRA)
            raise RuntimeError("the handler failed")
    outbox = outbox_of(ctx.cache)
    assert isinstance(outbox, InvalidationOutbox)
    assert await outbox_rows(ctx) == 1  # the creation's, delivered: waits for its ack
    sql_counter.reset()
    await set_sign(ctx, 74, Sign.LIBRA)
    # UPDATE + the outbox INSERT in one transaction; nothing after the commit
    assert len([q for q in sql_counter.statements if "cache_invalidations" in q]) == 1
    assert outbox.waiting == {}
    assert await outbox.replay() == 0  # acks the delivered rows; nothing to deliver
    assert await outbox_rows(ctx) == 0
