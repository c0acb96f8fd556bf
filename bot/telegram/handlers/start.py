"""/start (with deep links ``/start leo``), /sign and choosing a sign."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
from aiogram import Bot, F
from aiogram.filters import Command, CommandObject, CommandStart
from aiogram.types import CallbackQuery, Message

from bot.domain.zodiac import parse_sign, sign_label
from bot.telegram.api import with_retry
from bot.telegram.callbacks import Day, MenuAction, MenuCB, SignCB
from bot.telegram.handlers.common import (
    RouterFactory,
    accessible,
    answer_callback,
    chat_id_of,
    quietly,
)
from bot.telegram.keyboards import sign_keyboard
from bot.telegram.texts import Texts, escape
from db.repositories import Repositories, UserData
from db.types import Lang, Sign

if TYPE_CHECKING:
    from bot.telegram.context import AppContext
    from bot.telegram.middlewares.uow import UnitOfWork

__all__ = ["router"]

log = structlog.get_logger(__name__)

router = RouterFactory("start")

COSMIC = "cosmic"


async def _save_sign(repos: Repositories, uow: UnitOfWork, user: UserData, sign: Sign) -> UserData:
    """The user with ``sign`` chosen: written and committed only when it changed."""
    if user.zodiac_sign is sign:
        return user
    user = await repos.users.set_sign(user.id, sign)
    await uow.commit()
    return user


@router.message(CommandStart(ignore_case=True))
async def start(
    message: Message,
    command: CommandObject,
    bot: Bot,
    app: AppContext,
    repos: Repositories,
    user: UserData,
    t: Texts,
    lang: Lang,
    uow: UnitOfWork,
) -> None:
    payload = (command.args or "").strip()
    sign = parse_sign(payload.replace("_", " ")) if payload else None
    if sign is not None:
        user = await _save_sign(repos, uow, user, sign)
        await app.horoscopes.send(bot, message.chat.id, user, sign, Day.TODAY)
        return
    if payload:
        log.info("unknown_start_payload", payload=payload[:64])
    name = escape(message.from_user.first_name if message.from_user else "")
    if user.zodiac_sign is None:
        caption = t.welcome_new.format(name=name)
        markup = sign_keyboard(lang)
    else:
        caption = t.welcome_back.format(name=name, sign=escape(sign_label(user.zodiac_sign, lang)))
        markup = None
    if payload:
        caption = f"{caption}\n\n{t.unknown_start_payload}"
        markup = markup or sign_keyboard(lang)
    asset = app.images.random_asset(COSMIC, app.rng)
    if asset is None:  # no pictures installed: still greet
        await with_retry(lambda: message.answer(caption, reply_markup=markup), what="welcome")
        return
    await app.images.send_photo(bot, message.chat.id, asset, caption=caption, reply_markup=markup)


@router.message(Command("sign", ignore_case=True))
async def sign_command(message: Message, t: Texts, lang: Lang) -> None:
    await with_retry(
        lambda: message.answer(t.choose_sign, reply_markup=sign_keyboard(lang)), what="sign"
    )


@router.callback_query(MenuCB.filter(F.action == MenuAction.CHANGE_SIGN))
async def change_sign(query: CallbackQuery, bot: Bot, t: Texts, lang: Lang) -> None:
    chat_id = chat_id_of(query)
    await with_retry(
        lambda: bot.send_message(chat_id, t.choose_sign, reply_markup=sign_keyboard(lang)),
        what="sign",
    )
    await answer_callback(query)


@router.callback_query(SignCB.filter())
async def chose_sign(
    query: CallbackQuery,
    callback_data: SignCB,
    bot: Bot,
    app: AppContext,
    repos: Repositories,
    user: UserData,
    t: Texts,
    lang: Lang,
    uow: UnitOfWork,
) -> None:
    sign: Sign = callback_data.sign
    user = await _save_sign(repos, uow, user, sign)
    message = accessible(query.message)
    if message is not None and message.photo:
        # The welcome picture carried the keyboard: it becomes the horoscope.
        await app.horoscopes.edit(bot, message, user, sign, Day.TODAY)
    else:
        if message is not None:
            # The "choose your sign" text: say what was chosen, drop the keyboard.
            saved = t.sign_saved.format(sign=escape(sign_label(sign, lang)))
            await quietly(lambda: message.edit_text(saved), what="sign_saved")
        await app.horoscopes.send(bot, chat_id_of(query), user, sign, Day.TODAY)
    await answer_callback(query)


@router.message(Command("help", ignore_case=True))
async def help_command(message: Message, bot: Bot, t: Texts) -> None:
    me = await bot.me()  # cached by aiogram after the first call
    text = t.help.format(bot=escape(me.username or "bot"))
    await with_retry(lambda: message.answer(text), what="help")
