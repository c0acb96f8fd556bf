"""Benchmark of the cache-aside engine against raw redis-py and cashews / aiocache.

Run: ``python -m benchmarks.cache_engine [--quick]`` or ``python -m benchmarks --only
cache_engine`` (REDIS_URL or redis://127.0.0.1:6379/0). One Redis, own key prefix (deleted at
the end). Every implementation reads the same value (a msgspec Struct of ~650 bytes) from 1,000
keys of its own, on a pool of 50 connections; rounds are interleaved between implementations,
in forward and then reversed order, so that a noisy neighbour hurts everyone alike. Ratios are
taken against the raw redis-py GET of the same run (``x raw``: throughput / raw's, higher is
better). Measures:

* warm hit, sequential: one caller, ops/s and p50/p99;
* warm hit, 100 concurrent callers (closed loop): ops/s from the wall clock, p50/p99 per call,
  Redis round trips per call; plus a raw redis-py pipeline of 100 GETs (one caller) as the
  batching ceiling;
* cold stampede (100 ms loader): loader calls, Redis commands per cold key (counted at the
  connection), caller latency; one process x 1000 callers interleaved with a bare
  single-flight (no Redis) as its floor, and 4 processes x 250;
* the engine on redis-py's public connection methods only (a connection class that overrides
  ``send_packed_command`` / ``read_response`` with plain ``super()`` calls, so the
  auto-pipeline's direct write and hiredis read in cache/pipelining.py stand aside): what the
  use of redis-py internals buys, in the same run;
* a dead Redis (closed port) and a hung Redis (accepts, never answers): per-call latency,
  peers bounded by a timeout so the benchmark finishes (reported as "> N s").

Peers: the raw client's pool waits up to 10 s for a free connection (with the 0.25 s of
``create_redis`` a hundred raw callers on 50 connections fail with "No connection available");
the engine runs on ``create_redis``'s defaults, as the bot does. cashews and aiocache are
benchmark-only extras (``dev`` dependencies); when one is missing its rows are skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing as mp
import os
import socket
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry
from redis.asyncio import BlockingConnectionPool, Connection, Redis

from benchmarks._util import (
    machine,
    machine_summary,
    percentile,
    publish,
    render_markdown,
    render_table,
    summarize,
)
from bot.ops import runtime
from cache import CacheAside, CacheMetrics, Codec, Load, SideCommand, SingleFlight, create_redis
from devtools.traffic import RedisTraffic


class Horoscope(msgspec.Struct):
    sign: str
    date: str
    lang: str
    text: str


VALUE = Horoscope("aries", "2026-11-21", "ru", "Звёзды сегодня благосклонны. " * 20)
CODEC = Codec(Horoscope)
AS_DICT = msgspec.to_builtins(VALUE)
KEYS = 1000
POOL = 50
CONCURRENCY = 100
RAW = "raw: redis-py GET + msgspec"
RAW_PIPE = "raw: redis-py pipeline of 100 GETs"
OURS = "cache.CacheAside get_or_load"

#: the issue 13 targets, checked in the report
TARGETS = {
    "c100_x_raw_min": 2.5,
    "sequential_x_raw_min": 0.97,
    "stampede_commands_per_key_4p_max": 25,
    "stampede_p50_x_bare_max": 1.05,
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _host_port(url: str) -> tuple[str, int]:
    from urllib.parse import urlparse

    u = urlparse(url)
    return u.hostname or "127.0.0.1", u.port or 6379


# ---------------------------------------------------------------- warm hits


@dataclass
class Impl:
    """One way of reading: ``op(i)`` reads key ``i % KEYS`` (or ``batch`` keys from ``i``)."""

    name: str
    op: Callable[[int], Awaitable[Any]]
    batch: int = 1  # reads per op (a pipeline of 100 GETs counts as 100)
    concurrent_only: bool = False
    sequential_only: bool = False
    pipelines: Callable[[], int] | None = None  # round trips so far (the engine's batcher)
    lat: dict[str, list[float]] = field(default_factory=lambda: {"seq": [], "c100": []})
    wall: float = 0.0
    ops: int = 0
    trips: int = 0


class _PublicPathConnection(Connection):
    """redis-py's connection, reached only through its public methods: the engine's fast path
    (cache/pipelining.py: direct write, replies taken from the hiredis reader) recognises
    redis-py's own methods only, so with these overrides it sends and reads as for any
    wrapped connection. The overrides add one Python call each, nothing else."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        await super().send_packed_command(command, check_health)

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        return await super().read_response(*args, **kwargs)


