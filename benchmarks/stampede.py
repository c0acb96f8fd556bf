"""Stampede at midnight: 10,000 people ask for today's horoscope within one second, cold.

Run: ``python -m benchmarks.stampede [--quick]``. Cold means no Redis key under our prefix and
an empty ``horoscopes`` table. The generator is the built-in TemplateGenerator behind a 200 ms
sleep and a call counter (a Redis INCR, so calls from several processes add up). Requests go
through ``HoroscopeRepository.get_or_generate(sign, today, lang, count_view=True)``, spread
evenly over ``spread`` seconds (request i starts at i/N * spread); latency is measured from the
request's scheduled start, so event-loop lag counts. 12 signs x 2 languages: exactly 24
generations are expected, however many processes ask. Scenarios: one process x N, and
4 processes x N/4 started together (a barrier).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import multiprocessing as mp
import random
import time
from typing import Any

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from sqlalchemy import text

from benchmarks._env import (
    bench_settings,
    bot_engine,
    bot_redis,
    database_or_bench,
    delete_prefix,
    new_prefix,
    quiet_logs,
    redis_url,
    server_versions,
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
from bot.domain.generation.template import TemplateGenerator
from bot.ops import runtime
from cache import CacheAside, CacheMetrics, KeySpace
from db.engine import create_engine, create_session_factory
from db.repositories import DataContext, HoroscopeRepository
from db.types import GeneratedHoroscope, Lang, Sign

SIGNS = list(Sign)
LANGS = (Lang.RU, Lang.EN)
GENERATION_DELAY = 0.2
#: a request still unanswered after CAP seconds is cancelled and counted as an error
CAP = 30.0


class SlowCountingGenerator:
    """TemplateGenerator behind a sleep; every call INCRs a Redis counter first."""

    name = "template-slow"

    def __init__(self, counter: Redis, key: str, delay: float = GENERATION_DELAY) -> None:
        self.inner = TemplateGenerator()
        self.counter = counter
        self.key = key
        self.delay = delay

    async def generate(self, sign: Sign, date: dt.date, lang: Lang) -> GeneratedHoroscope:
        await self.counter.incr(self.key)
        await asyncio.sleep(self.delay)
        return await self.inner.generate(sign, date, lang)


async def _one_process(
    database_url: str,
    prefix: str,
    counter_key: str,
    requests: int,
    spread: float,
    seed: int,
    barrier: Any | None,
    count_view: bool = True,
) -> dict[str, Any]:
    """``requests`` get_or_generate calls spread over ``spread`` s; the bot's pool settings."""
    settings = bench_settings(prefix, database_url=database_url, redis_url=redis_url())
    engine = bot_engine(database_url, settings)
    client = bot_redis(redis_url(), settings)
    side = Redis.from_url(redis_url())
    metrics = CacheMetrics(CollectorRegistry())
    cache = CacheAside(client, metrics=metrics, op_timeout=settings.redis_socket_timeout)
    ctx = DataContext(
        cache=cache,
        keys=KeySpace(prefix, settings.cache_schema_version),
        session_factory=create_session_factory(engine),
        tz=settings.tz,
    )
    repo = HoroscopeRepository(ctx, SlowCountingGenerator(side, counter_key))
    today = ctx.today()
    rng = random.Random(seed)
    asks = [(rng.choice(SIGNS), LANGS[rng.randrange(2)]) for _ in range(requests)]
    latencies: list[float] = [0.0] * requests
    errors: list[str] = []
    try:
        # open one connection of each kind before the start line (a running bot has them)
        await client.ping()
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        if barrier is not None:
            await asyncio.to_thread(barrier.wait)
        loop = asyncio.get_running_loop()
        base = loop.time() + 0.05

        async def ask(i: int) -> None:
            at = base + spread * i / requests
            await asyncio.sleep(at - loop.time())
            sign, lang = asks[i]
            try:
                await asyncio.wait_for(
                    repo.get_or_generate(sign, today, lang, count_view=count_view), CAP
                )
            except TimeoutError:
                errors.append(f"no answer within {CAP:.0f} s (cancelled)")
            except Exception as exc:
                errors.append(repr(exc))
            latencies[i] = loop.time() - at

        t0 = time.perf_counter()
        await asyncio.gather(*(ask(i) for i in range(requests)))
        wall = time.perf_counter() - t0
    finally:
        await cache.aclose()
        await client.aclose()
        await side.aclose()
        await engine.dispose()
    events: dict[str, float] = {}
    for counts in metrics.snapshot().values():
        for name, value in counts.items():
            if value:
                events[name] = events.get(name, 0.0) + value
    return {
        "latencies": latencies,
        "errors": errors,
        "wall_s": wall,
        "cache_events": events,
        "asked": sorted({f"{s.value}:{lang.value}" for s, lang in asks}),
    }


def _silence_fallback_errors() -> None:
    # a failed view fallback logs a full traceback per request; they are counted instead
    # (views_counted vs requests)
    logging.getLogger("cache.aside").setLevel(logging.CRITICAL)


def _worker(args: tuple[Any, ...], queue: Any) -> None:
    with quiet_logs():
        _silence_fallback_errors()
        try:
            queue.put(runtime.run(_one_process(*args)))
        except Exception as exc:  # report instead of hanging the parent
            queue.put({"crash": repr(exc)})


