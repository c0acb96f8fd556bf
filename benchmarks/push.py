"""The daily push shared by N instances: 100,000 due users against the Bot API double.

Run: ``python -m benchmarks --only push`` (or ``python -m benchmarks.push [--quick]``).

Setup: a database of our own with 100,000 subscribers whose push time has come (12 signs, two
languages, the bot's zone), the sign pictures uploaded and today's texts generated once
beforehand (a warm-up push), and the Bot API double in this process, on its own port.
Then, for 1, 2 and 4 instances: that many worker *processes* (spawned, each with its own
pools and Bot session, like bot processes) start together at a barrier and run the real
``jobs.push.run_push`` until nothing is left to claim; between variants every user is made due
again (``last_push_date`` and the claims cleared, VACUUM). The rate is the paid-broadcast
maximum, 1000 sends/s, shared through Redis.

Reported per variant: the time from the barrier to the last send arriving at the double, the
sends per second over that time, the most sends that arrived at the double in any one-second
window (sliding, measured on arrival: a limit holds where it is enforced, on grants in Redis;
arrival adds the network's and event loops' jitter), and a check that each user got exactly one
picture. The double's own capacity (sendPhoto by file_id, two client processes with no limiter)
is measured first, so it is known not to be the bottleneck.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import multiprocessing as mp
import os
import time
from collections import Counter
from typing import Any

import aiohttp
from redis.asyncio import Redis
from sqlalchemy import text

from benchmarks._env import (
    TOKEN,
    bench_settings,
    bot_engine,
    bot_redis,
    database_or_bench,
    delete_prefix,
    new_prefix,
    quiet_logs,
    redis_url,
    server_versions,
)
from benchmarks._util import cli, machine_summary, machine_with_postgres, publish, render_table
from bot.ops import runtime
from db.engine import create_engine
from db.types import Sign

USERS = 100_000
QUICK_USERS = 10_000
RATE = 1000
INSTANCES = (1, 2, 4)
FIRST_ID = 1_000_000
WARM_FIRST = 900_000  # twelve warm-up users, one per sign
SIGNS = [s.value for s in Sign]
HEADERS = [
    "instances",
    "users",
    "seconds",
    "sends/s",
    "max granted in 1 s",
    "max arrived in 1 s",
    "rate limit",
    "pushed once",
    "duplicates",
    "missed",
]


# ------------------------------------------------------------------ worker processes


def _settings(prefix: str, database_url: str, api_url: str) -> Any:
    return bench_settings(
        prefix,
        database_url=database_url,
        redis_url=redis_url(),
        telegram_api_url=api_url,
        push_rate_per_second=RATE,
        push_paid_broadcast=True,
        bot_timezone="UTC",
    )


async def _push_process(
    prefix: str, database_url: str, api_url: str, barrier: Any, instance: str
) -> dict[str, Any]:
    from aiogram import Bot
    from aiogram.client.default import DefaultBotProperties
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer
    from aiogram.enums import ParseMode

    from bot.domain.generation.template import TemplateGenerator
    from bot.domain.services.images import ImageSender, RepositoryFileIds
    from cache import CacheAside, KeySpace
    from db.engine import create_session_factory
    from jobs.deps import JobDeps
    from jobs.global_rate import GlobalRateLimiter
    from jobs.push import run_push

    settings = _settings(prefix, database_url, api_url)
    engine = bot_engine(database_url, settings)
    redis = bot_redis(settings.redis_url or "", settings)
    bot = Bot(
        TOKEN,
        session=AiohttpSession(api=TelegramAPIServer.from_base(api_url)),
        default=DefaultBotProperties(parse_mode=ParseMode.HTML),
    )
    cache = CacheAside(redis)
    deps = JobDeps(
        settings=settings,
        cache=cache,
        keyspace=KeySpace(prefix, settings.cache_schema_version),
        session_factory=create_session_factory(engine),
        redis=redis,
        bot=bot,
        generator=TemplateGenerator(),
        instance=instance,
    )
    deps.images = ImageSender(
        RepositoryFileIds(deps.data),
        cache=cache,
        upload_key=lambda bot_id, asset, sha: deps.keyspace.key("upload", bot_id, asset, sha),
    )
    try:
        # warm the pools outside the measurement: one connection each
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        await redis.ping()
        await bot.get_me()
        # the limiter run_push would build, recording the server time of each grant
        limiter = GlobalRateLimiter(
            redis, deps.keyspace.key("pushrate", "global"), RATE, record=True
        )
        runtime.freeze_startup_heap()
        await asyncio.to_thread(barrier.wait, 120)
        report = await run_push(deps, bucket=limiter)
        return {**report.as_dict(), "grants": limiter.grants}
    finally:
        await bot.session.close()
        await cache.aclose()
        await redis.aclose()
        await engine.dispose()


def _worker(args: tuple[Any, ...], queue: Any) -> None:
    # Below the double, Postgres and Redis: on a machine this small the bot processes would
    # otherwise starve the double, whose stalled loop then stamps queued requests together.
    # (Telegram's servers do not share our CPUs.)
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, 5)
    with quiet_logs():
        try:
            queue.put(runtime.run(_push_process(*args)))
        except Exception as exc:  # report instead of hanging the parent
            queue.put({"crash": repr(exc)})


async def _blast_process(api_url: str, chat_ids: list[int], file_id: str, seconds: float) -> int:
    """Send sendPhoto by file_id as fast as 64 connections allow, for ``seconds``."""
    done = 0
    url = f"{api_url}/bot{TOKEN}/sendPhoto"
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one(k: int) -> None:
            nonlocal done
            i = k
            while time.monotonic() < deadline:
                data = {"chat_id": str(chat_ids[i % len(chat_ids)]), "photo": file_id}
                data["caption"] = "<b>Aries</b> today: calibration"
                data["parse_mode"] = "HTML"
                async with http.post(url, data=data) as resp:
                    await resp.read()
                done += 1
                i += 64

        await asyncio.gather(*(one(k) for k in range(64)))
    return done


def _blaster(args: tuple[Any, ...], queue: Any) -> None:
    try:
        queue.put(runtime.run(_blast_process(*args)))
    except Exception as exc:
        queue.put({"crash": repr(exc)})


# ------------------------------------------------------------------ the parent


async def _seed(engine: Any, users: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                """
                INSERT INTO users (id, first_name, zodiac_sign, lang, push_enabled, push_time)
                SELECT g, 'U' || g, (CAST(:signs AS text[]))[g % 12 + 1],
                       CASE WHEN g % 2 = 0 THEN 'ru' ELSE 'en' END, true, TIME '00:00'
                FROM generate_series(CAST(:a AS bigint), CAST(:b AS bigint)) AS g
                """
            ),
            {"signs": SIGNS, "a": FIRST_ID, "b": FIRST_ID + users - 1},
        )


async def _reset(engine: Any, database_url: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE users SET last_push_date = NULL, push_claimed_until = NULL,"
                " push_claimed_by = NULL WHERE id >= :a"
            ),
            {"a": FIRST_ID},
        )
    # VACUUM outside a transaction: the next variant starts on a table without the dead
    # tuples of the last one (each push writes every row twice: claim, then completion)
    import asyncpg
    from sqlalchemy.engine import make_url

    url = make_url(database_url).set(drivername="postgresql")
    conn = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        await conn.execute("VACUUM ANALYZE users")
    finally:
        await conn.close()


async def _warm_up(prefix: str, database_url: str, server: Any, engine: Any) -> None:
    """One push to twelve users (one per sign): pictures uploaded, texts generated, both
    cached; then those twelve are switched off."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                """
                INSERT INTO users (id, first_name, zodiac_sign, lang, push_enabled, push_time)
                SELECT g, 'W' || g, (CAST(:signs AS text[]))[g % 12 + 1], 'en', true,
                       TIME '00:00'
                FROM generate_series(CAST(:a AS bigint), CAST(:a AS bigint) + 11) AS g
                """
            ),
            {"signs": SIGNS, "a": WARM_FIRST},
        )
    for uid in range(WARM_FIRST, WARM_FIRST + 12):
        server.user(uid)
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(1), ctx.Queue()
    # the warm-up goes through the first 12 due users: make only those due
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE users SET push_enabled = false WHERE id >= :a"), {"a": FIRST_ID}
        )
    proc = ctx.Process(
        target=_worker,
        args=((prefix, database_url, f"{server.url}/warm", barrier, "warm"), queue),
    )
    proc.start()
    result = await asyncio.to_thread(queue.get, True, 120)
    await asyncio.to_thread(proc.join, 30)
    if "crash" in result or result.get("sent") != 12:
        raise RuntimeError(f"push warm-up failed: {result}")
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE users SET push_enabled = (id >= :a)"), {"a": FIRST_ID})


def _max_in_window(stamps: list[float], width: float = 1.0) -> int:
    stamps = sorted(stamps)
    best, j = 0, 0
    for i, t in enumerate(stamps):
        while stamps[j] <= t - width:
            j += 1
        best = max(best, i - j + 1)
    return best


async def _calibrate(server: Any, users: list[int], seconds: float) -> float:
    """The double's own capacity for sendPhoto by file_id (two client processes)."""
    file_id = next(f.file_id for f in server.files.values() if not f.forgotten)
    before = len(server.calls)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    half = len(users) // 2
    procs = [
        ctx.Process(
            target=_blaster,
            args=((server.url, part, file_id, seconds), queue),
        )
        for part in (users[:half], users[half:])
    ]
    for p in procs:
        p.start()
    counts = [await asyncio.to_thread(queue.get, True, seconds + 60) for _ in procs]
    for p in procs:
        await asyncio.to_thread(p.join, 10)
    if any(isinstance(c, dict) for c in counts):
        raise RuntimeError(f"calibration client crashed: {counts}")
    calls = [c for c in server.calls[before:] if c.method == "sendPhoto"]
    failed = [c.outcome for c in calls if not c.ok]
    if failed:
        raise RuntimeError(f"calibration sends failed: {Counter(failed)}")
    stamps = [c.at for c in calls]
    server.calls.clear()
    server.chats.clear()
    if len(stamps) < 2:
        return float("nan")
    return len(stamps) / (max(stamps) - min(stamps))


