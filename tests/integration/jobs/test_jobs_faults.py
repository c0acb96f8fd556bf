"""Jobs under faults: a crashed leader's lease (issue 12.6) and a Redis outage (12.10).

* The flushes at start-up and at shutdown need no leadership (the batch protocol is
  exactly-once), so a dead process's lease cannot make the next one skip them.
* Leases are short and renewed while a job runs; a job that ends releases its lock.
* During an outage the log says once that Redis is down and once that it is back; every
  failed run in between is a counter, not an ERROR with a traceback.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from structlog.testing import capture_logs

from bot.ops.metrics import REGISTRY
from bot.ops.outages import Outages
from cache import RedisLock, create_redis
from db.models import HoroscopeView
from db.repositories.views import HoroscopeViewRepository
from db.types import Sign
from jobs.deps import JobDeps
from jobs.leader import LEADER_LEASE, JobOutcome, JobRunner
from jobs.scheduler import FLUSH_JOBS, job_functions, start_jobs
from tests.faults import FaultProxy
from tests.integration.jobs.jobs_support import make_deps, make_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

D = dt.date(2026, 3, 10)


async def _views_in_postgres(deps: JobDeps) -> int:
    async with deps.session_factory() as s:
        return int(await s.scalar(select(func.coalesce(func.sum(HoroscopeView.view_count), 0))))


async def test_a_dead_leaders_lease_does_not_stop_the_start_and_stop_flushes(
    deps: JobDeps,
) -> None:
    """A crashed process left its leader locks with a long lease: the next process still
    flushes the leftovers at start-up and its own counters at a clean stop."""
    assert deps.redis is not None
    deps.settings = deps.settings.model_copy(update={"scheduler_enabled": False})
    runner = JobRunner(deps.redis, deps.keyspace)
    for name in FLUSH_JOBS:
        await deps.redis.set(runner.lock_key(name), b"dead-process", px=60_000)
    views = HoroscopeViewRepository(deps.data)
    for _ in range(3):
        await views.record_view(Sign.LEO, D)  # left over by the crashed process
    handle = await start_jobs(deps, runner=runner)
    await asyncio.gather(*handle.background)
    assert await _views_in_postgres(deps) == 3
    # A scheduled run still respects the live lease (one leader per run)...
    flush = job_functions(deps)["flush_views"]
    assert await runner.run("flush_views", flush) is JobOutcome.SKIPPED
    # ...but the shutdown flush does not need it.
    await views.record_view(Sign.LEO, D)
    assert await handle.shutdown(timeout=10)
    assert await _views_in_postgres(deps) == 4
    assert await deps.redis.get(runner.lock_key("flush_views")) == b"dead-process"


async def test_leases_are_short_and_renewed_while_the_job_runs(
    deps: JobDeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert deps.redis is not None
    assert JobRunner(deps.redis, deps.keyspace).lease == LEADER_LEASE <= 10
    extends = 0
    renewed = asyncio.Event()
    original = RedisLock.extend

    async def counting_extend(self: RedisLock, lease: float | None = None) -> bool:
        nonlocal extends
        ok = await original(self, lease)
        extends += 1
        if extends >= 4:  # four renewals of a third each: longer than the lease itself
            renewed.set()
        return ok

    monkeypatch.setattr(RedisLock, "extend", counting_extend)
    runner = JobRunner(deps.redis, deps.keyspace, lease=0.3)
    finish = asyncio.Event()

    async def long_job() -> None:
        await finish.wait()

    running = asyncio.create_task(runner.run("probe", long_job))
    await asyncio.wait_for(renewed.wait(), 30)
    assert await deps.redis.exists(runner.lock_key("probe"))  # still held: renewed
    other = JobRunner(deps.redis, deps.keyspace, lease=0.3)
    assert await other.run("probe", long_job) is JobOutcome.SKIPPED
    finish.set()
    assert await running is JobOutcome.OK
    assert not await deps.redis.exists(runner.lock_key("probe"))  # a clean end releases it


@pytest.fixture
async def redis_proxy(redis_url: str) -> AsyncIterator[FaultProxy]:
    host, _, port = redis_url.split("://", 1)[1].split("/", 1)[0].partition(":")
    proxy = await FaultProxy(host, int(port or 6379)).start()
    yield proxy
    await proxy.aclose()


def _failures(reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "bot_dependency_failures_total", {"dependency": "redis", "reason": reason}
    )
    return value or 0.0


async def test_a_redis_outage_is_one_warning_and_one_info_not_an_error_per_run(
    redis_proxy: FaultProxy,
    redis: Redis,
    key_prefix: str,
    session_factory: async_sessionmaker[AsyncSession],
    db_clean: None,
) -> None:
    client = create_redis(
        redis_proxy.url_for("redis://x/0"), socket_timeout=1.0, socket_connect_timeout=1.0
    )
    deps = make_deps(make_settings(key_prefix), client, session_factory)
    try:
        runner = JobRunner(client, deps.keyspace, outages=Outages())
        flush = job_functions(deps)["flush_views"]
        await HoroscopeViewRepository(deps.data).record_view(Sign.LEO, D)
        assert await runner.run("flush_views", flush) is JobOutcome.OK
        before = {r: _failures(r) for r in ("leader_lock", "connection")}

        redis_proxy.refuse()
        redis_proxy.reset()
        with capture_logs() as down_logs:
            outcomes = [await runner.run("flush_views", flush) for _ in range(5)]
        assert outcomes == [JobOutcome.FAILED] * 5
        warnings = [e for e in down_logs if e["log_level"] in ("warning", "error", "critical")]
        assert [(e["event"], e.get("dependency")) for e in warnings] == [
            ("dependency_down", "redis")
        ]
        assert not any("exc_info" in e or "exception" in e for e in down_logs)
        # every failure is counted: each run failed to take the lock, then to flush
        assert _failures("leader_lock") - before["leader_lock"] == 5
        assert _failures("connection") - before["connection"] == 5

        redis_proxy.resume()
        with capture_logs() as up_logs:
            assert await runner.run("flush_views", flush) is JobOutcome.OK
        ups = [e for e in up_logs if e["event"] == "dependency_up"]
        assert len(ups) == 1 and ups[0]["log_level"] == "info"
        assert ups[0]["dependency"] == "redis"
        assert not [e for e in up_logs if e["log_level"] in ("warning", "error")]
        assert await _views_in_postgres(deps) == 1
    finally:
        await deps.cache.aclose()
        await client.aclose()
