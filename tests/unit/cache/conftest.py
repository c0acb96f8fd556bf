"""Fixtures for cache unit tests: fakeredis (no server), a private metrics registry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import pytest
from prometheus_client import CollectorRegistry

from cache import CacheAside, CacheMetrics, CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RoundTrips:
    """Counts round trips a client makes: one per command or per pipeline execute."""

    def __init__(self, client: Any) -> None:
        self.count = 0
        self.commands: list[tuple[Any, ...]] = []
        orig_exec = client.execute_command
        orig_pipe = client.pipeline

        async def execute_command(*args: Any, **kw: Any) -> Any:
            self.count += 1
            self.commands.append(args)
            return await orig_exec(*args, **kw)

        def pipeline(*a: Any, **kw: Any) -> Any:
            pipe = orig_pipe(*a, **kw)
            orig = pipe.execute

            async def execute(*ea: Any, **ekw: Any) -> Any:
                self.count += 1
                self.commands.extend(tuple(c[0]) for c in pipe.command_stack)
                return await orig(*ea, **ekw)

            pipe.execute = execute
            return pipe

        client.execute_command = execute_command
        client.pipeline = pipeline


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