async def _variant(
    prefix: str, database_url: str, server: Any, engine: Any, n: int, users: int
) -> dict[str, Any]:
    await _reset(engine, database_url)
    server.calls.clear()
    server.chats.clear()
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(n + 1), ctx.Queue()
    procs = [
        ctx.Process(
            target=_worker,
            args=(
                (prefix, database_url, f"{server.url}/p{i}", barrier, f"bench-{n}-{i}"),
                queue,
            ),
        )
        for i in range(n)
    ]
    for p in procs:
        p.start()
    await asyncio.to_thread(barrier.wait, 120)
    started = time.monotonic()
    reports = [await asyncio.to_thread(queue.get, True, 3600) for _ in procs]
    for p in procs:
        await asyncio.to_thread(p.join, 30)
    crashes = [r["crash"] for r in reports if "crash" in r]
    if crashes:
        raise RuntimeError(f"push worker crashed: {crashes}")
    grants = [g / 1_000_000 for r in reports for g in r.pop("grants") or []]
    sends = [c.at for c in server.calls if c.method in ("sendPhoto", "sendMessage") and c.ok]
    photos = Counter(
        msg.chat_id for (_, chat), history in server.chats.items() for msg in history
        if msg.photo is not None and chat >= FIRST_ID
    )  # fmt: skip
    async with engine.connect() as conn:
        missed = int(
            await conn.scalar(
                text("SELECT count(*) FROM users WHERE id >= :a AND last_push_date IS NULL"),
                {"a": FIRST_ID},
            )
            or 0
        )
    seconds = (max(sends) - started) if sends else float("nan")
    return {
        "instances": n,
        "users": users,
        "seconds": seconds,
        "sends": len(sends),
        "sends_per_s": len(sends) / seconds if sends else float("nan"),
        "max_granted_in_1s": _max_in_window(grants),
        "max_in_1s": _max_in_window(sends),
        "rate_limit": RATE,
        "pushed_once": sum(1 for v in photos.values() if v == 1),
        "duplicates": sum(1 for v in photos.values() if v > 1),
        "missed": missed,
        "reports": reports,
    }


