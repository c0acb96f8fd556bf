"""Bot throughput: warm ``/today`` updates through ``Dispatcher.feed_update``, no network.

Run: ``python -m benchmarks.bot_throughput [--quick]``. Variants, interleaved round by round:

* ``redis`` - this project: ``build_app`` with the real cache (Redis first);
* ``postgres-only`` - the same code with the cache disabled (``CacheAside(None)``);
* ``seeds`` - the seeds' way (benchmarks/seed_baseline.py): per update a user read, a
  last-seen UPDATE, a horoscope read and a view-counter upsert in Postgres.

Every variant answers through the same local Bot session (requests prepared, replies parsed,
no HTTP), on the same Postgres tables and the same pool settings (the bot's defaults). Users
are pre-registered with a sign, today's 24 horoscopes precomputed, every cache warmed by a
first pass. Per variant and concurrency: updates/s, p50/p99 per update, SQL statements per
update (``before_cursor_execute``) and Redis commands / round trips per update.

``World`` (the seeded database, stores and apps) is shared with benchmarks/redis_down.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiogram import Bot, Dispatcher, Router
from aiogram.filters import Command
from aiogram.types import Message
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from benchmarks._env import (
    BOT_ID,
    BenchStores,
    LocalSession,
    SQLCounter,
    bench_settings,
    bot_engine,
    bot_redis,
    command_update,
    database_or_bench,
    delete_prefix,
    local_bot,
    new_prefix,
    quiet_logs,
    redis_url,
    server_versions,
    tg_user,
    truncate_all,
)
from benchmarks._util import (
    cli,
    machine_summary,
    machine_with_postgres,
    percentile,
    publish,
    render_table,
)
from benchmarks.seed_baseline import build_seed_bot
from bot.app import AppContext, build_app
from bot.config import Settings
from bot.domain.generation.template import TemplateGenerator
from bot.domain.services.horoscope import sign_asset
from bot.ops import runtime
from bot.telegram.callbacks import Day
from bot.telegram.keyboards import horoscope_keyboard
from cache import CacheAside, CacheMetrics, KeySpace
from db.engine import create_session_factory
from db.models import ImageAsset
from db.repositories import DataContext, HoroscopeRepository
from db.types import Lang, Sign
from devtools.traffic import RedisTraffic

SIGNS = list(Sign)
LANGS = (Lang.RU, Lang.EN)
FIRST_USER_ID = 5_000_000


@dataclass
class Variant:
    """One way of answering updates: a Dispatcher, its Bot (local session) and counters."""

    name: str
    dp: Dispatcher
    bot: Bot
    session: LocalSession
    app: AppContext | None = None
    redis_counter: RedisTraffic | None = None
    seed_stats: dict[str, int] | None = None

    @property
    def errors(self) -> int:
        return self.app.errors if self.app is not None else 0


@dataclass
class Batch:
    latencies: list[float]
    wall: float
    sql: int
    redis_commands: int
    redis_round_trips: int
    replies: int
    failures: int
    cache_events: dict[str, float] = field(default_factory=dict)


@dataclass
class World:
    """A seeded database + Redis prefix on which apps can be built."""

    settings: Settings
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    redis: Redis
    redis_url: str
    prefix: str
    users: list[tuple[int, str]]
    versions: dict[str, str]
    sql: SQLCounter
    closers: list[Any] = field(default_factory=list)

    def app_variant(
        self, name: str, *, cache_enabled: bool = True, redis: Redis | None = None
    ) -> Variant:
        """``build_app`` on this world; ``redis`` replaces the client (a dead/hung Redis)."""
        client = redis if redis is not None else self.redis
        counter = RedisTraffic(client) if redis is not None else None
        bot, session = local_bot()
        stores = BenchStores(session_factory=self.session_factory, redis=client)
        _, dp, app = build_app(
            self.settings,
            stores,
            bot=bot,
            cache_enabled=cache_enabled,
            generator=TemplateGenerator(),
            metrics=CacheMetrics(CollectorRegistry()),
        )
        app.rng = random.Random(1)
        self.closers.append(app.cache.aclose)
        return Variant(name, dp, bot, session, app=app, redis_counter=counter)

    async def seed_variant(self, name: str = "seeds") -> Variant:
        async with self.session_factory() as s:
            rows = (
                await s.execute(
                    select(ImageAsset.asset_key, ImageAsset.file_id).where(
                        ImageAsset.bot_id == BOT_ID
                    )
                )
            ).all()
        by_asset = {asset: file_id for asset, file_id in rows}
        file_ids = {sign.value: by_asset[sign_asset(sign)] for sign in SIGNS}
        dp, stats = build_seed_bot(self.session_factory, file_ids, tz=self.settings.bot_timezone)
        bot, session = local_bot()
        return Variant(name, dp, bot, session, seed_stats=stats)


def floor_variant(file_id: str, name: str = "floor") -> Variant:
    """aiogram alone: the same /today command answered with a fixed picture, caption and
    keyboard, no data layer at all. What every variant pays before reading anything: the
    dispatch, building the sendPhoto request and validating Telegram's reply."""
    router = Router(name="floor")
    caption = (
        "<b>♈ Aries</b> · today\n" + "The stars are quiet; a fine day for small, kind work. " * 10
    )
    keyboard = horoscope_keyboard(Lang.EN, Sign.ARIES, Day.TODAY, False)

    @router.message(Command("today"))
    async def today(message: Message, bot: Bot) -> None:
        await bot.send_photo(message.chat.id, file_id, caption=caption, reply_markup=keyboard)

    dp = Dispatcher(disable_fsm=True)
    dp.include_router(router)
    bot, session = local_bot()
    return Variant(name, dp, bot, session)


