"""The current user of every update, and the per-user throttle, in one Redis round trip.

``UserRepository.get_or_create_from_telegram`` returns the cached user (Redis GET, last-seen
HSET in the same pipeline, no SQL for a known user whose profile did not change) or creates it
in the update's unit of work; the repository cleans the profile (NULs removed, lengths capped).
The throttle's script rides in that same pipeline (the repository's ``also=``); its reply
reaches the throttle through ``SideCommand.on_result``.

Throttled updates end here: the first update past the burst gets a polite notice, the rest are
dropped until the bucket refills. Inline queries (people type letter by letter), chosen inline
results (a view that must be counted) and chat-member changes are never throttled.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog
from aiogram import BaseMiddleware
from aiogram.types import CallbackQuery, Message, TelegramObject, Update, User

from bot.domain.services.throttle import Decision
from bot.telegram.api import is_harmless
from bot.telegram.middlewares.context import set_outcome
from bot.telegram.texts import texts
from db.repositories import Repositories

if TYPE_CHECKING:
    from bot.telegram.context import AppContext

__all__ = ["UserMiddleware"]

log = structlog.get_logger(__name__)

THROTTLED_TYPES = frozenset({"message", "callback_query", "edited_message"})


class UserMiddleware(BaseMiddleware):
    def __init__(self, app: AppContext) -> None:
        self.app = app

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
        # The throttle's script rides in the user GET's pipeline; its reply (on_result) sets
        # probe.decision, which stays ALLOW when Redis did not answer.
        probe = self.app.throttle.probe(tg_user.id) if throttled else None
        user, _created = await repos.users.get_or_create_from_telegram(
            tg_user, also=probe.commands if probe is not None else ()
        )
        if probe is not None:
            decision = probe.decision
        # A new or changed user was written: commit now, so the update does not pin a pooled
        # connection for the rest of its handling (see UnitOfWork).
        uow = data.get("uow")
        if uow is not None:
            await uow.commit()
        data["user"] = user
        lang = self.app.horoscopes.lang_for(user)
        data["lang"] = lang
        data["t"] = t = texts(lang)
        if decision is not Decision.ALLOW:
            set_outcome(data, "throttled")
            log.info("throttled", decision=decision.value)
            if isinstance(event, Update):
                await self._notify(event, decision, t.throttled)
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
