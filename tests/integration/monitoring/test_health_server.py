"""HealthServer against the real Redis and Postgres, and against stores that are not there."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.ops.health import HealthServer
from bot.ops.pool_metrics import register_pool_metrics, unregister_pool_metrics
from cache.client import create_redis
from db.engine import create_engine


def _closed_port() -> int:
    """A port nothing listens on (bound, then released: connects get ECONNREFUSED)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def dead_redis() -> AsyncIterator[Redis]:
    client = create_redis(f"redis://127.0.0.1:{_closed_port()}/0")
    yield client
    await client.aclose()


@pytest.fixture
async def dead_engine() -> AsyncIterator[AsyncEngine]:
    eng = create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{_closed_port()}/nothing")
    yield eng
    await eng.dispose()


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.text()


async def test_healthz_readyz_and_metrics_on_real_stores(redis: Redis, engine: AsyncEngine) -> None:
    register_pool_metrics(engine, redis)
    try:
        async with HealthServer("127.0.0.1:0", redis=redis, engine=engine) as server:
            assert await _get(f"{server.url}/healthz") == (200, "ok")
            status, body = await _get(f"{server.url}/readyz")
            assert status == 200, body
            assert body == '{"redis": "ok", "postgres": "ok"}'
            status, metrics = await _get(f"{server.url}/metrics")
        assert status == 200
        assert "# TYPE bot_updates_total counter" in metrics
        samples = {
            line.split(" ")[0]: float(line.split(" ")[1])
            for line in metrics.splitlines()
            if line and not line.startswith("#")
        }
        assert samples["db_pool_size"] == engine.sync_engine.pool.size()  # type: ignore[attr-defined]
        assert samples["db_pool_checked_out"] == 0  # the readyz connection went back
        assert samples["redis_pool_available"] >= 1  # the PING's connection is kept idle
        assert samples["redis_pool_in_use"] == 0
        assert "db_pool_overflow" in samples and "redis_pool_max" in samples
    finally:
        unregister_pool_metrics()


async def test_readyz_names_redis_when_it_is_down(dead_redis: Redis, engine: AsyncEngine) -> None:
    async with HealthServer("127.0.0.1:0", redis=dead_redis, engine=engine) as server:
        status, body = await _get(f"{server.url}/readyz")
        assert await _get(f"{server.url}/healthz") == (200, "ok")  # liveness does not care
    assert status == 503
    result = json.loads(body)
    assert result["postgres"] == "ok"
    assert result["redis"] != "ok" and "Connect" in result["redis"]


async def test_readyz_names_postgres_when_it_is_down(
    redis: Redis, dead_engine: AsyncEngine
) -> None:
    async with HealthServer("127.0.0.1:0", redis=redis, engine=dead_engine) as server:
        status, body = await _get(f"{server.url}/readyz")
    assert status == 503
    result = json.loads(body)
    assert result["redis"] == "ok"
    assert result["postgres"] != "ok" and result["postgres"]
