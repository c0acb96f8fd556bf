"""The push's global rate limiter (jobs/global_rate.py), on the real Redis script.

The clock is the test's (``now_us`` replaces the server's ``TIME``), so any arrival pattern
can be replayed exactly: the rate is proven where it is set, not measured with a stopwatch.
"""

from __future__ import annotations

import asyncio
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from cache import create_redis
from jobs.global_rate import GlobalRateLimiter, default_burst, gcra_interval_us, planned_rate
from tests.integration.jobs.jobs_support import SECOND, FakeTime, max_in_window


def limiter(
    redis: Redis, key: str, rate: float, clock: FakeTime, **kw: object
) -> GlobalRateLimiter:
    return GlobalRateLimiter(redis, key, rate, now_us=clock, sleep=clock.sleep, **kw)  # type: ignore[arg-type]


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    rate=st.sampled_from([1, 7, 25, 30, 100, 250]),
    burst_share=st.floats(min_value=0, max_value=0.2),
    steps=st.lists(
        st.one_of(st.just(-1), st.integers(min_value=0, max_value=80_000)),
        min_size=20,
        max_size=200,
    ),
)
async def test_no_one_second_window_ever_gets_more_than_the_rate(
    redis: Redis, key_prefix: str, rate: int, burst_share: float, steps: list[int]
) -> None:
    """Whatever the arrival times of the tries (bursts, gaps, many at one instant, and the
    greediest caller: the next try exactly when told), the granted ones never number more
    than ``rate`` in any half-open one-second window."""
    clock = FakeTime()
    burst = max(1, min(rate, math.floor(rate * burst_share)))
    key = f"{key_prefix}:rate:{rate}:{burst}:{len(steps)}:{sum(steps)}"
    lim = limiter(redis, key, rate, clock, burst=burst)
    assert lim.planned < rate or rate == 1
    granted: list[float] = []
    wait = 0.0
    # -1: a greedy run of tries, each exactly when the last one was told to come back,
    # long enough to cover a whole second; else: the next try after that many microseconds.
    budget = 1200  # Redis round trips per example: the suite stays fast
    for step in steps:
        tries = min(rate + 3, budget) if step == -1 else 1
        budget -= tries
        if budget < 0:
            break
        for _ in range(tries):
            clock.now += round(wait * SECOND) if step == -1 else step
            wait = await lim.try_acquire()
            if wait == 0:
                granted.append(clock.now / SECOND)
    await redis.delete(*lim.keys)
    assert granted
    assert max_in_window(granted) <= lim.planned <= rate


async def test_a_steady_caller_gets_the_rate_and_a_pause_stops_every_instance(
    redis: Redis, key_prefix: str
) -> None:
    clock = FakeTime()
    a = limiter(redis, f"{key_prefix}:shared", 25, clock)
    b = limiter(redis, f"{key_prefix}:shared", 25, clock)  # another instance, same key
    start = clock.now
    for i in range(50):
        await (a if i % 2 else b).acquire()
    # 50 slots at 25/s (planned 23/s: the margin for jitter), the first at once
    assert a.planned == 23
    assert clock.now - start == 49 * gcra_interval_us(23, 1)
    # Telegram said RetryAfter 3 to instance A: instance B waits it out too ...
    await a.pause(3)
    paused_at = clock.now
    assert await b.try_acquire() == pytest.approx(3.0)
    await b.acquire()
    assert clock.now - paused_at >= 3 * SECOND
    # ... and nothing saved up during the pause is spent at once afterwards
    assert await a.try_acquire() > 0
    assert a.pauses == 1 and b.granted == 26


async def test_high_rates_allow_a_small_burst_without_a_busier_second(
    redis: Redis, key_prefix: str
) -> None:
    clock = FakeTime()
    lim = limiter(redis, f"{key_prefix}:paid", 1000, clock, record=True)
    assert lim.planned == 900 and lim.burst == default_burst(900) == 9
    # after a quiet moment, nine go at once, then one per interval
    assert [await lim.try_acquire() for _ in range(9)] == [0.0] * 9
    assert lim.grants == [clock.now] * 9  # the server time of each grant
    assert await lim.try_acquire() > 0
    granted = []
    for _ in range(3000):
        clock.now += 200  # a caller trying every 0.2 ms for 0.6 s
        if await lim.try_acquire() == 0:
            granted.append(clock.now / SECOND)
    assert max_in_window(granted, 0.5) <= 450
    assert len(granted) >= 0.6 * 900 * 0.98 - 10


async def test_redis_down_means_wait_never_send_unlimited() -> None:
    """Without Redis the limiter cannot know what the others send: it waits (backing off)
    instead of granting, until cancelled (the scheduler's shutdown)."""
    dead = create_redis("redis://127.0.0.1:1/0", socket_timeout=0.2, socket_connect_timeout=0.2)
    clock = FakeTime()
    lim = GlobalRateLimiter(dead, "dead:rate", 25, sleep=clock.sleep)
    task = asyncio.create_task(lim.acquire())
    while lim.redis_errors < 3:  # noqa: ASYNC110 - the fake sleep yields, no time passes
        await asyncio.sleep(0)
    assert not task.done() and lim.granted == 0
    assert clock.slept[1] > clock.slept[0]  # backing off
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await lim.pause(5)  # swallowed, counted
    assert lim.redis_errors == 4
    await dead.aclose()


def test_interval_arithmetic() -> None:
    assert [planned_rate(r) for r in (1, 2, 25, 30, 100, 1000)] == [1, 1, 23, 27, 90, 900]
    assert gcra_interval_us(25, 1) == 40_000
    assert gcra_interval_us(30, 1) == 33_334  # rounded up: 30 * 33,334 us > 1 s
    assert gcra_interval_us(1000, 10) == math.ceil(SECOND / 991)
    with pytest.raises(ValueError, match="burst"):
        gcra_interval_us(25, 26)
    with pytest.raises(ValueError, match="rate"):
        gcra_interval_us(0.5, 1)
