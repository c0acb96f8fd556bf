"""Fixtures for cache unit tests: fakeredis (no server), a private metrics registry, and
fakeredis' clock held still for the tests that read TTLs back."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import fakeredis._socket._base as fakeredis_base
import pytest
from _cache_fakes import FakeClock
from prometheus_client import CollectorRegistry

from cache import CacheAside, CacheMetrics, CircuitBreaker


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
async def fake(server: fakeredis.FakeServer) -> AsyncIterator[Any]:
    client = fakeredis.FakeAsyncRedis(server=server)
    yield client
    await client.aclose()


@pytest.fixture
def metrics() -> CacheMetrics:
    return CacheMetrics(CollectorRegistry())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def cache(fake: Any, metrics: CacheMetrics, clock: FakeClock) -> AsyncIterator[CacheAside]:
    c = CacheAside(fake, metrics=metrics, breaker=CircuitBreaker(clock=clock))
    yield c
    await c.aclose()


class _StillTime:
    """``time`` as fakeredis' command loop sees it, with ``time()`` held still."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.fixture
def still_redis_clock(monkeypatch: pytest.MonkeyPatch) -> _StillTime:
    """fakeredis' clock stops: a TTL read back is exactly the one written, however long the
    test takes in between (a margin of "ms that passed meanwhile" is a stopwatch). Keys do not
    expire while it is held; only for tests that read TTLs."""
    still = _StillTime()
    monkeypatch.setattr(fakeredis_base, "time", still)
    return still
