"""The scheduler: which job runs when, start-up work, and a graceful shutdown.

One APScheduler 3 AsyncIOScheduler in the bot's event loop, in BOT_TIMEZONE (so "00:05" in
PRECOMPUTE_TIMES means five past midnight where the bot lives, whatever the server's zone).
Job defaults: ``coalesce`` (a backlog of missed runs becomes one run), ``max_instances=1``
(a slow push is not started again on top of itself) and a misfire grace time (a run delayed by
a busy loop or a suspended laptop still happens if it is less than a minute late).

Every job goes through JobRunner (jobs/leader.py): leader lock, ``job=<name>`` log context,
metrics, and no exception ever reaches the scheduler.

The buffer flushes are exactly-once by their batch protocol (cache/buffers.py), so two of them
need no leadership: the one at start-up (leftovers of a crashed or cut-short process: it must
not wait for the dead process's leader lease) and the one at shutdown. The shutdown is bounded
(``JobsHandle.shutdown(timeout)``): a flush that Postgres keeps waiting is cancelled, and what it
had not applied stays in Redis as a pending batch, applied exactly once by the next flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from jobs.deps import JobDeps
from jobs.leader import JobOutcome, JobRunner
from jobs.maintenance import flush_last_seen, flush_views, replay_invalidations, warm_file_ids
from jobs.precompute import PrecomputeReport, run_precompute

__all__ = [
    "FLUSH_JOBS",
    "JOB_DEFAULTS",
    "JobsHandle",
    "create_scheduler",
    "job_functions",
    "start_jobs",
]

log = structlog.get_logger(__name__)

JOB_DEFAULTS: dict[str, Any] = {"coalesce": True, "max_instances": 1, "misfire_grace_time": 60}

#: The buffer flushes (exactly-once, so they may run anywhere, any number of times).
FLUSH_JOBS = ("flush_views", "flush_last_seen")

#: Second of the minute the push runs at: a little after the minute turns, so a user whose
#: push time is 09:00 is due (push_time <= local time) even with a slightly early timer.
PUSH_SECOND = 5


def push_trigger(every: int, tz: dt.tzinfo) -> CronTrigger | IntervalTrigger:
    """Every minute at PUSH_SECOND (the default), or every ``every`` seconds (shorter sweeps
    pick up expired claims sooner; tests use a second)."""
    if every == 60:
        return CronTrigger(second=PUSH_SECOND, timezone=tz)
    return IntervalTrigger(seconds=every, timezone=tz)


def job_functions(deps: JobDeps) -> dict[str, Callable[[], Awaitable[Any]]]:
    """Each job by name, as a no-argument coroutine function bound to ``deps``."""

    async def precompute() -> PrecomputeReport:
        return await run_precompute(deps)

    async def views() -> Any:
        return await flush_views(deps)

    async def last_seen() -> Any:
        return await flush_last_seen(deps)

    async def push() -> Any:
        # Imported here: jobs.push needs aiogram, whose import costs seconds, and a process
        # without a Bot (the CLI, a worker that only flushes) never runs the push.
        from jobs.push import run_push

        return await run_push(deps)

    async def warm() -> int:
        return await warm_file_ids(deps)

    async def invalidations() -> int:
        return await replay_invalidations(deps)

    return {
        "precompute": precompute,
        "flush_views": views,
        "flush_last_seen": last_seen,
        "push": push,
        "warm_file_ids": warm,
        "replay_invalidations": invalidations,
    }


def create_scheduler(deps: JobDeps, *, runner: JobRunner | None = None) -> AsyncIOScheduler:
    """A scheduler with every periodic job added (not started). The push needs ``deps.bot``."""
    runner = runner or JobRunner(deps.redis, deps.keyspace)
    settings = deps.settings
    tz = settings.tz
    funcs = job_functions(deps)
    scheduler = AsyncIOScheduler(timezone=tz, job_defaults=dict(JOB_DEFAULTS))
    for at in settings.precompute_times:
        scheduler.add_job(
            runner.wrap("precompute", funcs["precompute"]),
            CronTrigger(hour=at.hour, minute=at.minute, second=at.second, timezone=tz),
            id=f"precompute@{at.strftime('%H:%M')}",
            name="precompute",
        )
    scheduler.add_job(
        runner.wrap("flush_views", funcs["flush_views"]),
        IntervalTrigger(seconds=settings.flush_views_seconds, timezone=tz),
        id="flush_views",
        name="flush_views",
    )
    scheduler.add_job(
        runner.wrap("flush_last_seen", funcs["flush_last_seen"]),
        IntervalTrigger(seconds=settings.flush_last_seen_seconds, timezone=tz),
        id="flush_last_seen",
        name="flush_last_seen",
    )
    scheduler.add_job(
        # No leader lock: idempotent, and each instance replays what it could not deliver.
        runner.wrap("replay_invalidations", funcs["replay_invalidations"], lock=False),
        IntervalTrigger(seconds=settings.invalidation_replay_seconds, timezone=tz),
        id="replay_invalidations",
        name="replay_invalidations",
        next_run_time=dt.datetime.now(tz),  # at start-up too: what a crashed process left
    )
    if deps.bot is not None and deps.images is not None:
        scheduler.add_job(
            # No leader lock: every instance sweeps and claims batches of due users
            # (jobs/push.py), so the push is shared, and a dead instance's users are taken over.
            runner.wrap("push", funcs["push"], lock=False),
            push_trigger(settings.push_sweep_seconds, tz),
            id="push",
            name="push",
        )
    else:
        log.info("job_not_scheduled", job="push", reason="no Bot or image sender")
    return scheduler


@dataclass
class JobsHandle:
    """What start_jobs returns: the running scheduler and the start-up work in flight."""

    deps: JobDeps
    runner: JobRunner
    scheduler: AsyncIOScheduler | None
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    _stopped: bool = False

    def spawn(
        self, name: str, func: Callable[[], Awaitable[Any]], *, lock: bool = True
    ) -> asyncio.Task[JobOutcome]:
        """Run a job once in the background (through the runner), tracked for shutdown."""
        task = asyncio.create_task(self.runner.run(name, func, lock=lock), name=f"job:{name}")
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    async def shutdown(self, timeout: float = 10.0) -> bool:  # noqa: ASYNC109
        """Stop scheduling, let running jobs finish (up to half of ``timeout``, then cancel
        them: their locks are released on the way out), then flush both buffers once, without
        the leader lock, in what is left of ``timeout``. Returns False when the flush did not
        finish in time (the counters stay in Redis for the next run)."""
        if self._stopped:
            return True
        self._stopped = True
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout
        scheduler = self.scheduler
        if scheduler is not None and scheduler.running:
            scheduler.pause()  # no new runs; the executor would cancel running ones outright
        running = set(self.runner.running) | {t for t in self.background if not t.done()}
        if running:
            log.info("jobs_waiting_at_shutdown", jobs=sorted(self.runner.running.values()))
            _, pending = await asyncio.wait(running, timeout=timeout / 2)
            for task in pending:
                task.cancel()
            if pending:
                log.warning(
                    "jobs_cancelled_at_shutdown",
                    jobs=sorted(self.runner.running.get(t, t.get_name()) for t in pending),
                )
                with contextlib.suppress(Exception):
                    await asyncio.wait(pending, timeout=max(0.0, min(2.0, until - loop.time())))
        if scheduler is not None and scheduler.running:
            scheduler.shutdown(wait=False)
        funcs = job_functions(self.deps)
        flushed = True
        try:
            async with asyncio.timeout_at(until):
                for name in FLUSH_JOBS:
                    await self.runner.run(name, funcs[name], lock=False)
        except TimeoutError:
            flushed = False
            log.warning(
                "final_flush_cut_short",
                seconds=timeout,
                note="counters not flushed stay in Redis; the next start flushes them once",
            )
        log.info("jobs_stopped")
        return flushed


def log_schedule(scheduler: AsyncIOScheduler, tz: dt.tzinfo) -> None:
    for job in scheduler.get_jobs():
        next_run = job.next_run_time
        log.info(
            "job_scheduled",
            job=job.name,
            id=job.id,
            next_run=next_run.astimezone(tz).isoformat() if next_run else None,
            trigger=str(job.trigger),
        )


async def start_jobs(deps: JobDeps, *, runner: JobRunner | None = None) -> JobsHandle:
    """Warm file_ids, start the scheduler, and precompute and flush leftovers in the
    background.

    Returns at once after the warm-up (one query, one pipeline): precompute may take a while
    with an LLM generator, and the bot should answer meanwhile (a miss generates on demand).
    With SCHEDULER_ENABLED=false nothing is scheduled, but the buffers are still flushed at
    start-up and at shutdown.
    """
    runner = runner or JobRunner(deps.redis, deps.keyspace)
    funcs = job_functions(deps)
    await runner.run("warm_file_ids", funcs["warm_file_ids"])
    if not deps.settings.scheduler_enabled:
        log.info("scheduler_disabled")
        handle = JobsHandle(deps=deps, runner=runner, scheduler=None)
    else:
        scheduler = create_scheduler(deps, runner=runner)
        scheduler.start()
        handle = JobsHandle(deps=deps, runner=runner, scheduler=scheduler)
        log_schedule(scheduler, deps.settings.tz)
        handle.spawn("precompute", funcs["precompute"])
    # Leftovers of a previous process (a crash, a shutdown cut short): flushed now, without
    # waiting for its leader lease to run out (exactly-once needs no leader).
    for name in FLUSH_JOBS:
        handle.spawn(name, funcs[name], lock=False)
    return handle
