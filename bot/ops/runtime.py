"""Process-level tuning of a long-running bot: the event loop and the garbage collector.

Both are measured, not folklore (benchmarks/bot_throughput.py runs under the same settings):

* **uvloop** (aiogram's recommendation for production) roughly halves the event loop's own
  cost per wake-up; a warm update is one Redis round trip plus a Telegram request, so the
  loop's overhead is a large share of it.
* **The cyclic GC.** Every update allocates a few dozen short-lived pydantic objects (the
  Update, the Message Telegram returns, their chats and photo sizes). With CPython's default
  gen-0 threshold of 700 allocations a collection runs every few updates and, every tenth
  time, walks the whole heap: modules, routers, settings, pools. ``gc.freeze()`` after start-up
  moves everything alive then out of the collector's sight (it lives as long as the process
  anyway), and a larger gen-0 threshold makes young collections rarer. Memory stays bounded:
  the objects are still freed by reference counting the moment they are dropped; only cycles
  wait a little longer.
* **aiogram's response models.** ``check_response`` validates every reply with
  ``Response[method.__returning__]``; pydantic caches parametrised generics weakly, so once
  the collector drops ``Response[Message]`` the next request rebuilds its schema (~5 ms on this
  machine, seen 13 times in 1,000 updates). The bot keeps the ones its calls return alive.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import structlog

__all__ = [
    "GC_THRESHOLDS",
    "event_loop_factory",
    "freeze_startup_heap",
    "pin_response_models",
    "run",
    "thaw_heap",
]

log = structlog.get_logger(__name__)

T = TypeVar("T")

#: gen-0 allocations between young collections (default 700), then CPython's defaults.
GC_THRESHOLDS = (10_000, 10, 10)

_pinned: list[type[Any]] = []


def event_loop_factory(use_uvloop: bool = True) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory when wanted and installed, else None (asyncio's default loop)."""
    if not use_uvloop:
        return None
    try:
        import uvloop
    except ImportError:  # optional: Windows, or an install without it
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], *, use_uvloop: bool = True) -> T:
    """``asyncio.run`` on uvloop when available (``use_uvloop=False``: the default loop)."""
    with asyncio.Runner(loop_factory=event_loop_factory(use_uvloop)) as runner:
        return runner.run(main)


def pin_response_models() -> None:
    """Keep ``Response[T]`` alive for every result type the bot's Bot API calls return."""
    if _pinned:
        return
    from aiogram import methods as m
    from aiogram.methods.base import Response

    methods = (
        m.AnswerCallbackQuery,
        m.AnswerInlineQuery,
        m.DeleteWebhook,
        m.EditMessageMedia,
        m.EditMessageText,
        m.GetMe,
        m.GetUpdates,
        m.SendMessage,
        m.SendPhoto,
        m.SetMyCommands,
    )
    returning = {method.__returning__ for method in methods}
    _pinned.extend(Response[t] for t in returning)  # type: ignore[valid-type]


_thresholds_before: list[tuple[int, int, int]] = []


def freeze_startup_heap() -> None:
    """Call once the app is built and the pools are open, before serving updates."""
    pin_response_models()
    if not _thresholds_before:
        _thresholds_before.append(gc.get_threshold())
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    log.debug("gc_tuned", frozen=gc.get_freeze_count(), thresholds=GC_THRESHOLDS)


def thaw_heap() -> None:
    """Undo ``freeze_startup_heap`` when the bot stops (a process that goes on, e.g. a test
    run that started the bot in-process, gets its collector back as it was)."""
    if _thresholds_before:
        gc.set_threshold(*_thresholds_before.pop())
    gc.unfreeze()
