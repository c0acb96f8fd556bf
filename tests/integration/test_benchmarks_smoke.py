"""Smoke test of the benchmarks (tiny sizes, no timing assertions): they run end to end on
the real servers and their counts are sane."""

from __future__ import annotations

import os

import pytest

from benchmarks import bot_throughput, memory

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _servers(redis_url: str, postgres_server_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The benchmarks read REDIS_URL / DATABASE_URL: point them at the test run's servers."""
    monkeypatch.setenv("REDIS_URL", os.environ.get("REDIS_URL") or redis_url)
    monkeypatch.setenv("DATABASE_URL", os.environ.get("DATABASE_URL") or postgres_server_url)
    # Counts, not speed: Redis gets the longest command timeout the settings allow, so a busy
    # CI machine cannot turn a warm read into a Postgres fallback (a timed-out GET).
    monkeypatch.setenv("REDIS_SOCKET_TIMEOUT", "5")


async def test_bot_throughput_counts() -> None:
    result = await bot_throughput.run(
        quick=True, n_users=24, rounds=1, concurrencies=(1, 4), write=False
    )
    warm = result["warm_up"]
    assert warm["failures"] == 0
    assert warm["file_ids_stored"] == 12
    v = result["variants"]
    for name in ("redis", "postgres-only", "seeds", "floor"):
        for conc in ("c1", "c4"):
            s = v[name][conc]
            assert s["updates"] == 24
            assert s["failures"] == 0
            assert s["replies"] == 24  # every /today answered with a picture
    # warm path of this project: no SQL, a couple of Redis round trips
    assert v["redis"]["c1"]["sql_per_update"] == 0, v["redis"]["c1"]["cache_events"]
    assert 1 <= v["redis"]["c1"]["redis_round_trips_per_update"] <= 3
    # the seeds' way: user read + last-seen UPDATE + horoscope read + view upsert
    assert v["seeds"]["c1"]["sql_per_update"] >= 3
    assert v["seeds"]["c1"]["redis_commands_per_update"] == 0
    assert v["postgres-only"]["c1"]["sql_per_update"] >= 3
    # the floor (aiogram alone, fixed reply) touches neither store
    assert v["floor"]["c1"]["sql_per_update"] == 0
    assert v["floor"]["c1"]["redis_round_trips_per_update"] == 0


async def test_memory_counts() -> None:
    result = await memory.run(quick=True, n_users=30, write=False)
    per = result["per_key"]
    assert per["user"]["keys"] == 30
    assert per["horoscope"]["keys"] == 72
    assert per["fileid"]["keys"] == 50
    for ns in ("user", "horoscope", "fileid"):
        assert 50 < per[ns]["bytes_avg"] < 10_000
    assert result["extrapolated_100k"]["total_bytes"] > 100_000 * per["user"]["bytes_avg"]
