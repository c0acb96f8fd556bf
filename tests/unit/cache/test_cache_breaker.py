from __future__ import annotations

from cache.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_state_machine() -> None:
    clock = Clock()
    seen: list[int] = []
    b = CircuitBreaker(failure_threshold=3, cooldown=5.0, clock=clock)
    b.on_change = seen.append
    assert b.state == CLOSED and b.allow()
    b.record_failure()
    b.record_failure()
    assert b.state == CLOSED and b.allow()
    b.record_success()  # a success resets the streak
    b.record_failure()
    b.record_failure()
    assert b.state == CLOSED
    b.record_failure()
    assert b.state == OPEN
    assert not b.allow()
    clock.t = 4.9
    assert not b.allow()
    clock.t = 5.0
    assert b.allow()  # exactly one probe
    assert b.state == HALF_OPEN
    assert not b.allow()
    assert not b.allow()
    b.record_failure()  # probe failed: open again for a full cool-down
    assert b.state == OPEN
    clock.t = 9.0
    assert not b.allow()
    clock.t = 10.0
    assert b.allow()
    b.record_success()
    assert b.state == CLOSED and b.allow()
    assert seen == [OPEN, HALF_OPEN, OPEN, HALF_OPEN, CLOSED]


def test_lost_probe_is_replaced_after_cooldown() -> None:
    clock = Clock()
    b = CircuitBreaker(failure_threshold=1, cooldown=1.0, clock=clock)
    b.record_failure()
    clock.t = 1.0
    assert b.allow()  # probe goes out and never reports
    clock.t = 1.5
    assert not b.allow()
    clock.t = 2.0
    assert b.allow()