async def _peers(url: str, prefix: str, closers: list[Callable[[], Awaitable[Any]]]) -> list[Impl]:
    """Every implementation, with its 1,000 warm keys (the same value everywhere)."""
    impls: list[Impl] = []
    encoded = msgspec.msgpack.encode(VALUE)
    dec = msgspec.msgpack.Decoder(Horoscope)

    raw = create_redis(url, max_connections=POOL, pool_timeout=10.0)
    closers.append(raw.aclose)
    raw_keys = [f"{prefix}:v1:raw:{i}" for i in range(KEYS)]
    await raw.mset(dict.fromkeys(raw_keys, encoded))

    async def raw_get(i: int) -> Any:
        return dec.decode(await raw.get(raw_keys[i % KEYS]))

    async def raw_pipe(i: int) -> Any:
        pipe = raw.pipeline(transaction=False)
        for j in range(i, i + 100):
            pipe.get(raw_keys[j % KEYS])
        return [dec.decode(v) for v in await pipe.execute()]

    impls.append(Impl(RAW, raw_get))
    impls.append(Impl(RAW_PIPE, raw_pipe, batch=100, concurrent_only=True))

    client = create_redis(url, max_connections=POOL)
    closers.append(client.aclose)
    engine = CacheAside(client, metrics=CacheMetrics(CollectorRegistry()))
    closers.append(engine.aclose)
    keys = [f"{prefix}:v1:bench:{i}" for i in range(KEYS)]
    await engine.set_many([(k, VALUE) for k in keys], ttl=3600, codec=CODEC)
    views = f"{prefix}:v1:buf:views"

    async def load() -> Horoscope:
        return VALUE

    async def ours(i: int) -> Any:
        return await engine.get_or_load(keys[i % KEYS], load, ttl=3600, codec=CODEC)

    async def ours_refresh(i: int) -> Any:
        k = keys[i % KEYS]
        return await engine.get_or_load(k, load, ttl=3600, codec=CODEC, early_refresh=60)

    async def ours_side(i: int) -> Any:
        also = (SideCommand(("HINCRBY", views, "2026-11-21:aries", 1)),)
        return await engine.get_or_load(keys[i % KEYS], load, ttl=3600, codec=CODEC, also=also)

    async def ours_hot(i: int) -> Any:
        return await engine.get_or_load(keys[0], load, ttl=3600, codec=CODEC)

    async def ours_many(i: int) -> Any:
        loads = [Load(keys[j % KEYS], load, CODEC, 3600) for j in (i, i + 1)]
        return await engine.load_many(loads)

    def trips() -> int:
        return engine._batcher.pipelines

    public = create_redis(url, max_connections=POOL)
    public.connection_pool.connection_class = _PublicPathConnection
    closers.append(public.aclose)
    engine_public = CacheAside(public, metrics=CacheMetrics(CollectorRegistry()))
    closers.append(engine_public.aclose)

    async def ours_public(i: int) -> Any:
        return await engine_public.get_or_load(keys[i % KEYS], load, ttl=3600, codec=CODEC)

    def trips_public() -> int:
        return engine_public._batcher.pipelines

    impls += [
        Impl(OURS, ours, pipelines=trips),
        Impl("cache.CacheAside (+early_refresh)", ours_refresh, pipelines=trips),
        Impl("cache.CacheAside (+1 side command)", ours_side, pipelines=trips),
        Impl("cache.CacheAside load_many (2 keys)", ours_many, batch=2, pipelines=trips),
        Impl("cache.CacheAside (one hot key)", ours_hot, concurrent_only=True, pipelines=trips),
        Impl("cache.CacheAside, public redis-py path", ours_public, pipelines=trips_public),
    ]

    try:
        from cashews import Cache

        cashews = Cache()
        cashews.setup(url, max_connections=POOL)
        closers.append(cashews.close)

        @cashews(ttl="1h", key=prefix + ":cashews:{k}")
        async def cashews_plain(k: int) -> Any:
            return AS_DICT

        @cashews(ttl="1h", key=prefix + ":cashews-lock:{k}", lock=True)
        async def cashews_lock(k: int) -> Any:
            return AS_DICT

        for i in range(KEYS):
            await cashews_plain(i)
            await cashews_lock(i)

        async def cashews_get(i: int) -> Any:
            return await cashews_plain(i % KEYS)

        async def cashews_get_lock(i: int) -> Any:
            return await cashews_lock(i % KEYS)

        impls.append(Impl("cashews @cache", cashews_get))
        impls.append(Impl("cashews @cache(lock=True)", cashews_get_lock))
    except Exception as exc:  # a peer missing or broken must not kill the benchmark
        print(f"cashews unavailable: {exc!r}")

    try:
        from aiocache import RedisCache
        from aiocache.serializers import JsonSerializer

        host, port = _host_port(url)
        aio = RedisCache(
            serializer=JsonSerializer(),
            endpoint=host,
            port=port,
            namespace=f"{prefix}:aio",
            pool_max_size=POOL,
            connection_pool_class=BlockingConnectionPool,
            connection_pool_kwargs={"timeout": 10},
        )
        closers.append(aio.close)
        for i in range(KEYS):
            await aio.set(str(i), AS_DICT, ttl=3600)

        async def aiocache_get(i: int) -> Any:
            key = str(i % KEYS)
            value = await aio.get(key)
            if value is None:
                value = AS_DICT
                await aio.set(key, value, ttl=3600)
            return value

        impls.append(Impl("aiocache RedisCache get", aiocache_get))
    except Exception as exc:
        print(f"aiocache unavailable: {exc!r}")
    return impls


