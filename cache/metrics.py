"""Prometheus metrics for the cache, per namespace.

Why a wrapper: the hit path must stay cheap, so labelled children are resolved once per
namespace and kept in a dict (a hit costs one dict lookup and one ``inc``). And because
prometheus-client raises on duplicate registration, collectors are shared per registry: two
CacheAside objects in one process (tests, the bot plus a job runner) can never crash startup.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["EVENTS", "CacheMetrics", "default_metrics"]

EVENTS = (
    "hit",
    "miss",
    "negative_hit",
    "stale_served",
    "load",
    "load_error",
    "redis_error",
    "decode_error",
    "singleflight_joined",
    "lock_waited",
    "lock_acquired",
    "early_refresh",
    "side_unknown",
)

_LOAD_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_collectors_lock = threading.Lock()
_Collectors = tuple[Counter, Gauge, Histogram, Counter, Counter, Gauge]
_collectors: weakref.WeakKeyDictionary[CollectorRegistry, _Collectors] = weakref.WeakKeyDictionary()


def _collectors_for(registry: CollectorRegistry) -> _Collectors:
    with _collectors_lock:
        found = _collectors.get(registry)
        if found is None:
            events = Counter(
                "cache_events",
                "Cache events by namespace (hit, miss, load, redis_error, ...)",
                ["namespace", "event"],
                registry=registry,
            )
            breaker = Gauge(
                "cache_breaker_state",
                "Redis circuit breaker state: 0 closed, 1 open, 2 half-open",
                registry=registry,
            )
            load = Histogram(
                "cache_load_seconds",
                "Time spent in cache loaders (the source behind the cache)",
                ["namespace"],
                buckets=_LOAD_BUCKETS,
                registry=registry,
            )
            dead = Counter(
                "cache_dead_letters",
                "Unreadable buffer fields (or whole batches) moved to a dead-letter hash",
                ["buffer"],
                registry=registry,
            )
            invalidations = Counter(
                "cache_invalidations",
                "After-commit invalidations: delivered (DEL reached Redis), deferred (Redis did"
                " not answer: kept in the outbox), replayed (a deferred one delivered later)",
                ["outcome"],
                registry=registry,
            )
            waiting = Gauge(
                "cache_invalidations_waiting",
                "Invalidations this process keeps for replay because Redis did not answer",
                registry=registry,
            )
            found = (events, breaker, load, dead, invalidations, waiting)
            _collectors[registry] = found
        return found


class CacheMetrics:
    """Counters ``cache_events_total{namespace,event}``, gauge, and load-time histogram."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else REGISTRY
        (
            self._events,
            self._breaker,
            self._load,
            self._dead,
            self._invalidations,
            self._waiting,
        ) = _collectors_for(self.registry)
        self._children: dict[str, dict[str, Any]] = {}
        self._load_children: dict[str, Any] = {}

    def _ns(self, namespace: str) -> dict[str, Any]:
        children = self._children.get(namespace)
        if children is None:
            children = {ev: self._events.labels(namespace, ev) for ev in EVENTS}
            self._children[namespace] = children
        return children

    def event(self, namespace: str, event: str, amount: float = 1.0) -> None:
        """Count one event. ``event`` must be one of EVENTS."""
        children = self._children.get(namespace)
        if children is None:
            children = self._ns(namespace)
        children[event].inc(amount)

    def observe_load(self, namespace: str, seconds: float) -> None:
        """Record how long a loader took."""
        child = self._load_children.get(namespace)
        if child is None:
            child = self._load_children[namespace] = self._load.labels(namespace)
        child.observe(seconds)

    def set_breaker_state(self, state: int) -> None:
        """Export the breaker state (0 closed, 1 open, 2 half-open)."""
        self._breaker.set(state)

    def dead_letters(self, buffer: str, amount: int) -> None:
        """Count fields of a buffer that went to its dead-letter hash (cache/buffers.py)."""
        self._dead.labels(buffer).inc(amount)

    def invalidations(self, outcome: str, amount: int) -> None:
        """Count after-commit invalidations: delivered, deferred or replayed."""
        if amount:
            self._invalidations.labels(outcome).inc(amount)

    def invalidations_waiting(self, count: int) -> None:
        """How many invalidations wait for Redis in this process (cache/invalidation.py)."""
        self._waiting.set(count)

    def snapshot(self) -> dict[str, dict[str, float]]:
        """Counts per namespace and event, e.g. for the admin /stats hit ratio.

        Read from the shared collector, so it reflects every CacheMetrics on this registry.
        """
        out: dict[str, dict[str, float]] = {}
        for metric in self._events.collect():
            for sample in metric.samples:
                if not sample.name.endswith("_total"):
                    continue
                ns = sample.labels["namespace"]
                out.setdefault(ns, {})[sample.labels["event"]] = sample.value
        return out

    def hit_ratio(self, namespace: str) -> float | None:
        """hits (incl. negative hits) / lookups for a namespace; None before any lookup."""
        counts = self.snapshot().get(namespace, {})
        hits = counts.get("hit", 0.0) + counts.get("negative_hit", 0.0)
        total = hits + counts.get("miss", 0.0)
        return hits / total if total else None


_default: CacheMetrics | None = None


def default_metrics() -> CacheMetrics:
    """The process-wide CacheMetrics on the global REGISTRY (created once)."""
    global _default
    if _default is None:
        _default = CacheMetrics()
    return _default
