"""Fixtures for cache unit tests: fakeredis (no server), a private metrics registry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import fakeredis
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
