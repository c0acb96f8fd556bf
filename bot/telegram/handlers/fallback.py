"""What nobody else handled: a hint for messages, a quiet answer for stale buttons, and the
bot being blocked or unblocked (my_chat_member)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
from aiogram.types import CallbackQuery, ChatMemberUpdated, Message

from bot.telegram.api import with_retry
from bot.telegram.handlers.common import RouterFactory, answer_callback
from bot.telegram.texts import Texts
from db.repositories import Repositories

if TYPE_CHECKING:
    from bot.telegram.context import AppContext

__all__ = ["router"]

log = structlog.get_logger(__name__)

router = RouterFactory("fallback")

GONE = frozenset({"kicked", "left"})


@router.message()
async def hint(message: Message, t: Texts) -> None:
    await with_retry(lambda: message.answer(t.hint), what="hint")


@router.callback_query()
async def stale_button(query: CallbackQuery, t: Texts) -> None:
    log.info("unknown_callback", data=(query.data or "")[:64])
    await answer_callback(query, t.unknown_button)


@router.my_chat_member()
async def membership(event: ChatMemberUpdated, app: AppContext, repos: Repositories) -> None:
    status = event.new_chat_member.status
    if event.chat.type != "private":
        return
    if status in GONE:
        log.info("bot_blocked", chat_id=event.chat.id)
        await repos.users.disable_push(event.from_user.id)
    else:
        log.info("bot_unblocked", chat_id=event.chat.id, status=str(status))