@contextlib.asynccontextmanager
async def world(n_users: int, *, database_url: str | None = None) -> AsyncIterator[World]:
    """A fresh database with ``n_users`` users (sign and language set), today's horoscopes
    precomputed into Postgres and Redis; everything dropped / deleted at the end."""
    url = redis_url()
    prefix = new_prefix()
    async with contextlib.AsyncExitStack() as stack:
        db_url = await database_or_bench(stack, database_url)
        settings = bench_settings(prefix, database_url=db_url, redis_url=url)
        engine = bot_engine(db_url, settings)
        stack.push_async_callback(engine.dispose)
        client = bot_redis(url, settings)
        stack.push_async_callback(client.aclose)
        cleaner = Redis.from_url(url)
        stack.push_async_callback(cleaner.aclose)
        stack.push_async_callback(delete_prefix, cleaner, prefix)
        await truncate_all(engine)
        users = [(FIRST_USER_ID + i, LANGS[i % 2].value) for i in range(n_users)]  # (id, language)
        await _insert_users(engine, users)
        sessions = create_session_factory(engine)
        ctx = DataContext(
            cache=CacheAside(client, metrics=CacheMetrics(CollectorRegistry())),
            keys=KeySpace(prefix, settings.cache_schema_version),
            session_factory=sessions,
            tz=settings.tz,
        )
        repo = HoroscopeRepository(ctx, TemplateGenerator())
        today = ctx.today()
        for sign in SIGNS:
            for lang in LANGS:
                await repo.precompute(sign, today, lang)
        w = World(
            settings=settings,
            engine=engine,
            session_factory=sessions,
            redis=client,
            redis_url=url,
            prefix=prefix,
            users=users,
            versions=await server_versions(cleaner, engine),
            sql=SQLCounter(engine),
        )
        stack.enter_context(w.sql)

        async def close_all() -> None:
            for close in w.closers:
                with contextlib.suppress(Exception):
                    await close()

        stack.push_async_callback(close_all)
        yield w


async def _any_file_id(w: World) -> str:
    async with w.session_factory() as s:
        file_id = await s.scalar(select(ImageAsset.file_id).where(ImageAsset.bot_id == BOT_ID))
    assert file_id is not None, "warm up the app variant first: it uploads the pictures"
    return str(file_id)


async def _insert_users(engine: AsyncEngine, users: Sequence[tuple[int, str]]) -> None:
    rows = []
    for i, (uid, lang) in enumerate(users):
        p = tg_user(uid, lang)
        rows.append({**p, "zodiac_sign": SIGNS[i % 12].value, "lang": lang})
    stmt = text(
        """
        INSERT INTO users (id, is_bot, first_name, last_name, username, language_code,
                           is_premium, zodiac_sign, lang)
        VALUES (:id, :is_bot, :first_name, :last_name, :username, :language_code,
                :is_premium, :zodiac_sign, :lang)
        """
    )
    async with engine.begin() as conn:
        for start in range(0, len(rows), 1000):
            await conn.execute(stmt, rows[start : start + 1000])


# ---------------------------------------------------------------- driving updates


