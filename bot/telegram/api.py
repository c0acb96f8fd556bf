"""How the bot treats Telegram's answers when it talks to a person.

One policy in one place so every handler behaves the same:

* 429 (TelegramRetryAfter): wait ``retry_after`` once, bounded by ``MAX_RETRY_WAIT`` so a
  handler never hangs for minutes, and try once more. A second 429 propagates.
* "message is not modified", "message to edit not found", "query is too old": the user already
  sees the right thing, or the thing is gone; they are expected and are logged at debug only.
* 403 (blocked, deactivated): the caller decides (the error handler turns push off).

``outcome_of`` names how an update that raised ended, for ``bot_updates_total{outcome}``: each
update is counted once, by the context middleware, under exactly one outcome.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from aiogram.exceptions import TelegramBadRequest, TelegramForbiddenError, TelegramRetryAfter

__all__ = [
    "FILE_ID_REJECTED",
    "MAX_RETRY_WAIT",
    "is_file_id_rejected",
    "is_harmless",
    "is_not_modified",
    "outcome_of",
    "with_retry",
]

log = structlog.get_logger(__name__)

T = TypeVar("T")

MAX_RETRY_WAIT = 5.0

#: Descriptions of a BadRequest that means "this file_id is no good (any more)".
FILE_ID_REJECTED = (
    "wrong file identifier",
    "wrong remote file id",
    "can't unserialize",
    "wrong type of the web page content",
    "failed to get http url content",
    "file reference expired",
    "wrong file_id",
)

_HARMLESS = (
    "message is not modified",
    "message to edit not found",
    "message to delete not found",
    "message can't be edited",
    "query is too old",
    "query id is invalid",
    "message_id_invalid",
)


def _text(exc: BaseException) -> str:
    return str(getattr(exc, "message", None) or exc).lower()


def is_file_id_rejected(exc: BaseException) -> bool:
    return isinstance(exc, TelegramBadRequest) and any(p in _text(exc) for p in FILE_ID_REJECTED)


def is_not_modified(exc: BaseException) -> bool:
    return isinstance(exc, TelegramBadRequest) and "message is not modified" in _text(exc)


def is_harmless(exc: BaseException) -> bool:
    """A BadRequest that only says the target is unchanged, gone or too old."""
    return isinstance(exc, TelegramBadRequest) and any(p in _text(exc) for p in _HARMLESS)


def outcome_of(exc: BaseException) -> str:
    """The ``outcome`` label of an update that ended with ``exc``: ``blocked`` (the person
    blocked the bot), ``gone`` (the message or query no longer exists, or is unchanged),
    ``rate_limited`` (a 429 we did not wait out), else ``error`` (a bug or an outage: what the
    "updates ending in error" alert is about)."""
    if isinstance(exc, TelegramForbiddenError):
        return "blocked"
    if is_harmless(exc):
        return "gone"
    if isinstance(exc, TelegramRetryAfter):
        return "rate_limited"
    return "error"


async def with_retry(
    call: Callable[[], Awaitable[T]], *, max_wait: float = MAX_RETRY_WAIT, what: str = "call"
) -> T:
    """Run ``call``; on a 429 wait ``retry_after`` (at most ``max_wait``) and run it once more.

    ``call`` is a factory because an aiogram method object can be awaited only once.
    A ``retry_after`` longer than ``max_wait`` is not waited for: the 429 propagates at once
    (a person will not wait a minute for an answer; the update is better dropped).
    """
    try:
        return await call()
    except TelegramRetryAfter as exc:
        if exc.retry_after > max_wait:
            log.warning("retry_after_too_long", what=what, retry_after=exc.retry_after)
            raise
        log.info("retry_after", what=what, retry_after=exc.retry_after)
        await asyncio.sleep(exc.retry_after)
    return await call()
