from __future__ import annotations

import asyncio

import pytest

from cache.singleflight import SingleFlight


async def test_concurrent_callers_share_one_load() -> None:
    sf = SingleFlight()
    calls = 0

    async def load() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return 7

    results = await asyncio.gather(*(sf.do("k", load) for _ in range(50)))
    assert results == [7] * 50
    assert calls == 1
    assert len(sf) == 0


async def test_map_is_empty_after_100k_keys() -> None:
    sf = SingleFlight()

    async def load() -> int:
        return 1

    for batch in range(1000):
        await asyncio.gather(*(sf.do(f"k{batch}-{i}", load) for i in range(100)))
    assert len(sf) == 0
    assert sf.in_flight == 0


async def test_exception_reaches_every_waiter_and_is_not_cached() -> None:
    sf = SingleFlight()
    calls = 0

    async def boom() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise RuntimeError("db down")

    results = await asyncio.gather(*(sf.do("k", boom) for _ in range(10)), return_exceptions=True)
    assert calls == 1
    assert all(isinstance(r, RuntimeError) for r in results)
    assert len(sf) == 0

    async def ok() -> int:
        return 3

    assert await sf.do("k", ok) == 3  # the failure was not remembered


async def test_cancelling_one_waiter_keeps_the_load_for_others() -> None:
    sf = SingleFlight()
    release = asyncio.Event()
    calls = 0

    async def load() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return "v"

    first = asyncio.create_task(sf.do("k", load))
    second = asyncio.create_task(sf.do("k", load))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    release.set()
    assert await second == "v"
    assert calls == 1


async def test_forget_detaches_in_flight_load() -> None:
    sf = SingleFlight()
    gate = asyncio.Event()

    async def old() -> str:
        await gate.wait()
        return "old"

    async def new() -> str:
        return "new"

    t = asyncio.create_task(sf.do("k", old))
    await asyncio.sleep(0)
    sf.forget("k")
    assert await sf.do("k", new) == "new"
    gate.set()
    assert await t == "old"
    assert len(sf) == 0
