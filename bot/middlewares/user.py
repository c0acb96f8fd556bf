"""The current user of every update, and the per-user throttle, in one Redis round trip.

``UserRepository.get_or_create_from_telegram`` returns the cached user (Redis GET, last-seen
HSET in the same pipeline, no SQL for a known user whose profile did not change) or creates it
in the update's unit of work. The throttle's two commands ride in that same pipeline when the
repository and the cache engine support it (``also=`` and ``SideCommand.on_result``); until then
the throttle is its own round trip (``Throttle.check``).

Throttled updates end here: the second update of a burst gets a polite notice, the rest are
dropped. Inline queries (people type letter by letter), chosen inline results (a view that
must be counted) and chat-member changes are never throttled.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog
from aiogram import BaseMiddleware
from aiogram.types import CallbackQuery, Message, TelegramObject, Update, User

from bot.middlewares.context import set_outcome
from bot.services.telegram import is_harmless
from bot.services.throttle import Decision
from bot.texts import texts
from db.repositories import Repositories, UserRepository

if TYPE_CHECKING:
    from bot.app import AppContext

__all__ = ["UserMiddleware"]

log = structlog.get_logger(__name__)

THROTTLED_TYPES = frozenset({"message", "callback_query", "edited_message"})


def _repository_takes_also() -> bool:
    try:
        params = inspect.signature(UserRepository.get_or_create_from_telegram).parameters
    except (TypeError, ValueError):
        return False
    return "also" in params


class UserMiddleware(BaseMiddleware):
    def __init__(self, app: AppContext) -> None:
        self.app = app
        self.piggyback = app.throttle.piggyback and _repository_takes_also()

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        tg_user: User | None = data.get("event_from_user")
        repos: Repositories | None = data.get("repos")
        if tg_user is None or repos is None or tg_user.is_bot:
            data["user"] = None
            data["lang"] = self.app.horoscopes.lang_for(None)
            data["t"] = texts(data["lang"])
            return await handler(event, data)
        kind = event.event_type if isinstance(event, Update) else ""
        throttled = kind in THROTTLED_TYPES
        decision = Decision.ALLOW
        users = repos.users
        if throttled and self.piggyback:
            probe = self.app.throttle.probe(tg_user.id)
            user, _created = await users.get_or_create_from_telegram(  # type: ignore[call-arg]
                tg_user, also=probe.commands
            )
            decision = probe.decision
        else:
            if throttled:
                decision = await self.app.throttle.check(tg_user.id)
            user, _created = await users.get_or_create_from_telegram(tg_user)
        # A new or changed user was written: commit now, so the update does not pin a pooled
        # connection for the rest of its handling (see UnitOfWork).
        uow = data.get("uow")
        if uow is not None:
            await uow.commit()
        data["user"] = user
        lang = self.app.horoscopes.lang_for(user)
        data["lang"] = lang
        data["t"] = texts(lang)
        if decision is not Decision.ALLOW:
            set_outcome(data, "throttled")
            log.info("throttled", decision=decision.value)
            if isinstance(event, Update):
                await self._notify(event, decision, texts(lang).throttled)
            return None
        return await handler(event, data)

    async def _notify(self, update: Update, decision: Decision, text: str) -> None:
        try:
            if update.callback_query is not None:
                query: CallbackQuery = update.callback_query
                if decision is Decision.NOTICE:
                    await query.answer(text)
                else:
                    await query.answer()
            elif decision is Decision.NOTICE and update.message is not None:
                message: Message = update.message
                await message.answer(text)
        except Exception as exc:  # a notice is a courtesy: never fail the update for it
            if not is_harmless(exc):
                log.info("throttle_notice_failed", error=repr(exc))
