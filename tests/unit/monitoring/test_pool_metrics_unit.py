"""The pool collector reads whatever pools it is given, and registers once per registry."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import CollectorRegistry, generate_latest
from redis.asyncio import ConnectionPool, Redis

from bot.ops.pool_metrics import register_pool_metrics, unregister_pool_metrics


class FakeQueuePool:
    _max_overflow = 10

    def size(self) -> int:
        return 5

    def checkedout(self) -> int:
        return 3

    def overflow(self) -> int:
        return -2


def _engine(pool: object) -> SimpleNamespace:
    return SimpleNamespace(sync_engine=SimpleNamespace(pool=pool))


def test_reads_sqlalchemy_and_redis_pools() -> None:
    registry = CollectorRegistry()
    redis = Redis.from_pool(ConnectionPool(max_connections=7))
    register_pool_metrics(_engine(FakeQueuePool()), redis, registry=registry)
    try:
        get = registry.get_sample_value
        assert get("db_pool_size") == 5
        assert get("db_pool_checked_out") == 3
        assert get("db_pool_overflow") == -2
        assert get("db_pool_max") == 15
        assert get("redis_pool_in_use") == 0
        assert get("redis_pool_available") == 0
        assert get("redis_pool_max") == 7
    finally:
        unregister_pool_metrics(registry=registry)


def test_idempotent_retargets_and_unregisters() -> None:
    registry = CollectorRegistry()
    first = register_pool_metrics(_engine(FakeQueuePool()), None, registry=registry)
    second = register_pool_metrics(None, Redis.from_pool(ConnectionPool()), registry=registry)
    assert first is second
    assert registry.get_sample_value("db_pool_size") is None
    assert registry.get_sample_value("redis_pool_max") == 100
    unregister_pool_metrics(registry=registry)
    unregister_pool_metrics(registry=registry)  # a second call is a no-op
    assert registry.get_sample_value("redis_pool_max") is None
    register_pool_metrics(None, None, registry=registry)  # can register again after
    unregister_pool_metrics(registry=registry)


def test_pools_without_the_attributes_export_nothing_and_do_not_break() -> None:
    class NullPoolLike:
        def checkedout(self) -> int:
            raise RuntimeError("not supported")

    registry = CollectorRegistry()
    register_pool_metrics(_engine(NullPoolLike()), SimpleNamespace(), registry=registry)
    try:
        text = generate_latest(registry).decode()
        assert "# TYPE db_pool_checked_out gauge" in text
        assert registry.get_sample_value("db_pool_checked_out") is None
        assert registry.get_sample_value("redis_pool_in_use") is None
    finally:
        unregister_pool_metrics(registry=registry)
