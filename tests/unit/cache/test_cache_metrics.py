from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from cache.metrics import CacheMetrics, default_metrics


def test_counts_snapshot_and_exposition() -> None:
    reg = CollectorRegistry()
    m = CacheMetrics(reg)
    m.event("user", "hit")
    m.event("user", "hit")
    m.event("user", "miss")
    m.observe_load("user", 0.01)
    m.set_breaker_state(1)
    snap = m.snapshot()
    assert snap["user"]["hit"] == 2 and snap["user"]["miss"] == 1
    assert m.hit_ratio("user") == 2 / 3
    assert m.hit_ratio("nothing") is None
    text = generate_latest(reg).decode()
    assert 'cache_events_total{event="hit",namespace="user"} 2.0' in text
    assert "cache_breaker_state 1.0" in text
    assert "cache_load_seconds_count" in text


def test_double_registration_does_not_crash() -> None:
    reg = CollectorRegistry()
    a = CacheMetrics(reg)
    b = CacheMetrics(reg)
    a.event("x", "hit")
    b.event("x", "hit")
    assert a.snapshot()["x"]["hit"] == 2
    assert default_metrics() is default_metrics()
    CacheMetrics()  # on the global registry, next to the default instance
