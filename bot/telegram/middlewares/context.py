"""Per-update logging context and metrics.

Binds ``update_id`` and ``user_id`` (one ContextVar, bot/ops/logs.py ``bind_update``) for
everything logged while the update is handled (repositories, cache, aiogram) and resets it
afterwards, so a line from the next update never carries the previous one's ids. Counts
``bot_updates_total{type,outcome}`` (once per update; an exception's outcome is
``bot.telegram.api.outcome_of``) and observes ``bot_handler_seconds{type}``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.dispatcher.event.bases import UNHANDLED
from aiogram.types import TelegramObject, Update, User

from bot.ops.logs import bind_update, reset_update
from bot.ops.metrics import HANDLER_SECONDS, UPDATES
from bot.telegram.api import outcome_of

__all__ = ["OUTCOME_KEY", "ContextMiddleware"]

#: Handlers and middlewares may set data[OUTCOME_KEY] ("throttled", "blocked", ...).
OUTCOME_KEY = "outcome"


class _Outcome:
    """Mutable slot in the middleware data: inner layers report how the update ended."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: str | None = None


# Prometheus ``labels()`` takes a lock and builds a tuple key on every call: resolve each
# child once per (type, outcome) and keep it (the label values are a small closed set).
_updates_children: dict[tuple[str, str], Any] = {}
_seconds_children: dict[str, Any] = {}


def _count_update(kind: str, outcome: str) -> None:
    child = _updates_children.get((kind, outcome))
    if child is None:
        child = _updates_children[(kind, outcome)] = UPDATES.labels(kind, outcome)
    child.inc()


def _observe_seconds(kind: str, seconds: float) -> None:
    child = _seconds_children.get(kind)
    if child is None:
        child = _seconds_children[kind] = HANDLER_SECONDS.labels(kind)
    child.observe(seconds)


class ContextMiddleware(BaseMiddleware):
    """``inflight`` (optional) collects the tasks handling updates right now, so a shutdown can
    wait for them before closing the bot's session and the pools."""

    def __init__(self, inflight: set[asyncio.Task[Any]] | None = None) -> None:
        self.inflight = inflight

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        if not isinstance(event, Update):
            return await handler(event, data)
        kind = event.event_type
        user: User | None = data.get("event_from_user")
        logged = bind_update(event.update_id, user.id if user else None)
        outcome = _Outcome()
        data[OUTCOME_KEY] = outcome
        task = asyncio.current_task() if self.inflight is not None else None
        if task is not None and self.inflight is not None:
            self.inflight.add(task)
        start = time.perf_counter()
        try:
            result = await handler(event, data)
        except BaseException as exc:
            # Counted here, once: the error handler (outside this middleware) only logs and
            # answers, so a blocked user is "blocked" and not "error" as well.
            _count_update(kind, outcome_of(exc))
            raise
        else:
            label = outcome.value or ("ignored" if result is UNHANDLED else "ok")
            _count_update(kind, label)
            return result
        finally:
            _observe_seconds(kind, time.perf_counter() - start)
            reset_update(logged)
            if task is not None and self.inflight is not None:
                self.inflight.discard(task)


def set_outcome(data: dict[str, Any], value: str) -> None:
    slot = data.get(OUTCOME_KEY)
    if isinstance(slot, _Outcome):
        slot.value = value
