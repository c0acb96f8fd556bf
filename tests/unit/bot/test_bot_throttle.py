"""The throttle's command and decisions from its replies (no Redis: the script itself runs
on a real Redis in tests/integration/throttle/)."""

from __future__ import annotations

import asyncio

from bot.domain.services.throttle import GCRA_SCRIPT, Decision, Throttle
from cache import KeySpace


def test_probe_sends_the_script_until_redis_knows_it() -> None:
    throttle = Throttle(KeySpace("tthr"), rate=0.5, burst=3, clock=lambda: 1000.25)
    probe = throttle.probe(5)
    assert probe is not None and len(probe.commands) == 1
    command = probe.commands[0]
    assert command.args == ("EVAL", GCRA_SCRIPT, 1, "tthr:v1:throttle:5", 1_000_250, 500, 3)
    assert probe.decision is Decision.ALLOW  # no reply yet: fail open
    assert command.on_result is not None and command.fallback is not None
    command.on_result(1)
    assert probe.decision is Decision.NOTICE and throttle.script_loaded
    again = throttle.probe(5)
    assert again is not None and again.commands[0].args[0] == "EVALSHA"
    asyncio.run(again.commands[0].fallback())  # type: ignore[misc]  # NOSCRIPT or no Redis
    assert not throttle.script_loaded
    third = throttle.probe(5)
    assert third is not None and third.commands[0].args[0] == "EVAL"


def test_replies_map_to_decisions() -> None:
    throttle = Throttle(KeySpace("tthr"), rate=1.0)
    for reply, decision in [(0, Decision.ALLOW), (1, Decision.NOTICE), (2, Decision.DROP)]:
        probe = throttle.probe(1)
        assert probe is not None and probe.commands[0].on_result is not None
        probe.commands[0].on_result(reply)
        assert probe.decision is decision
    probe = throttle.probe(1)
    assert probe is not None and probe.commands[0].on_result is not None
    probe.commands[0].on_result(b"odd")
    assert probe.decision is Decision.ALLOW


def test_disabled_throttle_sends_nothing() -> None:
    assert Throttle(KeySpace("tthr"), rate=1.0, enabled=False).probe(1) is None


def test_no_colon_in_the_script() -> None:
    # Metrics label a side command by the namespace in its second argument (the script text
    # for EVAL); a colon there would turn a piece of Lua into a label value.
    assert ":" not in GCRA_SCRIPT
