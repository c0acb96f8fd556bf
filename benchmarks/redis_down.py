"""Redis down: the bot's warm ``/today`` throughput with Redis up, dead and hung, same run.

Run: ``python -m benchmarks.redis_down [--quick]``. Four apps on one seeded database (see
benchmarks/bot_throughput.py), rounds interleaved:

* ``redis up`` - build_app with the real Redis (the cache warm);
* ``postgres-only`` - the same code with the cache disabled (what "down" should approach);
* ``closed port`` - the app's Redis client points at a port nobody listens on;
* ``hung`` - it points at a TCP listener that accepts and never answers.

Each app first answers a few updates (``first`` columns: what the breaker's opening costs),
then the measured rounds run; the breaker state persists across rounds as in a real process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from benchmarks._env import bot_redis, free_port, hung_redis, quiet_logs
from benchmarks._util import (
    cli,
    machine_summary,
    machine_with_postgres,
    publish,
    render_table,
)
from benchmarks.bot_throughput import drive, interleaved, warm_up, world
from bot.ops import runtime
from devtools.traffic import RedisTraffic

LABELS = {
    "redis-up": "Redis up",
    "postgres-only": "cache disabled (Postgres only)",
    "closed-port": "Redis down: closed port",
    "hung": "Redis down: hung (accepts, never answers)",
}


async def run(
    *,
    quick: bool = False,
    n_users: int | None = None,
    rounds: int | None = None,
    concurrencies: Sequence[int] = (1, 100),
    first: int = 10,
    write: bool = True,
    database_url: str | None = None,
) -> dict[str, Any]:
    n_users = n_users or (100 if quick else 1000)
    rounds = rounds or (1 if quick else 2)
    sequential = 40 if quick else 100
    with quiet_logs():
        async with (
            world(n_users, database_url=database_url) as w,
            hung_redis() as hung_url,
            contextlib.AsyncExitStack() as stack,
        ):
            clients = {}
            for name, url in (
                ("closed-port", f"redis://127.0.0.1:{free_port()}/0"),
                ("hung", hung_url),
            ):
                client = bot_redis(url, w.settings)
                stack.push_async_callback(client.aclose)
                clients[name] = client
            up = w.app_variant("redis-up")
            up.redis_counter = RedisTraffic(w.redis)
            await warm_up(w, up)  # users into Redis, pictures uploaded once
            variants = [
                up,
                w.app_variant("postgres-only", cache_enabled=False),
                w.app_variant("closed-port", redis=clients["closed-port"]),
                w.app_variant("hung", redis=clients["hung"]),
            ]
            firsts: dict[str, dict[str, Any]] = {}
            for v in variants:
                b = await drive(w, v, w.users[:first], 1)
                firsts[v.name] = {
                    "updates": len(b.latencies),
                    "first_ms": b.latencies[0] * 1000,
                    "max_ms": max(b.latencies) * 1000,
                    "total_ms": sum(b.latencies) * 1000,
                    "failures": b.failures,
                }
            runtime.freeze_startup_heap()  # as the runner does once the bot is up
            results = await interleaved(
                w, variants, concurrencies, rounds, w.users, sequential_users=sequential
            )
            breakers = {v.name: repr(v.app.cache.breaker) for v in variants if v.app is not None}
            versions = w.versions
    ratios = {
        f"c{c}": {
            name: results[name][f"c{c}"]["updates_per_s"]
            / results["postgres-only"][f"c{c}"]["updates_per_s"]
            for name in results
        }
        for c in concurrencies
    }
    result = {
        "machine": machine_with_postgres(versions),
        "quick": quick,
        "users": n_users,
        "rounds": rounds,
        "first_updates": firsts,
        "variants": results,
        "x_postgres_only": ratios,
        "breakers_at_end": breakers,
    }
    if write:
        publish("redis_down", result, report)
    return result


HEADERS = [
    "Redis",
    "concurrency",
    "updates/s",
    "p50 ms",
    "p99 ms",
    "max ms",
    "SQL/update",
    "x Postgres-only",
]


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
                    s["max_ms"],
                    s["sql_per_update"],
                    result["x_postgres_only"][conc][name],
                ]
            )
    out.sort(key=lambda r: int(r[1]))
    return out


FIRST_HEADERS = ["Redis", "first updates", "first ms", "max ms", "total ms"]


def first_rows(result: dict[str, Any]) -> list[list[Any]]:
    return [
        [LABELS.get(name, name), f["updates"], f["first_ms"], f["max_ms"], f["total_ms"]]
        for name, f in result["first_updates"].items()
    ]


def report(result: dict[str, Any]) -> str:
    m = result["machine"]
    return "\n".join(
        [
            f"redis down  {machine_summary(m)}",
            f"warm /today from {result['users']} users, {result['rounds']} interleaved round(s)",
            "",
            render_table(HEADERS, rows(result)),
            "",
            "First updates of a fresh app (sequential; the breaker opens here)",
            render_table(FIRST_HEADERS, first_rows(result)),
            f"breakers at the end: {result['breakers_at_end']}",
        ]
    )


def main() -> None:
    cli(run, __doc__)


if __name__ == "__main__":
    main()
