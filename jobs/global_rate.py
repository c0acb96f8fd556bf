"""One send rate for every instance: a GCRA limiter in Redis, with a shared pause.

Why in Redis: Telegram's broadcast limit (about 30 messages/s, 1000/s with paid broadcasts) is
per bot, not per process. With N instances sharing the daily push, a bucket in each process
would allow N times the rate; the only state they all see is Redis. The in-process bucket
(jobs/ratelimit.py) remains for a process without Redis (tests, the CLI).

The algorithm is GCRA (the generic cell rate algorithm, the token bucket expressed as one
timestamp): the key holds the *theoretical arrival time* (TAT) of the next send. A send at
server time ``now`` conforms when ``now >= TAT - tolerance``; it then moves TAT to
``max(TAT, now) + interval``. One key, one Lua script, the server's own clock (``TIME``), so
instances on hosts whose clocks disagree still share one schedule.

**Never above the rate in any second.** For ``k`` grants inside any half-open window of
length ``W``: ``(k - 1) * interval - tolerance <= t_k - t_1 < W``, so ``k < W / interval +
burst``. With ``interval = ceil(1 s / (R + 1 - burst))`` (microseconds) this gives ``k <= R``
for every window of one second, whatever the timing of the callers. A burst above 1 (allowed
at high rates, so a short stall of one caller is caught up) is paid for by a slightly longer
interval, never by a busier second. ``R`` is the *planned* rate: the configured one rounded
down, less a margin of 10 % (at least one send): grants are counted where they are made, but
Telegram counts arrivals, and a grant's request can reach Telegram later than its
neighbour's (a busy event loop, a descheduled process, the network). benchmarks/push.py
measures both: with four bot processes starved on two shared cores at 1000/s, the busiest
second of arrivals held up to 8 % more sends than the busiest second of grants; the margin
keeps that jitter under the configured rate.

**RetryAfter pauses everyone.** ``pause(seconds)`` writes a pause-until stamp that every
instance's next ``acquire`` honours, and moves TAT to the end of the pause, dropping any saved
burst (resuming with a burst right after "too many requests" would earn the next one).

**Redis down.** The limiter cannot know what the other instances send, so it does not guess:
``acquire`` waits (with back-off) until Redis answers again. The push's claims stay valid
meanwhile (they live in Postgres) and nobody is skipped: the push is late, never above the
rate. The scheduler's shutdown cancels a waiting run; its claims expire and are taken over.

Both keys share a hash tag, so the script is valid on a Redis Cluster too.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable

import structlog
from redis.asyncio import Redis

from cache.client import REDIS_ERRORS

__all__ = ["GlobalRateLimiter", "default_burst", "gcra_interval_us", "planned_rate"]

log = structlog.get_logger(__name__)


def _now_us(argv: int) -> str:
    """Lua prelude: ``now`` in µs from ARGV[argv] (tests pin the clock) or else Redis TIME.

    Redis's clock, not each instance's, so every instance measures the one rate alike.
    """
    return f"""local now
if ARGV[{argv}] ~= '' then
  now = tonumber(ARGV[{argv}])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
"""


_ACQUIRE = (
    _now_us(4)
    + """
local pause = tonumber(redis.call('GET', KEYS[2]) or '0')
if pause > now then
  return pause - now
end
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then
  tat = now
end
local allow_at = tat - tolerance
if now < allow_at then
  return allow_at - now
end
redis.call('SET', KEYS[1], string.format('%d', tat + interval), 'PX', ARGV[3])
return -now
"""
)

_PAUSE = (
    _now_us(2)
    + """
local untill = now + tonumber(ARGV[1])
local pause = tonumber(redis.call('GET', KEYS[2]) or '0')
if untill > pause then
  local ttl = math.floor((untill - now) / 1000) + 1000
  redis.call('SET', KEYS[2], string.format('%d', untill), 'PX', ttl)
  local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
  if tat < untill then
    redis.call('SET', KEYS[1], string.format('%d', untill), 'PX', ttl)
  end
