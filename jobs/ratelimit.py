"""A global token bucket for outgoing Telegram sends.

Why one bucket for the whole sender rather than per-worker sleeps: Telegram's limit (~30
messages/s per bot) is global, and a 429 means the *bot* is over it, so a RetryAfter must pause
every worker at once, not only the one that got the error. The bucket is also where the push
rate is proven: in any window of T seconds it grants at most ``burst + rate * T`` tokens.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

__all__ = ["TokenBucket"]

_EPSILON = 1e-9
_MIN_SLEEP = 1e-4


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; ``pause`` stops all takers.

    ``clock`` (monotonic seconds) and ``sleep`` are injectable: unit tests drive a fake clock
    and never really wait. Takers are served in arrival order (one asyncio.Lock), so a worker
    cannot starve behind luckier ones.
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        # A fifth of a second's worth by default: smooth enough to stay far from Telegram's
        # limit, large enough that a brief stall in the event loop is caught up.
        self.burst = float(burst) if burst is not None else max(1.0, self.rate / 5)
        if self.burst < 1:
            raise ValueError("burst must be at least 1")
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._stamp = clock()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()
        self.granted = 0
        self.pauses = 0

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now

    def pause(self, seconds: float) -> None:
        """Stop granting for ``seconds`` (a RetryAfter), and forget saved-up tokens.

        Dropping the saved tokens matters: resuming with a full burst right after Telegram said
        "too many" would likely earn the next 429 at once.
        """
        now = self._clock()
        self._paused_until = max(self._paused_until, now + max(0.0, seconds))
        self._refill(now)
        self._tokens = 0.0
        self._stamp = max(self._stamp, self._paused_until)
        self.pauses += 1

    async def acquire(self) -> None:
        """Wait for one token (and for any pause to end), then take it."""
        async with self._lock:
            while True:
                now = self._clock()
                if now < self._paused_until:
                    await self._sleep(self._paused_until - now)
                    continue
                self._refill(now)
                # The epsilon absorbs float rounding: after sleeping exactly the computed
                # deficit the refill may land a hair below 1, and a sleep too small to move
                # the clock would then spin forever.
                if self._tokens >= 1 - _EPSILON:
                    self._tokens = max(0.0, self._tokens - 1)
                    self.granted += 1
                    return
                await self._sleep(max((1 - self._tokens) / self.rate, _MIN_SLEEP))