def rows(result: dict[str, Any]) -> list[list[Any]]:
    return [
        [
            v["instances"],
            v["users"],
            v["seconds"],
            v["sends_per_s"],
            v["max_granted_in_1s"],
            v["max_in_1s"],
            v["rate_limit"],
            v["pushed_once"],
            v["duplicates"],
            v["missed"],
        ]
        for v in result["variants"]
    ]


def report(result: dict[str, Any]) -> str:
    return "\n".join(
        [
            machine_summary(result["machine"]),
            f"the double alone: {result['double_capacity']:,.0f} sendPhoto/s (two client"
            " processes, no limiter)",
            "",
            render_table(HEADERS, rows(result)),
        ]
    )


async def run(*, quick: bool = False, database_url: str | None = None) -> dict[str, Any]:
    from devtools.botapi import BotAPIServer

    users = QUICK_USERS if quick else USERS
    prefix = new_prefix()
    # The double plays Telegram, whose servers do not share our CPUs: ahead of the bot
    # processes (when allowed), so its own stalls do not bunch the arrivals it stamps.
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, -5)
    probe = Redis.from_url(redis_url())
    async with contextlib.AsyncExitStack() as stack:
        database_url = await database_or_bench(stack, database_url)
        engine = create_engine(database_url)
        stack.push_async_callback(engine.dispose)
        stack.push_async_callback(probe.aclose)
        stack.push_async_callback(delete_prefix, probe, prefix)
        versions = await server_versions(probe, engine)
        server = BotAPIServer(tokens=[TOKEN])
        await server.start()
        stack.push_async_callback(server.stop)
        await _seed(engine, users)
        ids = list(range(FIRST_ID, FIRST_ID + users))
        for uid in ids:
            server.user(uid)
        await _warm_up(prefix, database_url, server, engine)
        # The double keeps every message: a full collection walking them in the middle of a
        # variant would stall its loop and bunch arrivals (the bot's own GC tuning, here).
        runtime.freeze_startup_heap()
        stack.callback(runtime.thaw_heap)
        capacity = await _calibrate(server, ids, 3.0 if quick else 5.0)
        print(f"the double alone: {capacity:,.0f} sendPhoto/s", flush=True)
        variants = []
        for n in INSTANCES:
            v = await _variant(prefix, database_url, server, engine, n, users)
            print(
                f"{n} instance(s): {v['seconds']:.1f} s, {v['sends_per_s']:.0f}/s, max"
                f" {v['max_granted_in_1s']} granted / {v['max_in_1s']} arrived in 1 s",
                flush=True,
            )
            variants.append(v)
    return {
        "quick": quick,
        "machine": machine_with_postgres(versions),
        "users": users,
        "rate": RATE,
        "double_capacity": capacity,
        "variants": variants,
        "date": dt.date.today().isoformat(),
    }


async def _main(quick: bool) -> None:
    with quiet_logs():
        result = await run(quick=quick)
    publish("push", result, report)


if __name__ == "__main__":
    cli(_main, __doc__)
