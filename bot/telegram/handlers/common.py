"""Small helpers every handler uses: answering a callback once and quietly, safe replies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from aiogram import Router
from aiogram.types import (
    CallbackQuery,
    InaccessibleMessage,
    InlineKeyboardMarkup,
    MaybeInaccessibleMessageUnion,
    Message,
)

from bot.telegram.api import is_harmless, with_retry
from bot.telegram.texts import Texts, visible_text
from db.repositories import UserData

if TYPE_CHECKING:
    from bot.telegram.context import AppContext

__all__ = [
    "RouterFactory",
    "accessible",
    "answer_callback",
    "chat_id_of",
    "push_note",
    "quietly",
    "same_markup",
    "shows",
    "user_zone",
]

log = structlog.get_logger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


async def answer_callback(query: CallbackQuery, text: str | None = None) -> None:
    """Answer a callback query (stops the button's spinner); "query is too old" is fine."""
    try:
        await with_retry(lambda: query.answer(text), what="answer_callback")
    except Exception as exc:
        if not is_harmless(exc):
            raise
        log.debug("callback_answer_skipped", error=str(exc))


async def quietly(call: Callable[[], Awaitable[Any]], what: str) -> None:
    """``with_retry(call)``; a harmless failure (message gone, not modified) is ignored."""
    try:
        await with_retry(call, what=what)
    except Exception as exc:
        if not is_harmless(exc):
            raise


def accessible(message: MaybeInaccessibleMessageUnion | None) -> Message | None:
    """The callback's message if the bot can still see and edit it.

    Telegram sends an InaccessibleMessage (date 0) for messages too old to show, and none at
    all for buttons under inline-mode messages.
    """
    if message is None or isinstance(message, InaccessibleMessage):
        return None
    return message


def same_markup(a: InlineKeyboardMarkup | None, b: InlineKeyboardMarkup | None) -> bool:
    """Equal keyboards, whether built here or parsed from an update (unset fields ignored)."""
    if a is None or b is None:
        return a is b
    return a.model_dump(exclude_none=True) == b.model_dump(exclude_none=True)


def shows(message: Message, text: str, markup: InlineKeyboardMarkup | None) -> bool:
    """Whether ``message`` already shows ``text`` (our HTML) under ``markup``.

    Then an edit would change nothing and Telegram would refuse it ("message is not
    modified"): the caller answers the button quietly instead of sending it.
    """
    return message.text == visible_text(text) and same_markup(message.reply_markup, markup)


def chat_id_of(query: CallbackQuery) -> int:
    """Where to answer a callback: the message's chat, else the person's private chat."""
    if query.message is not None:
        return query.message.chat.id
    return query.from_user.id


def user_zone(app: AppContext, user: UserData) -> str:
    """The user's IANA zone, BOT_TIMEZONE when they never chose one."""
    return user.timezone or app.settings.bot_timezone


def push_note(t: Texts, user: UserData, zone: str) -> str:
    """What to say after the daily push was switched: on at which hour, or off."""
    if user.push_enabled:
        return t.push_now_on.format(hour=user.push_time.hour, tz=zone)
    return t.push_now_off


class RouterFactory:
    """Records handler registrations and builds a fresh Router per Dispatcher.

    aiogram attaches a Router to one parent for life, but tests and benchmarks build several
    apps in one process (a restart, a cache-disabled baseline). Modules therefore declare
    handlers on a factory with the same decorator syntax, and ``build_app`` calls ``build()``.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._registrations: list[tuple[str, tuple[Any, ...], dict[str, Any], Any]] = []

    def _register(self, observer: str, *filters: Any, **kwargs: Any) -> Callable[[F], F]:
        def decorator(callback: F) -> F:
            self._registrations.append((observer, filters, kwargs, callback))
            return callback

        return decorator

    def message(self, *filters: Any, **kwargs: Any) -> Callable[[F], F]:
        return self._register("message", *filters, **kwargs)

    def callback_query(self, *filters: Any, **kwargs: Any) -> Callable[[F], F]:
        return self._register("callback_query", *filters, **kwargs)

    def inline_query(self, *filters: Any, **kwargs: Any) -> Callable[[F], F]:
        return self._register("inline_query", *filters, **kwargs)

    def chosen_inline_result(self, *filters: Any, **kwargs: Any) -> Callable[[F], F]:
        return self._register("chosen_inline_result", *filters, **kwargs)

    def my_chat_member(self, *filters: Any, **kwargs: Any) -> Callable[[F], F]:
        return self._register("my_chat_member", *filters, **kwargs)

    def errors(self, *filters: Any, **kwargs: Any) -> Callable[[F], F]:
        return self._register("errors", *filters, **kwargs)

    def build(self) -> Router:
        router = Router(name=self.name)
        for observer, filters, kwargs, callback in self._registrations:
            getattr(router, observer).register(callback, *filters, **kwargs)
        return router
