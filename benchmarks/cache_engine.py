"""Benchmark of the cache-aside engine against the raw floor and cashews / aiocache.

Run: ``python -m benchmarks.cache_engine [--quick]`` (REDIS_URL or redis://127.0.0.1:6379/0).
One Redis, own key prefix (deleted at the end), rounds interleaved between implementations so
that a noisy neighbour hurts everyone alike. Measures:

* warm hit: sequential ops, ops/s and p50/p99, ratio to the floor (redis-py GET + msgspec);
* cold stampede: loader calls and caller latency, 1 process x 1000 callers, 4 x 250;
* a dead Redis (closed port) and a hung Redis (accepts, never answers): per-call latency,
  peers bounded by a timeout so the benchmark finishes (reported as "> N s").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing as mp
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from benchmarks._util import machine, machine_summary, publish, render_table, summarize
from bot.ops import runtime
from cache import CacheAside, CacheMetrics, Codec, create_redis


class Horoscope(msgspec.Struct):
    sign: str
    date: str
    lang: str
    text: str


VALUE = Horoscope("aries", "2026-11-21", "ru", "Звёзды сегодня благосклонны. " * 20)
CODEC = Codec(Horoscope)
AS_DICT = msgspec.to_builtins(VALUE)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _time_ops(fn: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    out = []
    clock = time.perf_counter
    for _ in range(n):
        t0 = clock()
        await fn()
        out.append(clock() - t0)
    return out


# ---------------------------------------------------------------- warm hits


async def _warm(redis_url: str, prefix: str, n: int, rounds: int) -> dict[str, Any]:
    impls: dict[str, Callable[[], Awaitable[Any]]] = {}
    closers: list[Callable[[], Awaitable[Any]]] = []

    # floor: what any cache must do at least (one GET + decode)
    raw = create_redis(redis_url)
    closers.append(raw.aclose)
    raw_key = f"{prefix}:v1:bench:raw"
    dec = msgspec.msgpack.Decoder(Horoscope)
    await raw.set(raw_key, msgspec.msgpack.encode(VALUE), ex=3600)

    async def floor() -> Any:
        return dec.decode(await raw.get(raw_key))

    impls["floor: redis-py GET + msgspec"] = floor

    engine_client = create_redis(redis_url)
    closers.append(engine_client.aclose)
    engine = CacheAside(engine_client, metrics=CacheMetrics(CollectorRegistry()))
    key = f"{prefix}:v1:bench:hit"

    async def load() -> Horoscope:
        return VALUE

    await engine.set(key, VALUE, ttl=3600, codec=CODEC)

    async def ours() -> Any:
        return await engine.get_or_load(key, load, ttl=3600, codec=CODEC)

    async def ours_refresh() -> Any:
        return await engine.get_or_load(key, load, ttl=3600, codec=CODEC, early_refresh=60)

    impls["cache.CacheAside get_or_load"] = ours
    impls["cache.CacheAside (+early_refresh)"] = ours_refresh

    try:
        from cashews import Cache

        cashews = Cache()
        cashews.setup(redis_url)
        closers.append(cashews.close)

        @cashews(ttl="1h", key=f"{prefix}:cashews:hit")
        async def cashews_plain() -> Any:
            return AS_DICT

        @cashews(ttl="1h", key=f"{prefix}:cashews:hit-lock", lock=True)
        async def cashews_lock() -> Any:
            return AS_DICT

        await cashews_plain()
        await cashews_lock()
        impls["cashews @cache"] = cashews_plain
        impls["cashews @cache(lock=True)"] = cashews_lock
    except Exception as exc:  # a peer missing or broken must not kill the benchmark
        print(f"cashews unavailable: {exc!r}")

    try:
        from aiocache import RedisCache
        from aiocache.serializers import JsonSerializer

        host, port = _host_port(redis_url)
        aio = RedisCache(
            serializer=JsonSerializer(), endpoint=host, port=port, namespace=f"{prefix}:aio"
        )
        closers.append(aio.close)
        await aio.set("hit", AS_DICT, ttl=3600)

        async def aiocache_get() -> Any:
            value = await aio.get("hit")
            if value is None:
                value = AS_DICT
                await aio.set("hit", value, ttl=3600)
            return value

        impls["aiocache RedisCache get"] = aiocache_get
    except Exception as exc:
        print(f"aiocache unavailable: {exc!r}")

    for fn in impls.values():  # warm connections and code paths
        await _time_ops(fn, 200)
    lat: dict[str, list[float]] = {name: [] for name in impls}
    per_round = max(1, n // rounds)
    for _ in range(rounds):
        for name, fn in impls.items():
            lat[name].extend(await _time_ops(fn, per_round))
    for close in closers:
        with contextlib.suppress(Exception):
            await close()
    stats = {name: summarize(v) for name, v in lat.items()}
    floor_mean = stats["floor: redis-py GET + msgspec"]["mean_us"]
    for s in stats.values():
        s["x_floor"] = s["mean_us"] / floor_mean
    return stats


def _host_port(url: str) -> tuple[str, int]:
    from urllib.parse import urlparse

    u = urlparse(url)
    return u.hostname or "127.0.0.1", u.port or 6379


# ---------------------------------------------------------------- stampede


async def _stampede_one_process(
    redis_url: str, key: str, counter_key: str, callers: int, barrier: Any | None
) -> dict[str, Any]:
    client = create_redis(redis_url, max_connections=50)
    side = Redis.from_url(redis_url)
    await client.ping()
    cache = CacheAside(client, metrics=CacheMetrics(CollectorRegistry()))

    async def loader() -> Horoscope:
        await side.incr(counter_key)
        await asyncio.sleep(0.1)
        return VALUE

    async def one() -> float:
        t0 = time.perf_counter()
        await cache.get_or_load(key, loader, ttl=60, codec=CODEC)
        return time.perf_counter() - t0

    if barrier is not None:
        barrier.wait()
    latencies = await asyncio.gather(*(one() for _ in range(callers)))
    await cache.aclose()
    await client.aclose()
    await side.aclose()
    return {"latencies": list(latencies)}


def _stampede_worker(
    redis_url: str, key: str, counter_key: str, callers: int, barrier: Any, queue: Any
) -> None:
    queue.put(runtime.run(_stampede_one_process(redis_url, key, counter_key, callers, barrier)))


async def _stampede(redis_url: str, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    check = Redis.from_url(redis_url)
    try:
        key, counter = f"{prefix}:v1:bench:cold1", f"{prefix}:v1:bench:calls1"
        res = await _stampede_one_process(redis_url, key, counter, 1000, None)
        out["1x1000"] = {
            "loader_calls": int(await check.get(counter) or 0),
            **summarize(res["latencies"]),
        }
        key, counter = f"{prefix}:v1:bench:cold4", f"{prefix}:v1:bench:calls4"
        ctx = mp.get_context("spawn")
        barrier = ctx.Barrier(4)
        queue = ctx.Queue()
        procs = [
            ctx.Process(
                target=_stampede_worker, args=(redis_url, key, counter, 250, barrier, queue)
            )
            for _ in range(4)
        ]
        for p in procs:
            p.start()
        lat: list[float] = []
        for _ in procs:
            lat.extend((await asyncio.to_thread(queue.get, True, 120))["latencies"])
        for p in procs:
            p.join(10)
        out["4x250"] = {"loader_calls": int(await check.get(counter) or 0), **summarize(lat)}
    finally:
        await check.aclose()
    return out


# ---------------------------------------------------------------- failures


async def _bounded(fn: Callable[[], Awaitable[Any]], bound: float) -> tuple[float, str]:
    t0 = time.perf_counter()
    try:
        await asyncio.wait_for(fn(), bound)
        outcome = "value"
    except TimeoutError:  # ours (the bound) or the library's own timeout
        outcome = "bound" if time.perf_counter() - t0 >= bound * 0.99 else "raised TimeoutError"
    except Exception as exc:
        outcome = f"raised {type(exc).__name__}"
    return time.perf_counter() - t0, outcome


async def _failures(prefix: str, calls: int, bound: float) -> dict[str, Any]:
    logging.getLogger("cashews").setLevel(logging.CRITICAL)  # it logs every swallowed error
    writers: list[asyncio.StreamWriter] = []

    async def on_conn(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        writers.append(w)

    hung = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    hung_url = f"redis://127.0.0.1:{hung.sockets[0].getsockname()[1]}/0"
    dead_url = f"redis://127.0.0.1:{_free_port()}/0"
    results: dict[str, Any] = {}

    async def load() -> Horoscope:
        return VALUE

    for label, url in (("dead", dead_url), ("hung", hung_url)):
        peers: dict[str, Callable[[], Awaitable[Any]]] = {}
        closers: list[Callable[[], Awaitable[Any]]] = []
        client = create_redis(url)
        closers.append(client.aclose)
        engine = CacheAside(client, metrics=CacheMetrics(CollectorRegistry()))

        async def ours(engine: CacheAside = engine) -> Any:
            return await engine.get_or_load(f"{prefix}:v1:bench:f", load, ttl=60, codec=CODEC)

        peers["cache.CacheAside"] = ours
        try:
            from cashews import Cache

            cashews = Cache()
            cashews.setup(url)
            closers.append(cashews.close)

            @cashews(ttl="1h", key=f"{prefix}:c:f")
            async def cashews_fn() -> Any:
                return AS_DICT

            peers["cashews @cache"] = cashews_fn
        except Exception as exc:
            print(f"cashews setup failed on {label}: {exc!r}")
        try:
            from aiocache import RedisCache

            host, port = _host_port(url)
            aio = RedisCache(endpoint=host, port=port, namespace=f"{prefix}:a")
            closers.append(aio.close)

            async def aio_fn(aio: Any = aio) -> Any:
                value = await aio.get("f")
                if value is None:
                    await aio.set("f", "x", ttl=60)
                return value

            peers["aiocache RedisCache"] = aio_fn
        except Exception as exc:
            print(f"aiocache setup failed on {label}: {exc!r}")
        for name, fn in peers.items():
            n = calls if name.startswith("cache.") else min(calls, 3)
            times, outcomes = [], []
            for _ in range(n):
                t, o = await _bounded(fn, bound)
                times.append(t)
                outcomes.append(o)
            results[f"{label}/{name}"] = {
                "calls": n,
                "first_s": times[0],
                "median_s": sorted(times)[len(times) // 2],
                "max_s": max(times),
                "last_s": times[-1],
                "outcomes": sorted(set(outcomes)),
                "bound_s": bound,
            }
        for close in closers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(close(), 2)
    hung.close()
    for w in writers:
        w.close()
    return results


# ---------------------------------------------------------------- main


async def run(redis_url: str, *, quick: bool = False) -> dict[str, Any]:
    """Run everything once on ``redis_url``; print a table and write the JSON results."""
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    probe = Redis.from_url(redis_url)
    try:
        info = await probe.info("server")
        redis_version = str(info.get("redis_version") or info.get("valkey_version") or "?")
        warm = await _warm(redis_url, prefix, 3000 if quick else 30000, 3 if quick else 6)
        stampede = await _stampede(redis_url, prefix)
        failures = await _failures(prefix, 5 if quick else 20, 3.0 if quick else 10.0)
    finally:
        async for key in probe.scan_iter(match=f"{prefix}*", count=500):
            await probe.delete(key)
        await probe.aclose()
    result = {
        "machine": machine(redis_version),
        "quick": quick,
        "warm_hit": warm,
        "stampede": stampede,
        "failures": failures,
        "targets": {
            "warm_hit_x_floor_max": 1.3,
            "warm_hit_x_floor": warm["cache.CacheAside get_or_load"]["x_floor"],
            "stampede_loader_calls": {k: v["loader_calls"] for k, v in stampede.items()},
        },
    }
    publish("cache_engine", result, report)
    return result


def report(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"cache engine benchmark  {machine_summary(m, postgres=False)}",
        "",
        "Warm hit (sequential, one key)",
        render_table(
            ["implementation", "ops/s", "p50 us", "p99 us", "x floor"],
            [
                [name, s["ops_per_s"], s["p50_us"], s["p99_us"], s["x_floor"]]
                for name, s in result["warm_hit"].items()
            ],
        ),
        "",
        "Cold stampede (100 ms loader)",
        render_table(
            ["scenario", "loader calls", "p50 ms", "p99 ms", "max ms"],
            [
                [
                    name,
                    s["loader_calls"],
                    s["p50_us"] / 1000,
                    s["p99_us"] / 1000,
                    s["max_us"] / 1000,
                ]
                for name, s in result["stampede"].items()
            ],
        ),
        "",
        "Redis unavailable (per call; peers bounded)",
        render_table(
            ["redis / implementation", "calls", "first", "median", "last", "max", "outcome"],
            [
                [
                    name,
                    s["calls"],
                    _dur(s["first_s"], s["bound_s"]),
                    _dur(s["median_s"], s["bound_s"]),
                    _dur(s["last_s"], s["bound_s"]),
                    _dur(s["max_s"], s["bound_s"]),
                    ",".join(s["outcomes"]),
                ]
                for name, s in result["failures"].items()
            ],
        ),
    ]
    return "\n".join(lines)


def _dur(seconds: float, bound: float) -> str:
    if seconds >= bound * 0.99:
        return f"> {bound:.0f} s"
    if seconds < 0.01:
        return f"{seconds * 1000:.2f} ms"
    return f"{seconds:.3f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    args = parser.parse_args()
    runtime.run(run(args.redis_url, quick=args.quick))


if __name__ == "__main__":
    main()
