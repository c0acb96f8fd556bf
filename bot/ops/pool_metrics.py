"""Connection-pool usage of both stores as Prometheus gauges, read at scrape time.

Why a custom Collector rather than Gauges we set: pool counters live inside SQLAlchemy and
redis-py and change on every checkout. Setting a gauge on each checkout would put work on the hot
path and need hooks in both libraries; reading the pools when Prometheus scrapes costs nothing
between scrapes and is always current. Every read is guarded: a pool class without these
attributes (NullPool, a future redis-py) yields no sample rather than breaking /metrics.

Metrics:
- ``db_pool_size``: connections the SQLAlchemy pool keeps (pool_size).
- ``db_pool_checked_out``: connections currently lent to sessions.
- ``db_pool_overflow``: connections opened beyond pool_size (negative while the pool is not
  yet filled: SQLAlchemy's own convention, kept so it matches its docs).
- ``db_pool_max``: pool_size + max_overflow, the ceiling a checkout waits at.
- ``redis_pool_in_use``: Redis connections lent to a command right now.
- ``redis_pool_available``: idle Redis connections kept open in the pool.
- ``redis_pool_max``: max_connections of the Redis pool.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from bot.ops.metrics import REGISTRY

__all__ = ["PoolCollector", "register_pool_metrics", "unregister_pool_metrics"]


def _call(obj: Any, name: str) -> float | None:
    """``obj.name()`` as a float, or None when the pool class has no such method or it fails."""
    method = getattr(obj, name, None)
    if not callable(method):
        return None
    try:
        return float(method())
    except Exception:
        return None


def _length(obj: Any, name: str) -> float | None:
    """``len(obj.name)`` (a private container of redis-py's pool), or None when absent."""
    value = getattr(obj, name, None)
    if value is None:
        return None
    try:
        return float(len(value))
    except TypeError:
        return None


class PoolCollector(Collector):
    """Reads the SQLAlchemy and redis-py pools on every collect().

    ``engine`` is an AsyncEngine (its ``sync_engine.pool`` is the QueuePool) and ``redis`` a
    redis.asyncio.Redis; either may be None. They can be swapped with ``set_targets`` so that
    re-registering with new stores (tests, a restart inside one process) never duplicates
    metric names on the registry.
    """

    def __init__(self, engine: Any = None, redis: Any = None) -> None:
        self.engine = engine
        self.redis = redis

    def set_targets(self, engine: Any, redis: Any) -> None:
        self.engine = engine
        self.redis = redis

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Describing without reading lets the registry check names at registration time.
        yield from self._families()

    def _families(self) -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily("db_pool_size", "Connections the Postgres pool keeps open."),
            GaugeMetricFamily("db_pool_checked_out", "Postgres connections lent out now."),
            GaugeMetricFamily(
                "db_pool_overflow", "Postgres connections opened beyond pool_size (may be < 0)."
            ),
            GaugeMetricFamily("db_pool_max", "pool_size + max_overflow: checkouts wait above."),
            GaugeMetricFamily("redis_pool_in_use", "Redis connections lent to a command now."),
            GaugeMetricFamily("redis_pool_available", "Idle Redis connections in the pool."),
            GaugeMetricFamily("redis_pool_max", "max_connections of the Redis pool."),
        ]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        size, checked_out, overflow, ceiling, in_use, available, redis_max = self._families()
        pool = getattr(getattr(self.engine, "sync_engine", None), "pool", None)
        if pool is not None:
            for family, value in (
                (size, _call(pool, "size")),
                (checked_out, _call(pool, "checkedout")),
                (overflow, _call(pool, "overflow")),
            ):
                if value is not None:
                    family.add_metric([], value)
            pool_size = _call(pool, "size")
            max_overflow = getattr(pool, "_max_overflow", None)
            if pool_size is not None and isinstance(max_overflow, int) and max_overflow >= 0:
                ceiling.add_metric([], pool_size + max_overflow)
        rpool = getattr(self.redis, "connection_pool", None)
        if rpool is not None:
            used = _length(rpool, "_in_use_connections")
            idle = _length(rpool, "_available_connections")
            if used is not None:
                in_use.add_metric([], used)
            if idle is not None:
                available.add_metric([], idle)
            limit = getattr(rpool, "max_connections", None)
            if isinstance(limit, int):
                redis_max.add_metric([], limit)
        yield from (size, checked_out, overflow, ceiling, in_use, available, redis_max)


_lock = threading.Lock()
_registered: dict[int, tuple[CollectorRegistry, PoolCollector]] = {}


def register_pool_metrics(
    engine: Any, redis: Any, *, registry: CollectorRegistry = REGISTRY
) -> PoolCollector:
    """Export pool usage of ``engine`` and ``redis`` on ``registry`` (bot.ops.metrics.REGISTRY).

    Idempotent: a second call on the same registry points the existing collector at the new
    stores instead of registering again (which prometheus-client would reject as a duplicate).
    """
    with _lock:
        found = _registered.get(id(registry))
        if found is not None and found[0] is registry:
            found[1].set_targets(engine, redis)
            return found[1]
        collector = PoolCollector(engine, redis)
        registry.register(collector)
        _registered[id(registry)] = (registry, collector)
        return collector


def unregister_pool_metrics(*, registry: CollectorRegistry = REGISTRY) -> None:
    """Remove the pool collector from ``registry`` (tests; a no-op when none is registered)."""
    with _lock:
        found = _registered.pop(id(registry), None)
        if found is not None and found[0] is registry:
            registry.unregister(found[1])
