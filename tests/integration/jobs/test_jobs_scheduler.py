"""The scheduler as the runner uses it: two instances run a job once, start-up work, and a
graceful shutdown that waits, cancels, releases the lock and flushes the buffers."""

from __future__ import annotations

import asyncio
import datetime as dt
import multiprocessing
import time

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from redis.asyncio import Redis
from sqlalchemy import func, select

from db.models import Horoscope, HoroscopeView
from db.repositories.views import HoroscopeViewRepository
from db.types import Sign
from jobs.deps import JobDeps
from jobs.scheduler import JOB_DEFAULTS, create_scheduler, start_jobs
from tests.integration.jobs.jobs_support import CountingGenerator, scheduler_process


async def test_two_instances_in_two_processes_run_a_job_once(
    redis: Redis, redis_url: str, database_url: str, key_prefix: str
) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=scheduler_process, args=(redis_url, database_url, key_prefix))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    try:
        for _ in range(2):  # each instance says it is up (pytest-timeout bounds a hang)
            assert await redis.blpop([f"{key_prefix}:ready"], timeout=60), "no instance"
        await redis.set(f"{key_prefix}:fire_at", str(time.time() + 1.0))
        for _ in range(2):
            assert await redis.blmove(
                f"{key_prefix}:outcomes", f"{key_prefix}:seen", 60, "LEFT", "RIGHT"
            ), "the probe did not run in both instances"
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    outcomes = sorted(o.decode() for o in await redis.lrange(f"{key_prefix}:seen", 0, -1))
    assert outcomes == ["ok", "skipped"]
    assert int(await redis.get(f"{key_prefix}:probe_runs") or 0) == 1
    assert [p.exitcode for p in procs] == [0, 0]


async def test_schedule_in_the_bots_zone(deps: JobDeps) -> None:
    scheduler = create_scheduler(deps)
    scheduler.start(paused=True)  # job defaults are applied when the scheduler starts
    jobs = {job.id: job for job in scheduler.get_jobs()}
    scheduler.shutdown(wait=False)
    assert set(jobs) == {
        "precompute@00:05",
        "precompute@20:00",
        "flush_views",
        "flush_last_seen",
        "replay_invalidations",
    }
    for job in jobs.values():
        assert str(job.trigger.timezone) == "Europe/Moscow"
        assert (job.coalesce, job.max_instances, job.misfire_grace_time) == (
            JOB_DEFAULTS["coalesce"],
            1,
            60,
        )
    assert isinstance(jobs["precompute@20:00"].trigger, CronTrigger)
    views = jobs["flush_views"].trigger
    assert isinstance(views, IntervalTrigger) and views.interval == dt.timedelta(seconds=30)
    assert jobs["flush_last_seen"].trigger.interval == dt.timedelta(seconds=60)
    assert jobs["replay_invalidations"].trigger.interval == dt.timedelta(seconds=10)


async def test_start_precomputes_in_background_and_shutdown_is_graceful(
    deps: JobDeps, generator: CountingGenerator
) -> None:
    deps.settings = deps.settings.model_copy(
        update={"enabled_langs": (deps.settings.default_lang,)}
    )
    deps.generator = CountingGenerator(hang_after=20)
    # Precompute hangs after 20 generations: start_jobs returning at all (and the hang being
    # reached afterwards) is what shows that start-up does not wait for it.
    handle = await start_jobs(deps)
    assert handle.scheduler is not None and handle.scheduler.running
    await asyncio.wait_for(deps.generator.hung.wait(), 10)  # type: ignore[union-attr]
    assert "precompute" in handle.runner.running.values()
    lock_key = handle.runner.lock_key("precompute")
    assert await deps.redis.exists(lock_key)  # type: ignore[union-attr]

    await HoroscopeViewRepository(deps.data).record_view(Sign.LEO, dt.date(2026, 3, 10))
    await handle.shutdown(timeout=0.3)
    await asyncio.sleep(0)

    assert not handle.runner.running
    assert not await deps.redis.exists(lock_key)  # type: ignore[union-attr]  # released
    assert not handle.scheduler.running
    async with deps.session_factory() as s:
        assert await s.scalar(select(func.count()).select_from(Horoscope)) == 20
        assert await s.scalar(select(func.sum(HoroscopeView.view_count))) == 1  # flushed