end
return untill - now
"""
)

#: Smallest sleep between two tries, and the back-off bounds while Redis does not answer.
_MIN_WAIT_S = 0.0002
_DOWN_FIRST_S = 0.2
_DOWN_MAX_S = 5.0


def gcra_interval_us(rate: float, burst: int) -> int:
    """Microseconds between two sends so that no one-second window holds more than
    ``floor(rate)`` of them, with ``burst`` sends allowed back to back (see the module doc)."""
    whole = math.floor(rate)
    if whole < 1:
        raise ValueError("rate must be at least 1 per second")
    if not 1 <= burst <= whole:
        raise ValueError("burst must be between 1 and the rate")
    return math.ceil(1_000_000 / (whole + 1 - burst))


def default_burst(rate: float) -> int:
    """1 at Telegram's free rates (every send spaced out); 1 % of the rate above 100/s."""
    return max(1, math.floor(rate) // 100)


def planned_rate(rate: float) -> int:
    """The rate the schedule is built for: ``rate`` rounded down, less 10 % (at least one)
    for the jitter between a grant and its arrival at Telegram (see the module doc)."""
    whole = math.floor(rate)
    return max(1, whole - max(1, whole // 10))


class GlobalRateLimiter:
    """``acquire()`` waits for the shared schedule's next slot; ``pause()`` stops everyone.

    Callers in one process queue on a local lock, so only one of them asks Redis at a time
    (no thundering herd of N workers polling for one slot); across processes the script
    serialises. ``now_us`` (tests only) replaces the server clock.
    """

    def __init__(
        self,
        redis: Redis,
        key: str,
        rate: float,
        *,
        burst: int | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now_us: Callable[[], int] | None = None,
        record: bool = False,
    ) -> None:
        self.redis = redis
        self.rate = float(rate)
        #: what the schedule grants at most in any second (the configured rate, less a margin)
        self.planned = planned_rate(rate)
        self.burst = default_burst(self.planned) if burst is None else burst
        self.interval_us = gcra_interval_us(self.planned, self.burst)
        self.tolerance_us = (self.burst - 1) * self.interval_us
        # ``{...}``: one hash tag, so both keys live in one cluster slot (one script).
        self.keys = [f"{{{key}}}:tat", f"{{{key}}}:pause"]
        self._acquire = redis.register_script(_ACQUIRE)
        self._pause = redis.register_script(_PAUSE)
        self._sleep = sleep
        self._now_us = now_us
        self._lock = asyncio.Lock()
        #: counters for tests and logs
        self.granted = 0
        self.pauses = 0
        self.redis_errors = 0
        #: ``record``: the server time (microseconds) of every grant, for benchmarks
        self.grants: list[int] | None = [] if record else None

    def _now_arg(self) -> str:
        return "" if self._now_us is None else str(self._now_us())

    async def try_acquire(self) -> float:
        """One try: 0 when a slot was taken, else the seconds to wait before the next try.
        Redis errors propagate."""
        answer = int(
            await self._acquire(
                keys=self.keys,
                # The key's TTL: it only matters while sends are near, so a minute is ample.
                args=[self.interval_us, self.tolerance_us, 60_000, self._now_arg()],
            )
        )
        if answer <= 0:  # granted; the answer is minus the server time of the grant
            self.granted += 1
            if self.grants is not None:
                self.grants.append(-answer)
            return 0.0
        return answer / 1_000_000

    async def acquire(self) -> None:
        """Wait for a slot of the global schedule (and for any shared pause), then take it."""
        async with self._lock:
            backoff = _DOWN_FIRST_S
            while True:
                try:
                    wait = await self.try_acquire()
                except REDIS_ERRORS as exc:
                    self.redis_errors += 1
                    log.warning("push_rate_redis_unavailable", error=repr(exc), retry_in=backoff)
                    await self._sleep(backoff * random.uniform(0.8, 1.2))
                    backoff = min(backoff * 2, _DOWN_MAX_S)
                    continue
                if wait <= 0:
                    return
                backoff = _DOWN_FIRST_S
                await self._sleep(max(wait, _MIN_WAIT_S))

    async def pause(self, seconds: float) -> None:
        """Telegram said RetryAfter: no instance sends for ``seconds`` from now.

        A Redis failure here is logged and swallowed: the caller's own retry still waits for
        its next slot, and Telegram answers another 429 if the bot is still over its limit.
        """
        self.pauses += 1
        try:
            await self._pause(
                keys=self.keys, args=[max(0, int(seconds * 1_000_000)), self._now_arg()]
            )
        except REDIS_ERRORS as exc:
            self.redis_errors += 1
            log.warning("push_pause_not_shared", error=repr(exc), seconds=seconds)