async def _sequential(impl: Impl, start: int, n: int) -> None:
    clock = time.perf_counter
    op, out = impl.op, impl.lat["seq"]
    for i in range(start, start + n):
        t0 = clock()
        await op(i)
        out.append(clock() - t0)


async def _concurrent(impl: Impl, start: int, n_ops: int) -> None:
    """A closed loop: ``CONCURRENCY`` callers, each issuing its next read when one returns
    (a raw pipeline runs as one caller: its 100 GETs are the hundred in flight)."""
    clock = time.perf_counter
    op, out = impl.op, impl.lat["c100"]
    callers = 1 if impl.batch >= CONCURRENCY else CONCURRENCY
    per = max(1, n_ops // callers // impl.batch)

    async def caller(c: int) -> None:
        # step j of caller c reads key start + (j * callers + c) * batch: the callers in flight
        # at one time read distinct keys (only the "one hot key" row shares one on purpose)
        for j in range(per):
            t0 = clock()
            await op(start + (j * callers + c) * impl.batch)
            out.append(clock() - t0)

    trips0 = impl.pipelines() if impl.pipelines else 0
    t0 = clock()
    await asyncio.gather(*(caller(c) for c in range(callers)))
    impl.wall += clock() - t0
    impl.ops += callers * per * impl.batch
    if impl.pipelines:
        impl.trips += impl.pipelines() - trips0


async def _warm(
    url: str, prefix: str, n_seq: int, n_conc: int, seq_chunk: int = 500, conc_chunk: int = 10_000
) -> dict[str, Any]:
    """``n_seq`` sequential and ``n_conc`` concurrent reads per implementation, in chunks that
    take turns (forward order, then reversed): a burst of noise from a neighbour lands on every
    implementation alike instead of on whichever ran at that moment."""
    closers: list[Callable[[], Awaitable[Any]]] = []
    try:
        impls = await _peers(url, prefix, closers)
        for impl in impls:  # warm connections and code paths
            if not impl.concurrent_only:
                await _sequential(impl, 0, 200)
            if not impl.sequential_only:
                await _concurrent(impl, 0, 2000)
            impl.lat = {"seq": [], "c100": []}
            impl.wall, impl.ops, impl.trips = 0.0, 0, 0
        seq_rounds = max(2, n_seq // seq_chunk)
        for r in range(seq_rounds):
            for impl in impls if r % 2 == 0 else reversed(impls):
                if not impl.concurrent_only:
                    await _sequential(impl, r * seq_chunk, n_seq // seq_rounds)
        conc_rounds = max(2, n_conc // conc_chunk)
        for r in range(conc_rounds):
            for impl in impls if r % 2 == 0 else reversed(impls):
                if not impl.sequential_only:
                    await _concurrent(impl, r * conc_chunk, n_conc // conc_rounds)
    finally:
        for close in reversed(closers):
            with contextlib.suppress(Exception):
                await close()
    seq: dict[str, Any] = {}
    conc: dict[str, Any] = {}
    for impl in impls:
        if impl.lat["seq"]:
            s = summarize(impl.lat["seq"])
            seq[impl.name] = {**s, "ops_per_s": impl.batch * s["ops_per_s"]}
        if impl.lat["c100"]:
            c = summarize(impl.lat["c100"])
            conc[impl.name] = {
                **c,
                "ops_per_s": impl.ops / impl.wall,
                "trips_per_op": impl.trips / impl.ops if impl.pipelines else None,
                "callers": 1 if impl.batch >= CONCURRENCY else CONCURRENCY,
            }
    conc[RAW]["trips_per_op"] = 1.0
    conc[RAW_PIPE]["trips_per_op"] = 0.01
    for table in (seq, conc):
        base = table[RAW]["ops_per_s"]
        for s in table.values():
            s["x_raw"] = s["ops_per_s"] / base
    return {"sequential": seq, "concurrent": conc}


# ---------------------------------------------------------------- stampede


async def _stampede_engine(
    url: str, key: str, counter_key: str, callers: int, barrier: Any | None
) -> dict[str, Any]:
    """``callers`` concurrent get_or_load of one cold key in this process."""
    client = create_redis(url, max_connections=POOL)
    side = Redis.from_url(url)
    await client.ping()
    await side.ping()
    cache = CacheAside(client, metrics=CacheMetrics(CollectorRegistry()))
    traffic = RedisTraffic(client)

    async def loader() -> Horoscope:
        await side.incr(counter_key)
        await asyncio.sleep(0.1)
        return VALUE

    async def one() -> float:
        t0 = time.perf_counter()
        await cache.get_or_load(key, loader, ttl=60, codec=CODEC)
        return time.perf_counter() - t0

    if barrier is not None:
        await asyncio.to_thread(barrier.wait)
    traffic.reset()
    latencies = await asyncio.gather(*(one() for _ in range(callers)))
    commands = len(traffic.commands)
    await cache.aclose()
    await client.aclose()
    await side.aclose()
    return {"latencies": list(latencies), "commands": commands}


async def _stampede_bare(url: str, counter_key: str, callers: int) -> dict[str, Any]:
    """The floor: the same loader behind a bare single-flight, no Redis cache at all."""
    side = Redis.from_url(url)
    await side.ping()
    flight = SingleFlight()

    async def loader() -> Horoscope:
        await side.incr(counter_key)
        await asyncio.sleep(0.1)
        return VALUE

    async def one() -> float:
        t0 = time.perf_counter()
        await flight.do("cold", loader)
        return time.perf_counter() - t0

    latencies = await asyncio.gather(*(one() for _ in range(callers)))
    await side.aclose()
    return {"latencies": list(latencies), "commands": 0}


def _stampede_worker(
    url: str, key: str, counter_key: str, callers: int, barrier: Any, queue: Any
) -> None:
    queue.put(runtime.run(_stampede_engine(url, key, counter_key, callers, barrier)))


async def _stampede(url: str, prefix: str, rounds: int, rounds_4p: int) -> dict[str, Any]:
    check = Redis.from_url(url)
    runs: dict[str, list[dict[str, Any]]] = {"bare": [], "1x1000": [], "4x250": []}
    try:
        for r in range(rounds):  # interleaved: bare single-flight, then the engine, fresh keys
            for name in ("bare", "1x1000") if r % 2 == 0 else ("1x1000", "bare"):
                key, counter = f"{prefix}:v1:cold:{name}:{r}", f"{prefix}:calls:{name}:{r}"
                if name == "bare":
                    res = await _stampede_bare(url, counter, 1000)
                else:
                    res = await _stampede_engine(url, key, counter, 1000, None)
                res["loader_calls"] = int(await check.get(counter) or 0)
                runs[name].append(res)
        ctx = mp.get_context("spawn")
        for r in range(rounds_4p):
            key, counter = f"{prefix}:v1:cold:4p:{r}", f"{prefix}:calls:4p:{r}"
            barrier = ctx.Barrier(4)
            queue = ctx.Queue()
            procs = [
                ctx.Process(target=_stampede_worker, args=(url, key, counter, 250, barrier, queue))
                for _ in range(4)
            ]
            for p in procs:
                p.start()
            parts = [await asyncio.to_thread(queue.get, True, 120) for _ in procs]
            for p in procs:
                await asyncio.to_thread(p.join, 10)
            runs["4x250"].append(
                {
                    "latencies": [x for part in parts for x in part["latencies"]],
                    "commands": sum(part["commands"] for part in parts),
                    "loader_calls": int(await check.get(counter) or 0),
                }
            )
    finally:
        await check.aclose()
    out: dict[str, Any] = {}
    names = {"bare": "bare single-flight (no Redis), 1x1000", "1x1000": "1x1000", "4x250": "4x250"}
    for name, results in runs.items():
        if not results:
            continue
        lat = [x for res in results for x in res["latencies"]]
        out[names[name]] = {
            **summarize(lat),
            "rounds": len(results),
            "loader_calls_max": max(res["loader_calls"] for res in results),
            "commands_per_key_max": max(res["commands"] for res in results),
            "p50_per_round_ms": [percentile(res["latencies"], 50) * 1000 for res in results],
        }
    bare = out[names["bare"]]
    for s in out.values():
        s["p50_x_bare"] = s["p50_us"] / bare["p50_us"]
        # per round (engine round r against bare round r): robust to one noisy round
        s["p50_x_bare_median"] = statistics.median(
            a / b for a, b in zip(s["p50_per_round_ms"], bare["p50_per_round_ms"], strict=False)
        )
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


async def run(
    redis_url: str, *, quick: bool = False, write: bool = True, smoke: bool = False
) -> dict[str, Any]:
    """Run everything once on ``redis_url``; print a table and write the JSON results.

    ``smoke``: tiny sizes, one process, no failure scenarios (the test suite's check that the
    benchmark runs end to end and counts what it should; its timings mean nothing).
    """
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    probe = Redis.from_url(redis_url)
    try:
        info = await probe.info("server")
        redis_version = str(info.get("redis_version") or info.get("valkey_version") or "?")
        if smoke:
            warm = await _warm(redis_url, prefix, 400, 2000, 200, 1000)
            stampede = await _stampede(redis_url, prefix, 2, 0)
            failures = {}
        elif quick:
            warm = await _warm(redis_url, prefix, 2000, 4000, 500, 2000)
            stampede = await _stampede(redis_url, prefix, 2, 1)
            failures = await _failures(prefix, 5, 3.0)
        else:
            warm = await _warm(redis_url, prefix, 24_000, 120_000)
            stampede = await _stampede(redis_url, prefix, 6, 2)
            failures = await _failures(prefix, 20, 10.0)
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
    }
    result["targets"] = targets(result)
    if write:
        publish("cache_engine", result, report)
    return result


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """Issue 13's goals 1-3, read off this run (ratios against this run's baselines)."""
    seq, conc = result["warm_hit"]["sequential"], result["warm_hit"]["concurrent"]
    st = result["stampede"]
    one, four = st["1x1000"], st.get("4x250", st["1x1000"])
    got = {
        "c100_x_raw": conc[OURS]["x_raw"],
        "c100_p99_us": conc[OURS]["p99_us"],
        "c100_raw_p99_us": conc[RAW]["p99_us"],
        "sequential_x_raw": seq[OURS]["x_raw"],
        "stampede_loader_calls": {
            "1x1000": one["loader_calls_max"],
            "4x250": four["loader_calls_max"],
        },
        "stampede_commands_per_key_4p": four["commands_per_key_max"],
        "stampede_p50_x_bare": one["p50_x_bare_median"],
    }
    got["met"] = {
        "c100 >= 2.5x raw": got["c100_x_raw"] >= TARGETS["c100_x_raw_min"],
        "c100 p99 <= raw p99": got["c100_p99_us"] <= got["c100_raw_p99_us"],
        "sequential >= 0.97x raw": got["sequential_x_raw"] >= TARGETS["sequential_x_raw_min"],
        "one load per cold key": set(got["stampede_loader_calls"].values()) == {1},
        "<= 25 commands per cold key (4 processes)": got["stampede_commands_per_key_4p"]
        <= TARGETS["stampede_commands_per_key_4p_max"],
        "stampede p50 <= 1.05x bare single-flight": got["stampede_p50_x_bare"]
        <= TARGETS["stampede_p50_x_bare_max"],
    }
    return got


SEQ_HEADERS = ["implementation", "ops/s", "p50 µs", "p99 µs", "x raw"]
CONC_HEADERS = ["implementation", "callers", "ops/s", "p50 µs", "p99 µs", "trips/op", "x raw"]
STAMPEDE_HEADERS = [
    "scenario",
    "rounds",
    "loader calls",
    "cmds/key",
    "p50 ms",
    "p99 ms",
    "p50 x bare",
]


def seq_rows(result: dict[str, Any]) -> list[list[Any]]:
    return [
        [n, s["ops_per_s"], s["p50_us"], s["p99_us"], s["x_raw"]]
        for n, s in result["warm_hit"]["sequential"].items()
    ]


def conc_rows(result: dict[str, Any]) -> list[list[Any]]:
    def trips(s: dict[str, Any]) -> Any:
        return "-" if s["trips_per_op"] is None else s["trips_per_op"]

    return [
        [n, s["callers"], s["ops_per_s"], s["p50_us"], s["p99_us"], trips(s), s["x_raw"]]
        for n, s in result["warm_hit"]["concurrent"].items()
    ]


def stampede_rows(result: dict[str, Any]) -> list[list[Any]]:
    return [
        [
            n,
            s["rounds"],
            s["loader_calls_max"],
            s["commands_per_key_max"],
            s["p50_us"] / 1000,
            s["p99_us"] / 1000,
            s["p50_x_bare_median"],
        ]
        for n, s in result["stampede"].items()
    ]


def _target_lines(result: dict[str, Any]) -> list[str]:
    t = result["targets"]
    return [f"- {name}: {'met' if ok else 'NOT met'}" for name, ok in t["met"].items()]


def report(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"cache engine benchmark  {machine_summary(m, postgres=False)}",
        "",
        "Warm hit, sequential (one caller; 1,000 keys, same value; x raw = ops/s / raw GET's)",
        render_table(SEQ_HEADERS, seq_rows(result)),
        "",
        f"Warm hit, {CONCURRENCY} concurrent callers (closed loop; pool of {POOL})",
        render_table(CONC_HEADERS, conc_rows(result)),
        "",
        "Cold stampede (100 ms loader; cmds/key counted at the connection, all processes)",
        render_table(STAMPEDE_HEADERS, stampede_rows(result)),
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
        "",
        "Targets (issue 13):",
        *_target_lines(result),
    ]
    return "\n".join(lines)


def markdown(result: dict[str, Any]) -> list[str]:
    """The cache engine's part of README-table.md."""
    return [
        "",
        "**Cache engine, warm hit, sequential** (one caller, 1,000 keys with the same value; "
        "x raw = throughput / a raw redis-py GET + decode in the same run)",
        "",
        render_markdown(SEQ_HEADERS, seq_rows(result)),
        "",
        f"**Cache engine, warm hit, {CONCURRENCY} concurrent callers** (closed loop, pool of "
        f"{POOL} connections; trips/op = Redis round trips per read)",
        "",
        render_markdown(CONC_HEADERS, conc_rows(result)),
        "",
        "**Cache engine, cold stampede** (100 ms loader; commands per cold key counted at the "
        "connection, all processes; p50 x bare = against a bare single-flight in the same run)",
        "",
        render_markdown(STAMPEDE_HEADERS, stampede_rows(result)),
    ]


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
