"""Smoke test of benchmarks/cache_engine.py (tiny sizes, no timing assertions): it runs end to
end on the real Redis with every peer (cashews and aiocache are dev dependencies), and what it
counts is sane."""

from __future__ import annotations

import pytest

from benchmarks import cache_engine

pytestmark = [
    pytest.mark.timeout(120),
    # cashews and aiocache call redis-py's deprecated close(); theirs to fix
    pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning"),
]


async def test_cache_engine_benchmark_runs_and_counts(redis_url: str) -> None:
    result = await cache_engine.run(redis_url, smoke=True, write=False)
    seq, conc = result["warm_hit"]["sequential"], result["warm_hit"]["concurrent"]
    for name in (cache_engine.RAW, cache_engine.OURS, "cashews @cache", "aiocache RedisCache get"):
        assert seq[name]["n"] > 0 and conc[name]["n"] > 0, name
    assert cache_engine.RAW_PIPE in conc
    assert seq[cache_engine.RAW]["x_raw"] == 1.0
    assert conc[cache_engine.OURS]["trips_per_op"] < 1  # the engine's reads shared pipelines
    one = result["stampede"]["1x1000"]
    assert one["loader_calls_max"] == 1
    assert one["commands_per_key_max"] <= 5  # GET, SET NX, the commit (+ a script load)
    assert result["stampede"]["bare single-flight (no Redis), 1x1000"]["loader_calls_max"] == 1
    assert "c100 >= 2.5x raw" in result["targets"]["met"]
    assert "Cache engine, warm hit" in "\n".join(cache_engine.markdown(result))