async def drive(w: World, v: Variant, users: Sequence[tuple[int, str]], concurrency: int) -> Batch:
    """One /today per user in ``users`` through ``v``, ``concurrency`` at a time."""
    updates = [command_update(v.bot, uid, lang) for uid, lang in users]
    latencies: list[float] = [0.0] * len(updates)
    failures = 0
    w.sql.reset()
    if v.redis_counter is not None:
        v.redis_counter.reset()
    counter = v.redis_counter
    v.session.reset()
    errors_before = v.errors
    events_before = _events(v)
    next_index = 0
    clock = time.perf_counter

    async def worker() -> None:
        nonlocal next_index, failures
        while next_index < len(updates):
            i = next_index
            next_index += 1
            t0 = clock()
            try:
                await v.dp.feed_update(v.bot, updates[i])
            except Exception:
                failures += 1
            latencies[i] = clock() - t0

    t_start = clock()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(updates)))))
    wall = clock() - t_start
    replies = v.session.calls["sendPhoto"]
    return Batch(
        latencies=latencies,
        wall=wall,
        sql=w.sql.count,
        redis_commands=len(counter.commands) if counter is not None else 0,
        redis_round_trips=counter.count if counter is not None else 0,
        replies=replies,
        failures=failures + v.errors - errors_before,
        cache_events={k: x - events_before.get(k, 0.0) for k, x in _events(v).items()},
    )


def _events(v: Variant) -> dict[str, float]:
    """Cache events of the variant's app summed over namespaces (hit, miss, redis_error...)."""
    if v.app is None:
        return {}
    out: dict[str, float] = {}
    for counts in v.app.cache.metrics.snapshot().values():
        for name, value in counts.items():
            out[name] = out.get(name, 0.0) + value
    return out


async def warm_up(w: World, v: Variant) -> Batch:
    """Every user once at concurrency 20 (users cached, the 12 pictures uploaded), then
    once more sequentially: an entry whose write timed out under load is written now."""
    first = await drive(w, v, w.users, 20)
    uploads = v.session.uploads
    await drive(w, v, w.users, 1)
    v.session.uploads = uploads
    return first


def merge(batches: Sequence[Batch]) -> dict[str, Any]:
    lat = [x for b in batches for x in b.latencies]
    n = len(lat)
    wall = sum(b.wall for b in batches)
    events: dict[str, float] = {}
    for b in batches:
        for k, x in b.cache_events.items():
            if x:
                events[k] = events.get(k, 0.0) + x
    return {
        "updates": n,
        "updates_per_s": n / wall if wall else float("nan"),
        "p50_ms": percentile(lat, 50) * 1000,
        "p99_ms": percentile(lat, 99) * 1000,
        "max_ms": max(lat) * 1000 if lat else float("nan"),
        "sql_per_update": sum(b.sql for b in batches) / n if n else float("nan"),
        "redis_commands_per_update": sum(b.redis_commands for b in batches) / n,
        "redis_round_trips_per_update": sum(b.redis_round_trips for b in batches) / n,
        "replies": sum(b.replies for b in batches),
        "failures": sum(b.failures for b in batches),
        "per_round_updates_per_s": [len(b.latencies) / b.wall for b in batches],
        "cache_events": events,
        "redis_errors_per_update": events.get("redis_error", 0.0) / n if n else 0.0,
    }


