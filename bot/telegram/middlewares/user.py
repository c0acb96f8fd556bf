"""The current user of every update, and the per-user throttle, in one Redis round trip.

``UserRepository.get_or_create_from_telegram`` returns the cached user (Redis GET, last-seen
HSET in the same pipeline, no SQL for a known user whose profile did not change) or creates it
in the update's unit of work; the repository cleans the profile (NULs removed, lengths capped).
A person seen again within a minute is not re-stamped (LAST_SEEN_EVERY): one command less.
The throttle's script rides in that same pipeline (the repository's ``also=``); its reply
reaches the throttle through ``SideCommand.on_result``.

A /today or /tomorrow of a person this process has seen lately rides that pipeline too: the
horoscope's MGET and its view's HINCRBY, chosen by the person's hint (sign, language, zone;
``HoroscopeService.prefetch``), go with the user GET, so a warm /today is ONE Redis round
trip. The handler uses the prefetched reply only if the user read in that same trip agrees
with the hint; a prefetch nobody used (a wrong hint, a throttled update, another handler)
has its view taken back here.

Throttled updates end here: the first update past the burst gets a polite notice, the rest are
dropped until the bucket refills. Inline queries (people type letter by letter), chosen inline
results (a view that must be counted) and chat-member changes are never throttled.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import structlog
from aiogram import BaseMiddleware
from aiogram.types import CallbackQuery, Message, TelegramObject, Update, User

from bot.domain.services.horoscope import Prefetched
from bot.domain.services.throttle import Decision
from bot.telegram.api import is_harmless
from bot.telegram.callbacks import DAY_COMMANDS, Day
from bot.telegram.middlewares.context import set_outcome
from bot.telegram.texts import texts
from db.repositories import Repositories

if TYPE_CHECKING:
    from bot.telegram.context import AppContext

__all__ = ["UserMiddleware"]

log = structlog.get_logger(__name__)

THROTTLED_TYPES = frozenset({"message", "callback_query", "edited_message"})

#: Seconds within which a person seen again is not re-stamped as "last seen" (an HSET per
#: update for someone reading and pressing buttons buys nothing: the stamp feeds daily
#: activity figures). Stamps are per process; the buffer keeps the newest of all of them.
LAST_SEEN_EVERY: Final = 60.0


def _command_day(update: Update) -> Day | None:
    """The day of a plain ``/today`` or ``/tomorrow`` (any case, arguments allowed, no
    ``@mention``) in a new message; None for anything else. Only a guess for the prefetch:
    the router decides what actually runs."""
    message = update.message
    text = message.text if message is not None else None
    if not text or text[0] != "/":
        return None
    return DAY_COMMANDS.get(text[1:].split(None, 1)[0].lower() if len(text) > 1 else "")


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
            kind = event.event_type if isinstance(event, Update) else ""
            if repos is not None and kind in THROTTLED_TYPES:
                # No person to read for (an anonymous admin or a channel writing in a group,
                # another bot): the handlers of messages and buttons need one. A press is
                # still answered so the client stops its spinner.
                set_outcome(data, "ignored")
                log.info("update_without_person", type=kind)
                if isinstance(event, Update) and event.callback_query is not None:
                    with contextlib.suppress(Exception):
                        await event.callback_query.answer()
                return None
            return await handler(event, data)
        app = self.app
        horoscopes = app.horoscopes
        kind = event.event_type if isinstance(event, Update) else ""
        throttled = kind in THROTTLED_TYPES
        decision = Decision.ALLOW
        # The throttle's script rides in the user GET's pipeline; its reply (on_result) sets
        # probe.decision, which stays ALLOW when Redis did not answer.
        probe = app.throttle.probe(tg_user.id) if throttled else None
        also = probe.commands if probe is not None else ()
        prefetched: Prefetched | None = None
        if kind == "message" and isinstance(event, Update) and app.redis is not None:
            day = _command_day(event)
            if day is not None:
                prefetched = horoscopes.prefetch(data["bot"].id, tg_user.id, day)
                if prefetched is not None:
                    also = (*also, *prefetched.commands)
        # last seen: stamped at most once a LAST_SEEN_EVERY per person by this process
        now = time.time()
        hint = horoscopes.hints.get(tg_user.id)
        stamped = hint[3] if hint is not None else None
        stamp = stamped is None or not 0 <= now - stamped < LAST_SEEN_EVERY
        user, _created = await repos.users.get_or_create_from_telegram(
            tg_user, seen_at=now, also=also, stamp_last_seen=stamp
        )
        if probe is not None:
            decision = probe.decision
        # A new or changed user was written: commit now, so the update does not pin a pooled
        # connection for the rest of its handling (see UnitOfWork).
        uow = data.get("uow")
        if uow is not None:
            await uow.commit()
        horoscopes.note_user(user, now if stamp or stamped is None else stamped)
        data["user"] = user
        lang = horoscopes.lang_for(user)
        data["lang"] = lang
        data["t"] = t = texts(lang)
        if decision is not Decision.ALLOW:
            if prefetched is not None:
                await horoscopes.discard(prefetched)
            set_outcome(data, "throttled")
            log.info("throttled", decision=decision.value)
            if isinstance(event, Update):
                await self._notify(event, decision, t.throttled)
            return None
        if prefetched is None:
            return await handler(event, data)
        data["prefetched"] = prefetched
        try:
            return await handler(event, data)
        finally:
            if not prefetched.consumed:  # another handler took the update, or none did
                await horoscopes.discard(prefetched)

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
