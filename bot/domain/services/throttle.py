"""Per-user throttling in Redis: a burst is answered once, noticed once, then dropped.

A fixed window of ``rate`` seconds per user, as two commands that can ride in the same pipeline
as the user lookup (``SET key 0 NX PX window`` then ``INCR key``). INCR's reply decides:

* 1: the first update of the window, handled;
* 2: the second, answered with a polite "not so fast" notice;
* 3+: dropped silently (a person hammering a button must not make the bot hammer Telegram).

Why Redis and not a dict: with several bot instances behind a webhook, updates of one user land
on different processes. Why it fails open: if Redis is unavailable the bot keeps answering;
throttling is a courtesy, not a security boundary.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from cache import KeySpace, SideCommand
from cache.keys import MAX_KEY_BYTES

__all__ = ["Decision", "Throttle", "ThrottleProbe"]


class Decision(Enum):
    ALLOW = "allow"
    NOTICE = "notice"
    DROP = "drop"


def _decide(count: Any) -> Decision:
    try:
        n = int(count)
    except (TypeError, ValueError):
        return Decision.ALLOW
    if n <= 1:
        return Decision.ALLOW
    return Decision.NOTICE if n == 2 else Decision.DROP


class ThrottleProbe:
    """The throttle's commands for one update, and the decision once their reply arrived.

    ``commands`` go into the pipeline of the user lookup (or are sent on their own by
    :meth:`Throttle.check`); ``decision`` stays ALLOW when the reply never came (Redis down,
    cache disabled): fail open.
    """

    __slots__ = ("commands", "decision")

    def __init__(self, key: str, window_ms: int) -> None:
        self.decision = Decision.ALLOW
        init = SideCommand(("SET", key, b"0", "NX", "PX", window_ms))
        incr = SideCommand(("INCR", key), on_result=self._on_result)
        self.commands: tuple[SideCommand, ...] = (init, incr)

    def _on_result(self, value: Any) -> None:
        if isinstance(value, BaseException):
            return
        self.decision = _decide(value)


class Throttle:
    """Redis fixed-window throttle keyed ``{prefix}:{v}:throttle:{user_id}``."""

    def __init__(self, keys: KeySpace, rate: float) -> None:
        self.keys = keys
        self.window_ms = max(1, int(rate * 1000))
        self._key_base = keys.key("throttle")  # validated once; a user id is only digits

    def key(self, user_id: int) -> str:
        if type(user_id) is int:  # what KeySpace.key renders, without re-validating the base
            key = f"{self._key_base}:{user_id}"
            if len(key) <= MAX_KEY_BYTES:
                return key
        return self.keys.key("throttle", user_id)

    def probe(self, user_id: int) -> ThrottleProbe:
        """Commands to send along another read; read ``probe.decision`` after it returned."""
        return ThrottleProbe(self.key(user_id), self.window_ms)
