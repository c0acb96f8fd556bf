"""The last line: every exception a handler or middleware raised ends here.

Expected Telegram answers are not errors: the user blocked the bot (403: turn their push off),
the target message is gone or unchanged, a 429 that persisted after the one retry (the update is
dropped; answering would be another 429). Postgres unavailable (down, hung, overloaded: the
guard of db/guard.py says so at once) is not a bug either: the person is asked to try again in a
minute, in their language, and the log gets one INFO line (the outage itself is reported once by
bot/ops/outages.py). Anything else is logged once with a summary of the
update (never the token: the log pipeline masks it anyway) and the person gets "something went
wrong, try again" once; a failure to say so is swallowed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog
from aiogram import Bot
from aiogram.exceptions import TelegramForbiddenError, TelegramRetryAfter
from aiogram.types import ErrorEvent, Update

from bot.telegram.api import is_harmless
from bot.telegram.handlers.common import RouterFactory
from bot.telegram.texts import Texts, texts
from db.guard import is_unavailable
from db.unit_of_work import unit_of_work

if TYPE_CHECKING:
    from bot.telegram.context import AppContext

__all__ = ["router", "summarize"]

log = structlog.get_logger(__name__)

router = RouterFactory("errors")


def summarize(update: Update) -> dict[str, Any]:
    """What is worth logging about an update: ids, type, a bounded piece of the content."""
    kind = update.event_type
    out: dict[str, Any] = {"update_id": update.update_id, "update_type": kind}
    event = update.event
    user = getattr(event, "from_user", None)
    if user is not None:
        out["user_id"] = user.id
    if update.message is not None:
        out["text"] = (update.message.text or update.message.caption or "")[:200]
    elif update.callback_query is not None:
        out["data"] = (update.callback_query.data or "")[:64]
    elif update.inline_query is not None:
        out["query"] = update.inline_query.query[:64]
    return out


async def _disable_push(app: AppContext, user_id: int) -> None:
    from db.repositories import UserRepository

    try:
        async with unit_of_work(app.session_factory) as session:
            await UserRepository(session, app.data).disable_push(user_id)
    except Exception:
        log.exception("disable_push_failed", user_id=user_id)


@router.errors()
async def on_error(event: ErrorEvent, bot: Bot, app: AppContext, **data: Any) -> bool:
    exc = event.exception
    update = event.update
    info = summarize(update)
    if isinstance(exc, TelegramForbiddenError):
        log.info("user_blocked_bot", error=exc.message, **info)
        user_id = info.get("user_id")
        if user_id is not None:
            await _disable_push(app, user_id)
        if update.callback_query is not None:
            # The press still gets its answer (the spinner stops); answering a callback
            # query is not a message to the chat the person blocked.
            try:
                await bot.answer_callback_query(update.callback_query.id)
            except Exception as err:
                log.info("blocked_callback_answer_failed", error=repr(err))
        return True
    if is_harmless(exc):
        log.info("telegram_harmless_error", error=str(exc), **info)
        return True
    if isinstance(exc, TelegramRetryAfter):
        log.warning("update_dropped_rate_limited", retry_after=exc.retry_after, **info)
        return True
    t: Texts = data.get("t") or texts(
        app.horoscopes.lang_for(None, getattr(info_user(update), "language_code", None))
    )
    if is_unavailable(exc):
        log.info("update_db_unavailable", error=repr(exc), **info)
        await _apologise(bot, update, t.try_again_later)
        return True
    app.errors += 1
    log.error("update_failed", exc_info=exc, **info)
    await _apologise(bot, update, t.error)
    return True


def info_user(update: Update) -> Any:
    """The Telegram user of the update (their language when the bot has no row for them)."""
    return getattr(update.event, "from_user", None)


async def _apologise(bot: Bot, update: Update, text: str) -> None:
    try:
        if update.callback_query is not None:
            await bot.answer_callback_query(update.callback_query.id, text=text)
        elif update.message is not None:
            await bot.send_message(update.message.chat.id, text)
        elif update.inline_query is not None:
            # Never leave a query spinning: no results, not cached, so a retry asks again.
            await bot.answer_inline_query(
                update.inline_query.id, results=[], cache_time=0, is_personal=True
            )
    except Exception as err:  # saying sorry must not raise a second error
        log.info("error_notice_failed", error=repr(err))
