"""Per-user throttling in Redis: a small burst is fine, hammering is noticed once, then dropped.

A token bucket in its GCRA form (one timestamp per user, the "theoretical arrival time"): a user
may send ``burst`` updates at once and one more every ``rate`` seconds after that. A person
pressing two buttons within half a second is never throttled; someone hammering a button gets
one polite "not so fast" notice, and further updates are dropped silently until the bucket
refills (a person hammering a button must not make the bot hammer Telegram).

One Lua script, sent as a side command in the pipeline of the user lookup (one round trip for
both). Atomic, so it cannot race with its own expiry, and **self-healing**: every call sets the
key with PX (a key without a TTL, e.g. written by hand or left by an older version, gets one on
the next update), a value it cannot read counts as a fresh bucket, a key of another type is
deleted, and a timestamp absurdly far ahead is clamped to what the burst allows. Nothing written
into that key can switch throttling on or off for good.

The time comes from the caller (``clock``), not from Redis: tests drive it without sleeping,
and bot instances share NTP time closely enough for a courtesy limit.

The script goes as EVALSHA; when Redis does not know it (a restarted or flushed Redis answers
NOSCRIPT) or did not answer, the next probe sends the script itself (EVAL, which also loads it),
so there is never an extra round trip. Why it fails open: if Redis is unavailable the bot keeps
answering; throttling is a courtesy, not a security boundary. Why Redis and not a dict: with
several bot instances behind a webhook, updates of one user land on different processes.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from enum import Enum
from typing import Any, Final

from cache import KeySpace, SideCommand
from cache.keys import MAX_KEY_BYTES

__all__ = ["GCRA_SCRIPT", "Decision", "Throttle", "ThrottleProbe"]


class Decision(Enum):
    ALLOW = "allow"
    NOTICE = "notice"
    DROP = "drop"


# KEYS[1]: the user's key. ARGV: now (ms), interval (ms), burst. Returns 0 allow, 1 notice (the
# first refusal since the last allowed update), 2 drop. The value is "<tat ms>", with an "n"
# once the notice went out. (No colon anywhere in the script: metrics label a side command by
# the namespace in its second argument, which for EVAL is this text.)
GCRA_SCRIPT: Final = """
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local tat = now
local noticed = false
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'string' then
  local at, flag = string.match(redis.call('GET', KEYS[1]), '^(%d+)(n?)$')
  if at then
    tat = math.max(tonumber(at), now)
    noticed = flag == 'n'
  end
elseif kind ~= 'none' then
  redis.call('DEL', KEYS[1])
end
tat = math.min(tat, now + burst * interval)
if tat - now <= (burst - 1) * interval then
  tat = tat + interval
  redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', tat - now)
  return 0
end
redis.call('SET', KEYS[1], string.format('%dn', tat), 'PX', tat - now)
if noticed then return 2 end
return 1
"""
#: Redis' id of the script (SHA1 is what EVALSHA names scripts by).
_SHA: Final = hashlib.sha1(GCRA_SCRIPT.encode()).hexdigest()
_DECISIONS: Final = {0: Decision.ALLOW, 1: Decision.NOTICE, 2: Decision.DROP}


class ThrottleProbe:
    """The throttle's command for one update, and the decision once its reply arrived.

    ``commands`` go into the pipeline of the user lookup; ``decision`` stays ALLOW when the
    reply never came (Redis down, cache disabled, a server without scripting): fail open.
    """

    __slots__ = ("_throttle", "commands", "decision")

    def __init__(self, throttle: Throttle, key: str, now_ms: int) -> None:
        self.decision = Decision.ALLOW
        self._throttle = throttle
        params = (1, key, now_ms, throttle.interval_ms, throttle.burst)
        if throttle.script_loaded:
            args: tuple[Any, ...] = ("EVALSHA", _SHA, *params)
        else:
            args = ("EVAL", GCRA_SCRIPT, *params)
        self.commands: tuple[SideCommand, ...] = (
            SideCommand(args, fallback=self._not_run, on_result=self._on_result),
        )

    def _on_result(self, value: Any) -> None:
        self._throttle.script_loaded = True
        self.decision = _DECISIONS.get(value, Decision.ALLOW)

    async def _not_run(self) -> None:
        # NOSCRIPT, no scripting, or Redis unavailable: send the script itself next time.
        self._throttle.script_loaded = False


class Throttle:
    """Redis GCRA throttle keyed ``{prefix}:{v}:throttle:{user_id}``.

    ``rate``: seconds per update once the burst is spent; ``burst``: updates allowed at once;
    ``clock``: seconds since the epoch (injectable); ``enabled=False``: every update passes and
    nothing is sent to Redis.
    """

    def __init__(
        self,
        keys: KeySpace,
        rate: float,
        burst: int = 3,
        *,
        enabled: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if burst < 1:
            raise ValueError("burst must be >= 1")
        self.keys = keys
        self.interval_ms = max(1, int(rate * 1000))
        self.burst = burst
        self.enabled = enabled
        self.clock = clock
        #: whether Redis is believed to know the script (EVALSHA) or must be sent it (EVAL)
        self.script_loaded = False
        self._key_base = keys.key("throttle")  # validated once; a user id is only digits

    def key(self, user_id: int) -> str:
        if type(user_id) is int:  # what KeySpace.key renders, without re-validating the base
            key = f"{self._key_base}:{user_id}"
            if len(key) <= MAX_KEY_BYTES:
                return key
        return self.keys.key("throttle", user_id)

    def probe(self, user_id: int) -> ThrottleProbe | None:
        """The command to send along another read (read ``probe.decision`` after it
        returned); None when throttling is off."""
        if not self.enabled:
            return None
        return ThrottleProbe(self, self.key(user_id), int(self.clock() * 1000))
