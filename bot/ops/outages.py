"""Dependency outages in the log: one WARNING when Redis or Postgres goes down, one INFO when it
is back; every failure in between is a metric, not a line.

Why: during an outage every flush run, every breaker probe and every job fails the same way. A
full ERROR with a traceback each time (17 in 20 s for one Redis outage) buries the one line an
operator needs ("redis is down since 10:42:07") and pays for tracebacks nobody reads. The
counters (``bot_dependency_failures_total{dependency,reason}``) and the gauge
(``bot_dependency_up``) keep the detail and drive alerts.

One tracker per process (``OUTAGES``), fed by the job runner (jobs/leader.py: a job failing on
an unavailable dependency, and its next success) and by the circuit breakers of the cache and of
the Postgres guard (bot/ops/stores.py, bot/app.py), so whichever notices first reports it.
"""

from __future__ import annotations

import time
from typing import Final

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.ops.metrics import DEPENDENCY_FAILURES, DEPENDENCY_UP
from db.guard import unavailable_reason

__all__ = ["OUTAGES", "Outages", "dependency_of"]

log = structlog.get_logger(__name__)

REDIS: Final = "redis"
POSTGRES: Final = "postgres"


def dependency_of(exc: BaseException) -> tuple[str, str] | None:
    """(dependency, reason) when ``exc`` says Redis or Postgres is unavailable, else None.

    Only errors that name their source count: a bare ``TimeoutError`` could be anything.
    """
    item: BaseException | None = exc
    for _ in range(10):
        if item is None:
            break
        if isinstance(item, RedisConnectionError | RedisTimeoutError):
            return REDIS, "timeout" if isinstance(item, RedisTimeoutError) else "connection"
        item = item.__cause__ or item.__context__
    reason = unavailable_reason(exc)
    return (POSTGRES, reason) if reason is not None else None


class Outages:
    """Which dependencies are down right now, and since when."""

    def __init__(self) -> None:
        self._down: dict[str, float] = {}

    def is_down(self, dependency: str) -> bool:
        return dependency in self._down

    def failed(self, dependency: str, reason: str, error: BaseException | None = None) -> None:
        """Count a failure; the first one of an outage is logged (WARNING, no traceback)."""
        DEPENDENCY_FAILURES.labels(dependency, reason).inc()
        if dependency in self._down:
            return
        self._down[dependency] = time.monotonic()
        DEPENDENCY_UP.labels(dependency).set(0)
        log.warning(
            "dependency_down",
            dependency=dependency,
            reason=reason,
            error=repr(error) if error is not None else None,
        )

    def recovered(self, dependency: str) -> None:
        """It answered again: one INFO line with how long it was gone."""
        since = self._down.pop(dependency, None)
        DEPENDENCY_UP.labels(dependency).set(1)
        if since is not None:
            log.info(
                "dependency_up",
                dependency=dependency,
                down_seconds=round(time.monotonic() - since, 3),
            )

    def breaker_hook(self, dependency: str) -> _BreakerHook:
        """An ``on_change`` for a CircuitBreaker: open = down, closed = back."""
        return _BreakerHook(self, dependency)


class _BreakerHook:
    __slots__ = ("dependency", "outages")

    def __init__(self, outages: Outages, dependency: str) -> None:
        self.outages = outages
        self.dependency = dependency

    def __call__(self, state: int) -> None:
        from cache.breaker import CLOSED, OPEN

        if state == OPEN and not self.outages.is_down(self.dependency):
            self.outages.failed(self.dependency, "breaker_open")
        elif state == CLOSED:
            self.outages.recovered(self.dependency)


#: The process's tracker.
OUTAGES: Final = Outages()
