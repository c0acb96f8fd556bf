"""`cache-stats` on the real Redis, confined to this test's key prefix."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bot.config import Settings
from bot.ops.cache_stats import cache_stats_command

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def settings(key_prefix: str, redis_url: str, database_url: str) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None, cache_prefix=key_prefix, database_url=database_url, redis_url=redis_url
    )


async def _plant(redis: Redis, prefix: str) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(25):
            pipe.set(f"{prefix}:v1:user:{i}", b"\x01" * 40, ex=3600 + i)
        for sign in ("aries", "leo", "virgo"):
            pipe.set(f"{prefix}:v1:horoscope:2026-11-21:{sign}:ru", b"text" * 50, ex=90_000)
        pipe.set(f"{prefix}:v1:user:0:lock", b"token", px=5000)
        pipe.hset(f"{prefix}:v1:buf:views", mapping={"aries": 3, "leo": 1})
        pipe.hset(f"{prefix}:v1:buf:last_seen", mapping={"1": 1_700_000_000})
        await pipe.execute()


async def test_counts_per_namespace_and_json(settings: Settings, redis: Redis) -> None:
    await _plant(redis, settings.cache_prefix)
    out = io.StringIO()
    code = await cache_stats_command(settings, as_json=True, sample=10, out=out)
    report = json.loads(out.getvalue())
    assert code == 0 and report["exit_code"] == 0
    rows = {row["namespace"]: row for row in report["namespaces"]}
    assert set(rows) == {"user", "horoscope"}
    assert (rows["user"]["keys"], rows["user"]["locks"], rows["user"]["sampled"]) == (25, 1, 10)
    assert rows["horoscope"]["keys"] == 3
    assert rows["user"]["est_bytes"] >= 25 * 40  # extrapolated from MEMORY USAGE
    assert 3590 < rows["user"]["ttl_min_s"] <= rows["user"]["ttl_max_s"] <= 3625
    assert rows["horoscope"]["ttl_median_s"] > 89_000
    assert [(b["namespace"], b["keys"], b["no_ttl"]) for b in report["buffers"]] == [("buf", 2, 2)]
    assert not any("'buf'" in w for w in report["warnings"])  # buffers are meant to lack TTL
    server = report["server"]
    assert server["used_memory"] > 0 and server["maxmemory_policy"]


async def test_planted_key_without_ttl_fails_and_is_named(settings: Settings, redis: Redis) -> None:
    prefix = settings.cache_prefix
    await _plant(redis, prefix)
    await redis.set(f"{prefix}:v1:horoscope:2026-11-22:leo:en", b"forever")
    out = io.StringIO()
    assert await cache_stats_command(settings, as_json=True, sample=5, out=out) == 1
    report = json.loads(out.getvalue())
    row = next(r for r in report["namespaces"] if r["namespace"] == "horoscope")
    assert row["no_ttl"] == 1
    assert row["no_ttl_examples"] == [f"{prefix}:v1:horoscope:2026-11-22:leo:en"]
    assert report["keys_without_ttl"] == 1
    table = io.StringIO()
    assert await cache_stats_command(settings, as_json=False, sample=5, out=table) == 1
    text = table.getvalue()
    assert "horoscope" in text and "WARNING" in text and "no TTL" in text
    assert "namespace 'buf'" not in text


async def test_cli_json_end_to_end(settings: Settings, redis: Redis) -> None:
    """`python -m bot cache-stats --json` as an operator runs it: stdout is pure JSON."""
    await _plant(redis, settings.cache_prefix)
    env = {**os.environ, "CACHE_PREFIX": settings.cache_prefix, "LOG_FORMAT": "console"}
    env["REDIS_URL"] = str(settings.redis_url)
    env["DATABASE_URL"] = str(settings.database_url)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "bot", "cache-stats", "--json", "--sample", "3"),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, stderr.decode()
    report = json.loads(stdout)
    assert {r["namespace"]: r["keys"] for r in report["namespaces"]} == {"user": 25, "horoscope": 3}
