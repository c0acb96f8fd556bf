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
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from aiogram import BaseMiddleware
from aiogram.types import CallbackQuery, Message, TelegramObject, Update, User

from bot.middlewares.context import set_outcome
from bot.services.telegram import is_harmless
from bot.services.throttle import Decision
from bot.texts import texts
from cache import SideCommand
from db.repositories import Repositories, UserData, UserRepository
from db.repositories import users as _users

if TYPE_CHECKING:
    from bot.app import AppContext

__all__ = ["UserMiddleware"]

log = structlog.get_logger(__name__)

THROTTLED_TYPES = frozenset({"message", "callback_query", "edited_message"})


@dataclass(frozen=True, slots=True)
class CleanProfile:
    """The Telegram user as stored: NUL characters removed, lengths capped to the columns.

    Postgres text cannot hold U+0000 and Telegram's own limits are not a promise a database
    should rely on; cleaning here keeps one odd profile from failing every update of its user.
    """

    id: int
    is_bot: bool
    first_name: str
    last_name: str | None
    username: str | None
    language_code: str | None
    is_premium: bool | None

    @classmethod
    def of(cls, user: User) -> CleanProfile:
        return cls(
            id=user.id,
            is_bot=user.is_bot,
            first_name=_clean(user.first_name, 256) or "?",
            last_name=_clean(user.last_name, 256),
            username=_clean(user.username, 64),
            language_code=_clean(user.language_code, 16),
            is_premium=user.is_premium,
        )


def _clean(value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    return value.replace("\x00", "")[:limit]


class _PiggybackUsers(UserRepository):
    """Interim shim until ``UserRepository.get_or_create_from_telegram`` takes ``also=``.

    The warm path is the repository's own (one GET + the last-seen HSET), with the throttle's
    commands added to the same pipeline; a new or changed user falls through to the
    repository's method (one more round trip, on the cold path only). Delete when the
    repository grows the parameter: ``_repository_takes_also`` then routes around this.
    """

    async def get_or_create_piggyback(
        self, tg_user: CleanProfile, also: Sequence[SideCommand]
    ) -> tuple[UserData, bool]:
        stamp = time.time()
        data = await self._cached(
            tg_user.id, also=(self.last_seen_command(tg_user.id, stamp), *also)
        )
        if data is not None and not _users._profile_changed(data, _users._profile(tg_user)):
            return data, False
        return await self.get_or_create_from_telegram(tg_user, seen_at=stamp)


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
        profile = CleanProfile.of(tg_user)
        if throttled and self.piggyback:
            probe = self.app.throttle.probe(tg_user.id)
            user, _created = await users.get_or_create_from_telegram(  # type: ignore[call-arg]
                profile, also=probe.commands
            )
            decision = probe.decision
        elif throttled and self.app.throttle.piggyback:
            probe = self.app.throttle.probe(tg_user.id)
            shim = _PiggybackUsers(repos.session, self.app.data)
            user, _created = await shim.get_or_create_piggyback(profile, probe.commands)
            decision = probe.decision
        else:
            if throttled:
                decision = await self.app.throttle.check(tg_user.id)
            user, _created = await users.get_or_create_from_telegram(profile)
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
