"""Prometheus metrics for the cache, per namespace.

Why counting is done here and not by a prometheus ``Counter``: every cache hit counts an event,
and ``Counter.inc`` takes a lock (and goes through a value wrapper) each time, about a
microsecond on the hit path. Events are plain ints in a dict instead, bumped on the event
loop's thread, and a custom collector turns them into ``cache_events_total`` when Prometheus
scrapes (reading ints another thread writes is safe under the GIL; a scrape may see a count
one event old, which a monotonic counter allows). The breaker gauge and the load-time
histogram change only on transitions and loads, so they stay ordinary prometheus metrics.

prometheus-client raises on duplicate registration, so everything is shared per registry: two
CacheAside objects in one process (tests, the bot plus a job runner) add up into the same
counts and can never crash startup.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

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

_EVENTS_NAME = "cache_events"
_EVENTS_DOC = "Cache events by namespace (hit, miss, load, redis_error, ...)"
_LOAD_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Events(Collector):
    """``cache_events_total{namespace,event}`` from plain counts, built at scrape time."""

    def __init__(self) -> None:
        #: namespace -> event -> count; a namespace gets every event at once (all exported)
        self.counts: dict[str, dict[str, float]] = {}

    def namespace(self, namespace: str) -> dict[str, float]:
        counts = self.counts.get(namespace)
        if counts is None:
            counts = self.counts.setdefault(namespace, dict.fromkeys(EVENTS, 0.0))
        return counts

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(_EVENTS_NAME, _EVENTS_DOC, labels=["namespace", "event"])

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(_EVENTS_NAME, _EVENTS_DOC, labels=["namespace", "event"])
        for ns, counts in list(self.counts.items()):  # list(): the loop may add a namespace
            for event, value in list(counts.items()):
                family.add_metric([ns, event], value)
        yield family


class _Shared:
    """What every CacheMetrics on one registry shares."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = _Events()
        registry.register(self.events)
        self.breaker = Gauge(
            "cache_breaker_state",
            "Redis circuit breaker state: 0 closed, 1 open, 2 half-open",
            registry=registry,
        )
        self.load = Histogram(
            "cache_load_seconds",
            "Time spent in cache loaders (the source behind the cache)",
            ["namespace"],
            buckets=_LOAD_BUCKETS,
            registry=registry,
        )
        self.dead = Counter(
            "cache_dead_letters",
            "Unreadable buffer fields (or whole batches) moved to a dead-letter hash",
            ["buffer"],
            registry=registry,
        )
        self.invalidations = Counter(
            "cache_invalidations",
            "After-commit invalidations: delivered (DEL reached Redis), deferred (Redis did"
            " not answer: kept in the outbox), replayed (a deferred one delivered later)",
            ["outcome"],
            registry=registry,
        )
        self.waiting = Gauge(
            "cache_invalidations_waiting",
            "Invalidations this process keeps for replay because Redis did not answer",
            registry=registry,
        )


_shared_lock = threading.Lock()
_shared: weakref.WeakKeyDictionary[CollectorRegistry, _Shared] = weakref.WeakKeyDictionary()


def _shared_for(registry: CollectorRegistry) -> _Shared:
    with _shared_lock:
        found = _shared.get(registry)
        if found is None:
            found = _shared[registry] = _Shared(registry)
        return found


class CacheMetrics:
    """Counters ``cache_events_total{namespace,event}``, gauge, and load-time histogram."""

    __slots__ = ("_counts", "_events", "_load", "_load_children", "_shared", "registry")

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else REGISTRY
        self._shared = _shared_for(self.registry)
        self._events = self._shared.events
        self._counts = self._events.counts
        self._load = self._shared.load
        self._load_children: dict[str, Histogram] = {}

    def event(self, namespace: str, event: str, amount: float = 1.0) -> None:
        """Count ``amount`` events (no lock: the event loop's thread is the only writer).

        ``event`` must be one of EVENTS.
        """
        counts = self._counts.get(namespace)
        if counts is None:
            counts = self._events.namespace(namespace)
        counts[event] += amount

    def observe_load(self, namespace: str, seconds: float) -> None:
        """Record how long a loader took."""
        child = self._load_children.get(namespace)
        if child is None:
            child = self._load_children[namespace] = self._load.labels(namespace)
        child.observe(seconds)

    def set_breaker_state(self, state: int) -> None:
        """Export the breaker state (0 closed, 1 open, 2 half-open)."""
        self._shared.breaker.set(state)

    def dead_letters(self, buffer: str, amount: int) -> None:
        """Count fields of a buffer that went to its dead-letter hash (cache/buffers.py)."""
        self._shared.dead.labels(buffer).inc(amount)

    def invalidations(self, outcome: str, amount: int) -> None:
        """Count after-commit invalidations: delivered, deferred or replayed."""
        if amount:
            self._shared.invalidations.labels(outcome).inc(amount)

    def invalidations_waiting(self, count: int) -> None:
        """How many invalidations wait for Redis in this process (cache/invalidation.py)."""
        self._shared.waiting.set(count)

    def snapshot(self) -> dict[str, dict[str, float]]:
        """Counts per namespace and event, e.g. for the admin /stats hit ratio.

        Shared per registry, so it reflects every CacheMetrics on this registry.
        """
        return {ns: dict(counts) for ns, counts in list(self._counts.items())}

    def hit_ratio(self, namespace: str) -> float | None:
        """hits (incl. negative hits) / lookups for a namespace; None before any lookup."""
        counts = self._counts.get(namespace, {})
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