async def _scenario(
    database_url: str,
    prefix: str,
    processes: int,
    total: int,
    spread: float,
    count_view: bool,
) -> dict[str, Any]:
    url = redis_url()
    probe = Redis.from_url(url)
    engine = create_engine(database_url)
    counter_key = f"{prefix}:bench:generations"
    try:
        await truncate_all(engine)
        await delete_prefix(probe, prefix)  # cold: nothing of ours in Redis
        per = total // processes
        if processes == 1:
            parts = [
                await _one_process(
                    database_url, prefix, counter_key, per, spread, 1, None, count_view
                )
            ]
        else:
            ctx = mp.get_context("spawn")
            barrier = ctx.Barrier(processes)
            queue = ctx.Queue()
            procs = [
                ctx.Process(
                    target=_worker,
                    args=(
                        (
                            database_url,
                            prefix,
                            counter_key,
                            per,
                            spread,
                            i + 1,
                            barrier,
                            count_view,
                        ),
                        queue,
                    ),
                )
                for i in range(processes)
            ]
            for p in procs:
                p.start()
            parts = [await asyncio.to_thread(queue.get, True, 180) for _ in procs]
            for p in procs:
                await asyncio.to_thread(p.join, 10)
        crashes = [p["crash"] for p in parts if "crash" in p]
        if crashes:
            raise RuntimeError(f"stampede worker crashed: {crashes}")
        generations = int(await probe.get(counter_key) or 0)
        async with engine.connect() as conn:
            rows = int(await conn.scalar(text("SELECT count(*) FROM horoscopes")) or 0)
            pg_views = int(
                await conn.scalar(text("SELECT coalesce(sum(view_count), 0) FROM horoscope_views"))
                or 0
            )
        buffered = await probe.hgetall(f"{prefix}:v1:buf:views")
        views = pg_views + sum(int(v) for v in buffered.values())
    finally:
        await engine.dispose()
        await probe.aclose()
    lat = [x for p in parts for x in p["latencies"]]
    asked = sorted({k for p in parts for k in p["asked"]})
    events: dict[str, float] = {}
    for part in parts:
        for k, v in part["cache_events"].items():
            events[k] = events.get(k, 0.0) + v
    return {
        "processes": processes,
        "count_view": count_view,
        "requests": len(lat),
        "spread_s": spread,
        "keys_asked": len(asked),
        "generations": generations,
        "expected_generations": len(asked),
        "rows": rows,
        "views_counted": views,
        "errors": sum(len(p["errors"]) for p in parts),
        "error_samples": sorted({e for p in parts for e in p["errors"]})[:5],
        "p50_ms": percentile(lat, 50) * 1000,
        "p99_ms": percentile(lat, 99) * 1000,
        "max_ms": max(lat) * 1000,
        "cache_events": events,
    }


async def run(
    *,
    quick: bool = False,
    requests: int | None = None,
    spread: float = 1.0,
    processes: tuple[int, ...] | None = None,
    write: bool = True,
    database_url: str | None = None,
) -> dict[str, Any]:
    requests = requests or (2000 if quick else 10_000)
    processes = processes or ((1,) if quick else (1, 4))
    prefix = new_prefix()
    out: dict[str, Any] = {}
    with quiet_logs():
        _silence_fallback_errors()
        async with contextlib.AsyncExitStack() as stack:
            db_url = await database_or_bench(stack, database_url)
            probe = Redis.from_url(redis_url())
            engine = create_engine(db_url)
            try:
                versions = await server_versions(probe, engine)
                for count_view in (True, False):
                    for n in processes:
                        name = f"{n}x{requests // n}" + ("" if count_view else " (no view)")
                        out[name] = await _scenario(db_url, prefix, n, requests, spread, count_view)
            finally:
                await delete_prefix(probe, prefix)
                await probe.aclose()
                await engine.dispose()
    result = {
        "machine": machine_with_postgres(versions),
        "quick": quick,
        "generation_delay_s": GENERATION_DELAY,
        "scenarios": out,
    }
    if write:
        publish("stampede", result, report)
    return result


HEADERS = [
    "processes x requests",
    "keys",
    "generations",
    "expected",
    "views counted",
    "errors",
    "p50 ms",
    "p99 ms",
    "max ms",
]


def rows(result: dict[str, Any]) -> list[list[Any]]:
    return [
        [
            name,
            s["keys_asked"],
            s["generations"],
            s["expected_generations"],
            s["views_counted"],
            s["errors"],
            s["p50_ms"],
            s["p99_ms"],
            s["max_ms"],
        ]
        for name, s in result["scenarios"].items()
    ]


def report(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"stampede at midnight  {machine_summary(m)}",
        f"cold cache, empty table, {result['generation_delay_s'] * 1000:.0f} ms generator, "
        "requests spread over ~1 s",
        "",
        render_table(HEADERS, rows(result)),
    ]
    for name, s in result["scenarios"].items():
        ev = s["cache_events"]
        lines.append(
            f"{name}: cache events {', '.join(f'{k}={v:.0f}' for k, v in sorted(ev.items()))}"
        )
        if s["error_samples"]:
            lines.append(f"{name}: errors e.g. {s['error_samples']}")
    return "\n".join(lines)


def main() -> None:
    cli(run, __doc__)


if __name__ == "__main__":
    main()
