"""The GCRA throttle on a real Redis (issue 12.4c, 12.11): a burst allowance, one notice, then
drops; a key of any shape written by hand heals on the next update; NOSCRIPT costs nothing.

Time is the throttle's injectable clock, moved by the test: no sleeps, no timing luck.
"""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis

from bot.domain.services.throttle import Decision, Throttle
from cache import CacheAside, KeySpace, create_redis

A, N, D = Decision.ALLOW, Decision.NOTICE, Decision.DROP


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def decide(cache: CacheAside, throttle: Throttle, user_id: int) -> Decision:
    """The probe's command through the engine, as it rides along the user lookup."""
    probe = throttle.probe(user_id)
    assert probe is not None
    await cache.send(*probe.commands)
    return probe.decision


async def test_burst_then_one_notice_then_drops_then_refills(redis: Redis, key_prefix: str) -> None:
    cache, clock = CacheAside(redis), Clock()
    throttle = Throttle(KeySpace(key_prefix), rate=1.0, burst=3, clock=clock)
    assert [await decide(cache, throttle, 7) for _ in range(6)] == [A, A, A, N, D, D]
    assert await decide(cache, throttle, 8) is A  # another user has a bucket of their own
    ttl = await redis.pttl(throttle.key(7))
    assert 0 < ttl <= 3000  # the key expires by itself once the bucket is full again
    clock.now += 1.0  # one token back
    assert [await decide(cache, throttle, 7) for _ in range(3)] == [A, N, D]
    clock.now += 10.0
    assert [await decide(cache, throttle, 7) for _ in range(4)] == [A, A, A, N]


async def test_a_person_pressing_two_buttons_quickly_is_never_throttled(
    redis: Redis, key_prefix: str
) -> None:
    cache, clock = CacheAside(redis), Clock()
    throttle = Throttle(KeySpace(key_prefix), rate=0.5, burst=3, clock=clock)
    for _ in range(20):  # two presses 0.1 s apart, every second, for twenty seconds
        assert await decide(cache, throttle, 7) is A
        clock.now += 0.1
        assert await decide(cache, throttle, 7) is A
        clock.now += 0.9


async def test_keys_written_by_hand_heal_on_the_next_update(redis: Redis, key_prefix: str) -> None:
    cache, clock = CacheAside(redis), Clock()
    throttle = Throttle(KeySpace(key_prefix), rate=1.0, burst=2, clock=clock)
    for uid, poison in enumerate([b"abc", b"0", b"1", b"999999999999999999"], start=1):
        key = throttle.key(uid)
        await redis.set(key, poison)  # no TTL: the old fixed window never recovered from this
        first = await decide(cache, throttle, uid)
        assert 0 < await redis.pttl(key) <= 2000, poison  # a TTL again, within the burst's span
        if poison == b"999999999999999999":  # a far-future stamp is clamped to the burst's span
            assert first is N
            clock.now += 2.0
            assert await decide(cache, throttle, uid) is A
        else:
            assert first is A
        assert [await decide(cache, throttle, uid) for _ in range(3)] == [A, N, D], poison
        clock.now += 10.0
    await redis.hset(throttle.key(9), "x", "y")  # another type altogether: replaced
    assert [await decide(cache, throttle, 9) for _ in range(3)] == [A, A, N]
    assert await redis.type(throttle.key(9)) == b"string"


async def test_noscript_is_answered_by_sending_the_script_next_time(tmp_path: Path) -> None:
    """A restarted or flushed Redis does not know the script: the update passes (fail open) and
    the next probe sends the script itself; no extra round trip at any point."""
    from devtools.embedded import start_valkey

    server = start_valkey(tmp_path / "valkey", default_port=None, persist=False)
    client = create_redis(server.url)
    try:
        cache, clock = CacheAside(client), Clock()
        throttle = Throttle(KeySpace("thr"), rate=1.0, burst=1, clock=clock)
        assert await decide(cache, throttle, 1) is A  # EVAL: loads the script
        assert throttle.script_loaded
        assert await decide(cache, throttle, 1) is N  # EVALSHA
        await client.script_flush()
        clock.now += 5.0
        probe = throttle.probe(1)
        assert probe is not None and probe.commands[0].args[0] == "EVALSHA"
        await cache.send(*probe.commands)
        assert probe.decision is A and not throttle.script_loaded  # NOSCRIPT: fail open
        assert await decide(cache, throttle, 1) is A  # EVAL again (the refill happened before)
        assert await decide(cache, throttle, 1) is N and throttle.script_loaded
    finally:
        await client.aclose()
        server.stop()


async def test_fails_open_without_redis_and_does_nothing_when_disabled(key_prefix: str) -> None:
    cache = CacheAside(None)
    assert await decide(cache, Throttle(KeySpace(key_prefix), rate=1.0, burst=1), 1) is A
    assert Throttle(KeySpace(key_prefix), rate=1.0, enabled=False).probe(1) is None
