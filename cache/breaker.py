"""A small circuit breaker for Redis calls.

Why: a dead or hung Redis would otherwise cost every request one socket timeout. After
``failure_threshold`` consecutive failures the breaker opens and the engine skips Redis
entirely (straight to the loader, zero waiting) for ``cooldown`` seconds; then exactly one
caller is let through as a probe. The probe's success closes the breaker (Redis is used again,
no restart needed); its failure re-opens it for another cool-down.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "CircuitBreaker"]

CLOSED = 0
OPEN = 1
HALF_OPEN = 2


class CircuitBreaker:
    """Closed -> open after N consecutive failures -> half-open (one probe) -> closed/open.

    Not thread-safe by design: it lives on one event loop. ``clock`` is injectable so tests can
    drive the cool-down without sleeping.
    """

    __slots__ = (
        "_clock",
        "_failures",
        "_opened_at",
        "_probe_started",
        "cooldown",
        "failure_threshold",
        "on_change",
        "state",
    )

    def __init__(
        self,
        failure_threshold: int = 3,
        cooldown: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        self._probe_started = 0.0
        self.state = CLOSED
        #: called with the new state on every transition (the metrics gauge hooks in here)
        self.on_change: Callable[[int], None] | None = None

    def _set(self, state: int) -> None:
        if state != self.state:
            self.state = state
            if self.on_change is not None:
                self.on_change(state)

    def allow(self) -> bool:
        """May this call use Redis? Cheap when closed (one attribute compare)."""
        if self.state == CLOSED:
            return True
        now = self._clock()
        if self.state == OPEN:
            if now - self._opened_at >= self.cooldown:
                self._probe_started = now
                self._set(HALF_OPEN)
                return True
            return False
        # HALF_OPEN: one probe is out. If it never reported (its caller was cancelled), let
        # another probe through after a further cool-down rather than staying stuck.
        if now - self._probe_started >= self.cooldown:
            self._probe_started = now
            return True
        return False

    def record_success(self) -> None:
        """Redis answered: reset the failure streak and close."""
        if self.state == CLOSED and self._failures == 0:
            return
        self._failures = 0
        self._set(CLOSED)

    def record_failure(self) -> None:
        """Redis failed (connection, timeout): count it; open at the threshold."""
        if self.state == HALF_OPEN:
            self._opened_at = self._clock()
            self._set(OPEN)
            return
        self._failures += 1
        if self.state == CLOSED and self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
            self._set(OPEN)

    @property
    def is_open(self) -> bool:
        """True while Redis is being skipped (open, or half-open with the probe out)."""
        return self.state != CLOSED

    def __repr__(self) -> str:
        name = {CLOSED: "closed", OPEN: "open", HALF_OPEN: "half-open"}[self.state]
        return f"CircuitBreaker({name}, failures={self._failures})"
