"""The throttle's decisions from its commands' replies (fakeredis)."""

from __future__ import annotations

import fakeredis
import pytest
from prometheus_client import CollectorRegistry

from bot.domain.services.throttle import Decision, Throttle, _decide
from cache import CacheAside, CacheMetrics, KeySpace, SideCommand


@pytest.mark.parametrize(
    ("reply", "decision"),
    [
        (1, Decision.ALLOW),
        (b"1", Decision.ALLOW),
        (2, Decision.NOTICE),
        (3, Decision.DROP),
        (99, Decision.DROP),
        (None, Decision.ALLOW),
        (b"x", Decision.ALLOW),
    ],
)
def test_decide(reply: object, decision: Decision) -> None:
    assert _decide(reply) is decision


async def _decision(cache: CacheAside, throttle: Throttle, user_id: int) -> Decision:
    """The probe's commands through the engine, as they ride along the user lookup."""
    probe = throttle.probe(user_id)
    await cache.send(*probe.commands)
    return probe.decision


async def test_allows_once_notices_once_then_drops() -> None:
    redis = fakeredis.FakeAsyncRedis()
    cache = CacheAside(redis, metrics=CacheMetrics(CollectorRegistry()))
    throttle = Throttle(KeySpace("tthr"), rate=5.0)
    decisions = [await _decision(cache, throttle, 7) for _ in range(4)]
    assert decisions == [Decision.ALLOW, Decision.NOTICE, Decision.DROP, Decision.DROP]
    assert await _decision(cache, throttle, 8) is Decision.ALLOW  # another user
    ttl = await redis.pttl(throttle.key(7))
    assert 0 < ttl <= 5000  # the window expires by itself
    await redis.aclose()


async def test_fails_open_without_redis() -> None:
    cache = CacheAside(None, metrics=CacheMetrics(CollectorRegistry()))
    assert await _decision(cache, Throttle(KeySpace("tthr"), rate=1.0), 1) is Decision.ALLOW


async def test_probe_commands_and_result() -> None:
    throttle = Throttle(KeySpace("tthr"), rate=0.5)
    probe = throttle.probe(5)
    assert all(isinstance(c, SideCommand) for c in probe.commands)
    assert probe.commands[0].args[:2] == ("SET", "tthr:v1:throttle:5")
    assert probe.commands[1].args == ("INCR", "tthr:v1:throttle:5")
    assert probe.decision is Decision.ALLOW  # no reply yet: fail open
    callback = probe.commands[1].on_result
    assert callback is not None
    callback(2)
    assert probe.decision is Decision.NOTICE
    callback(RuntimeError("boom"))  # an error reply leaves the decision alone
    assert probe.decision is Decision.NOTICE
