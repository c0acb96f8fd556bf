"""TokenBucket on a fake monotonic clock: the rate bound holds and a pause stops everyone."""

from __future__ import annotations

import asyncio

import pytest

from jobs.ratelimit import TokenBucket


class FakeTime:
    """A monotonic clock whose sleep advances it (no real waiting)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)


def max_in_window(stamps: list[float], width: float) -> int:
    best, j = 0, 0
    for i, t in enumerate(stamps):
        while stamps[j] <= t - width:
            j += 1
        best = max(best, i - j + 1)
    return best


async def test_grants_never_exceed_burst_plus_rate() -> None:
    t = FakeTime()
    bucket = TokenBucket(25, burst=5, clock=t, sleep=t.sleep)
    stamps: list[float] = []

    async def taker() -> None:
        for _ in range(50):
            await bucket.acquire()
            stamps.append(t())

    await asyncio.gather(*(taker() for _ in range(4)))
    assert len(stamps) == 200
    assert max_in_window(sorted(stamps), 1.0) <= 25 + 5
    # and it does reach the rate: 200 tokens take about (200 - 5) / 25 seconds
    assert stamps[-1] - stamps[0] == pytest.approx((200 - 5) / 25, abs=0.1)


async def test_pause_stops_all_takers_and_drops_saved_tokens() -> None:
    t = FakeTime()
    bucket = TokenBucket(10, burst=10, clock=t, sleep=t.sleep)
    await bucket.acquire()
    bucket.pause(3.0)
    start = t()
    await bucket.acquire()
    # nothing before the pause ends, and no burst saved up during it: the first token after
    # the pause needs a tenth of a second of refill
    assert t() - start == pytest.approx(3.1, abs=1e-6)
    assert bucket.pauses == 1


async def test_default_burst_is_a_fifth_of_a_second() -> None:
    assert TokenBucket(25).burst == 5
    assert TokenBucket(2).burst == 1
    with pytest.raises(ValueError):
        TokenBucket(0)
