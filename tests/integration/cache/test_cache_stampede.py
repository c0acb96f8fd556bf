"""Cold-key stampede across real processes: one loader call, waiters do not poll Redis."""

from __future__ import annotations

import multiprocessing as mp
from typing import Any

from _stampede_worker import worker

PROCS = 4
CALLERS = 250


def test_cross_process_stampede_loads_once(redis_url: str, key_prefix: str, redis: Any) -> None:
    key = f"{key_prefix}:v1:stampede:cold"
    counter_key = f"{key_prefix}:v1:calls"
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(PROCS)
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=worker, args=(redis_url, key, counter_key, CALLERS, barrier, queue))
        for _ in range(PROCS)
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    import redis as sync_redis

    client = sync_redis.Redis.from_url(redis_url)
    try:
        assert int(client.get(counter_key) or 0) == 1  # the loader ran exactly once
    finally:
        client.close()
    print("commands per process:", [(r["commands"], r["names"]) for r in results])
    for res in results:
        assert res["values"] == [42]
    # one GET per process however many callers, the lock, the waiters' subscribe/re-check/GET
    assert sum(r["commands"] for r in results) <= 25, [r["names"] for r in results]
    assert sum(r["loads"] for r in results) == 1
