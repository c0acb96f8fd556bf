"""One wrapper around every job: leader lock, log context, metrics, never an exception out.

Why a Redis lease lock per job: with N bot processes each scheduling the same jobs, a run must
happen in one of them. ``SET NX PX`` with a token (cache.lock.RedisLock) elects the leader of
*this run*. The lease is short (LEADER_LEASE, 10 s) and extended every third of it while the
job runs (a long precompute keeps it), so a crashed leader blocks the next run for seconds, not
for a dozen runs; a clean stop releases it (the job ends or is cancelled, and ``hold`` deletes
the key on the way out). The jobs are idempotent anyway (conditional UPDATE for pushes, ON
CONFLICT for horoscopes, exactly-once batches for flushes), so the lock saves work and Telegram
quota, not correctness; that is why the start-up and shutdown flushes run with ``lock=False``.

When Redis cannot be asked at all, the job runs without the lock rather than not at all: the
idempotency above makes a double run harmless, while a skipped push would be a missed day.

A run that fails because Redis or Postgres is unavailable is not an ERROR with a traceback each
time: the outage tracker (bot/ops/outages.py) logs one WARNING when the dependency goes down and
one INFO when the job succeeds again; the failures in between are counted
(``bot_dependency_failures_total``). Any other failure is logged as ``job_failed`` (ERROR).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import structlog
from redis.asyncio import Redis

from bot.ops.metrics import JOB_LAST_SUCCESS, JOB_RUNS, JOB_SECONDS
from bot.ops.outages import OUTAGES, REDIS, Outages, dependency_of
from cache.client import REDIS_ERRORS
from cache.keys import KeySpace
from cache.lock import RedisLock

__all__ = ["LEADER_LEASE", "JobOutcome", "JobRunner"]

log = structlog.get_logger(__name__)

JobFunc = Callable[[], Awaitable[Any]]

#: Seconds a leader lock lives without renewal (renewed every third of it while the job runs).
LEADER_LEASE = 10.0


class JobOutcome(enum.StrEnum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class JobRunner:
    """Runs named jobs under their leader lock and remembers which ones are running.

    The set of running tasks is what a graceful shutdown waits for (APScheduler's asyncio
    executor would simply cancel them). ``lease`` should be a few times longer than a Redis
    hiccup; the lock is extended every lease/3 while the job runs.
    """

    def __init__(
        self,
        redis: Redis | None,
        keyspace: KeySpace,
        *,
        lease: float = LEADER_LEASE,
        monotonic: Callable[[], float] = time.perf_counter,
        outages: Outages | None = None,
    ) -> None:
        self.redis = redis
        self.keyspace = keyspace
        self.lease = lease
        self._monotonic = monotonic
        self.outages = outages if outages is not None else OUTAGES
        self.running: dict[asyncio.Task[Any], str] = {}
        #: job name -> the dependency its last run failed on (its next success reports it back)
        self._failing: dict[str, str] = {}

    def lock_key(self, name: str) -> str:
        return self.keyspace.key("leader", name)

    @contextlib.asynccontextmanager
    async def _leadership(self, name: str) -> AsyncIterator[bool]:
        if self.redis is None:
            yield True
            return
        lock = RedisLock(self.redis, self.lock_key(name), lease=self.lease)
        try:
            acquired: bool | None = await lock.acquire()
        except REDIS_ERRORS as exc:
            # Counted, and logged once per outage; the job runs without the lock.
            self.outages.failed(REDIS, "leader_lock", exc)
            log.debug("job_lock_unavailable", error=repr(exc), note="running without the lock")
            acquired = None
        else:
            if self.outages.is_down(REDIS):
                self.outages.recovered(REDIS)
        if acquired is None:
            yield True
            return
        if not acquired:
            yield False
            return
        async with lock.hold(acquire=False) as held:
            yield held

    async def run(self, name: str, func: JobFunc, *, lock: bool = True) -> JobOutcome:
        """Run ``func`` once as job ``name``; returns how it went, never raises (but cancel)."""
        task = asyncio.current_task()
        if task is not None:
            self.running[task] = name
        try:
            with structlog.contextvars.bound_contextvars(job=name):
                return await self._run(name, func, lock=lock)
        finally:
            if task is not None:
                self.running.pop(task, None)

    async def _run(self, name: str, func: JobFunc, *, lock: bool) -> JobOutcome:
        started = self._monotonic()
        outcome = JobOutcome.FAILED
        try:
            leadership = self._leadership(name) if lock else _always_leader()
            async with leadership as leader:
                if not leader:
                    outcome = JobOutcome.SKIPPED
                    log.info("job_skipped", reason="another instance holds the leader lock")
                    return outcome
                log.debug("job_started")
                result = await func()
                outcome = JobOutcome.OK
        except asyncio.CancelledError:
            outcome = JobOutcome.CANCELLED
            log.warning("job_cancelled")
            raise
        except Exception as exc:
            dependency = dependency_of(exc)
            if dependency is None:
                log.exception("job_failed")
            else:  # an outage: one WARNING when it starts (the tracker), a counter per run
                self._failing[name] = dependency[0]
                self.outages.failed(dependency[0], dependency[1], exc)
                log.debug("job_failed_dependency_down", dependency=dependency[0], error=repr(exc))
            return outcome
        finally:
            elapsed = self._monotonic() - started
            JOB_RUNS.labels(task=name, outcome=outcome.value).inc()
            if outcome is not JobOutcome.SKIPPED:
                JOB_SECONDS.labels(task=name).observe(elapsed)
            if outcome is JobOutcome.OK:
                JOB_LAST_SUCCESS.labels(task=name).set(time.time())
                failed_on = self._failing.pop(name, None)
                if failed_on is not None:
                    self.outages.recovered(failed_on)
        log.info("job_done", seconds=round(elapsed, 3), result=_summary(result))
        return outcome

    def wrap(self, name: str, func: JobFunc, *, lock: bool = True) -> Callable[[], Awaitable[Any]]:
        """The scheduler's callable for job ``name`` (a coroutine function for APScheduler)."""

        async def job() -> JobOutcome:
            return await self.run(name, func, lock=lock)

        job.__name__ = job.__qualname__ = f"job_{name}"
        return job

    async def wait_running(self, timeout: float) -> set[str]:  # noqa: ASYNC109
        """Wait up to ``timeout`` s for running jobs; cancel what is left. Returns their names.

        Cancelling unwinds RedisLock.hold, which releases the lock, so the next instance does
        not wait for the lease to expire.
        """
        tasks = {t for t in self.running if t is not asyncio.current_task()}
        if not tasks:
            return set()
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        names = {self.running.get(t, "?") for t in pending}
        for t in pending:
            t.cancel()
        if pending:
            log.warning("jobs_cancelled_at_shutdown", jobs=sorted(names))
            await asyncio.wait(pending, timeout=2.0)
        return names


@contextlib.asynccontextmanager
async def _always_leader() -> AsyncIterator[bool]:
    yield True


def _summary(result: Any) -> Any:
    """Something short and loggable from a job's return value."""
    if result is None or isinstance(result, (int, float, str, bool)):
        return result
    as_dict = getattr(result, "as_dict", None)
    if callable(as_dict):
        return as_dict()
    return repr(result)[:200]