async def interleaved(
    w: World,
    variants: Sequence[Variant],
    concurrencies: Sequence[int],
    rounds: int,
    users: Sequence[tuple[int, str]],
    sequential_users: int | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Rounds of (every concurrency x every variant), the variant order reversed each round.

    ``sequential_users`` limits the batches at concurrency 1 to that many users (a hung Redis
    makes them slow), the same users for every variant.
    """
    batches: dict[tuple[str, int], list[Batch]] = {}
    rng = random.Random(7)
    for r in range(rounds):
        # forward, then backward: each variant runs after each of its neighbours in turn
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for conc in concurrencies:
            for v in order:
                shuffled = list(users if conc > 1 else users[:sequential_users])
                rng.shuffle(shuffled)
                batches.setdefault((v.name, conc), []).append(await drive(w, v, shuffled, conc))
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (name, conc), bs in batches.items():
        out.setdefault(name, {})[f"c{conc}"] = merge(bs)
    return out


# ---------------------------------------------------------------- the benchmark


async def run(
    *,
    quick: bool = False,
    n_users: int | None = None,
    rounds: int | None = None,
    concurrencies: Sequence[int] = (1, 100),
    write: bool = True,
    database_url: str | None = None,
) -> dict[str, Any]:
    n_users = n_users or (200 if quick else 1000)
    rounds = rounds or (1 if quick else 3)
    with quiet_logs():
        async with world(n_users, database_url=database_url) as w:
            ours = w.app_variant("redis", cache_enabled=True)
            ours.redis_counter = RedisTraffic(w.redis)
            pg_only = w.app_variant("postgres-only", cache_enabled=False)
            # warm-up: users into Redis, the 12 pictures uploaded once (file_ids stored)
            warm = await warm_up(w, ours)
            uploads = ours.session.uploads  # pictures sent as files, not by file_id
            async with w.session_factory() as s:
                stored_file_ids = int(
                    await s.scalar(text("SELECT count(*) FROM image_assets")) or 0
                )
            seeds = await w.seed_variant()
            floor = floor_variant(await _any_file_id(w))
            variants = [ours, pg_only, seeds, floor]
            for v in variants[1:]:  # warm pools and code paths of the others
                await drive(w, v, w.users[: min(200, len(w.users))], 20)
            # as the runner does once the bot is up (bot/ops/runtime.py): same process settings
            runtime.freeze_startup_heap()
            results = await interleaved(w, variants, concurrencies, rounds, w.users)
            versions = w.versions
    ratios = {}
    for conc in concurrencies:
        c = f"c{conc}"
        base = results["seeds"][c]["updates_per_s"]
        ratios[c] = {
            name: results[name][c]["updates_per_s"] / base
            for name in ("redis", "postgres-only", "floor")
        }
    result = {
        "machine": machine_with_postgres(versions),
        "quick": quick,
        "users": n_users,
        "rounds": rounds,
        "warm_up": {
            "updates": len(warm.latencies),
            "failures": warm.failures,
            "file_ids_stored": stored_file_ids,
            "uploads": uploads,
        },
        "variants": results,
        "x_seeds": ratios,
        "targets": {
            "redis_vs_seeds_min": 10.0,  # issue 13.5
            "redis_vs_seeds": {c: r["redis"] for c, r in ratios.items()},
        },
    }
    if write:
        publish("bot_throughput", result, report)
    return result


LABELS = {
    "redis": "this project (Redis first)",
    "postgres-only": "same code, cache disabled",
    "seeds": "seeds' way (Postgres per update)",
    "floor": "floor: aiogram alone, fixed reply",
}


def rows(result: dict[str, Any]) -> list[list[Any]]:
    out = []
    for name, by_conc in result["variants"].items():
        for conc, s in by_conc.items():
            out.append(
                [
                    LABELS.get(name, name),
                    conc.removeprefix("c"),
                    s["updates_per_s"],
                    s["p50_ms"],
                    s["p99_ms"],
                    s["sql_per_update"],
                    s["redis_commands_per_update"],
                    s["redis_round_trips_per_update"],
                    result["x_seeds"][conc].get(name, 1.0),
                ]
            )
    out.sort(key=lambda r: (int(r[1]), -r[8]))
    return out


HEADERS = [
    "variant",
    "concurrency",
    "updates/s",
    "p50 ms",
    "p99 ms",
    "SQL/update",
    "Redis cmds/update",
    "Redis trips/update",
    "x seeds",
]


def report(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"bot throughput  {machine_summary(m)}",
        f"warm /today from {result['users']} distinct users, {result['rounds']} interleaved "
        "round(s), local Bot session",
        "",
        render_table(HEADERS, rows(result)),
    ]
    failures = {
        f"{n}/{c}": s["failures"]
        for n, bc in result["variants"].items()
        for c, s in bc.items()
        if s["failures"] or s["replies"] != s["updates"]
    }
    if failures:
        lines.append(f"\nWARNING: failures or missing replies: {failures}")
    lines.extend(_redis_error_notes(result))
    return "\n".join(lines)


def _redis_error_notes(result: dict[str, Any]) -> list[str]:
    notes = []
    for name, by_conc in result["variants"].items():
        for conc, s in by_conc.items():
            ev = s.get("cache_events", {})
            if ev.get("redis_error"):
                notes.append(
                    f"note: {LABELS.get(name, name)} at concurrency {conc.removeprefix('c')}: "
                    f"{ev['redis_error']:.0f} Redis errors/timeouts in {s['updates']} updates "
                    f"(cache misses {ev.get('miss', 0):.0f}, side commands unknown "
                    f"{ev.get('side_unknown', 0):.0f}): the breaker sent those reads to Postgres"
                )
    return notes


def main() -> None:
    cli(run, __doc__)


if __name__ == "__main__":
    main()
