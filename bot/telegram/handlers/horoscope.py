"""/today, /tomorrow, the Today/Tomorrow buttons and the daily-push toggle under a horoscope."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import structlog
from aiogram import Bot, F
from aiogram.filters import Command
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from bot.domain.zodiac import parse_sign, sign_label
from bot.telegram.api import with_retry
from bot.telegram.callbacks import Day, DayCB, MenuAction, MenuCB
from bot.telegram.handlers.common import (
    RouterFactory,
    accessible,
    answer_callback,
    chat_id_of,
    push_note,
    quietly,
    user_zone,
)
from bot.telegram.keyboards import sign_keyboard
from bot.telegram.texts import Texts, texts, visible_header
from db.repositories import Repositories, UserData
from db.types import Lang, Sign

if TYPE_CHECKING:
    from bot.telegram.context import AppContext
    from bot.telegram.middlewares.uow import UnitOfWork

__all__ = ["router"]

log = structlog.get_logger(__name__)

router = RouterFactory("horoscope")


async def _show(message: Message, bot: Bot, app: AppContext, user: UserData, day: Day) -> None:
    if user.zodiac_sign is None:
        lang = app.horoscopes.lang_for(user)
        t = texts(lang)
        await with_retry(
            lambda: message.answer(t.need_sign, reply_markup=sign_keyboard(lang)), what="need_sign"
        )
        return
    await app.horoscopes.send(bot, message.chat.id, user, user.zodiac_sign, day)


@router.message(Command("today", ignore_case=True))
async def today(message: Message, bot: Bot, app: AppContext, user: UserData) -> None:
    await _show(message, bot, app, user, Day.TODAY)


@router.message(Command("tomorrow", ignore_case=True))
async def tomorrow(message: Message, bot: Bot, app: AppContext, user: UserData) -> None:
    await _show(message, bot, app, user, Day.TOMORROW)


@router.message(F.text.func(lambda text: parse_sign(text) is not None))
async def typed_sign(
    message: Message,
    bot: Bot,
    app: AppContext,
    repos: Repositories,
    user: UserData,
    uow: UnitOfWork,
) -> None:
    """A sign name typed (or pasted from the keyboard) instead of pressed: take it."""
    sign = parse_sign(message.text)
    assert sign is not None
    if user.zodiac_sign is not sign:
        user = await repos.users.set_sign(user.id, sign)
        await uow.commit()
    await app.horoscopes.send(bot, message.chat.id, user, sign, Day.TODAY)


_TITLES = tuple(sign_label(sign, lang) for sign in Sign for lang in Lang)


def _is_horoscope_text(message: Message) -> bool:
    """The text follow-up of a long horoscope (starts with a sign's title)."""
    return bool(message.text) and message.text.startswith(_TITLES)  # type: ignore[union-attr]


def _already_shown(message: Message, expected: str) -> bool:
    shown = message.caption if message.photo else message.text
    return bool(shown) and shown.startswith(expected)  # type: ignore[union-attr]


@router.callback_query(DayCB.filter())
async def switch_day(
    query: CallbackQuery,
    callback_data: DayCB,
    bot: Bot,
    app: AppContext,
    user: UserData,
    t: Texts,
    lang: Lang,
) -> None:
    sign, day = callback_data.sign, callback_data.day
    message = accessible(query.message)
    if message is None:
        # A button from a message Telegram no longer shows us: send a fresh one.
        await app.horoscopes.send(bot, chat_id_of(query), user, sign, day)
        await answer_callback(query, t.outdated_button)
        return
    if not message.photo and not _is_horoscope_text(message):
        # Buttons pasted under something else (or forged): show the horoscope as a new message.
        await app.horoscopes.send(bot, chat_id_of(query), user, sign, day)
        await answer_callback(query)
        return
    date: dt.date = app.horoscopes.date_for(user, day)
    word = t.today if day is Day.TODAY else t.tomorrow
    if _already_shown(message, visible_header(sign, date, word, lang)):
        await answer_callback(query)  # quietly: it is on screen already
        return
    changed = await app.horoscopes.edit(bot, message, user, sign, day)
    await answer_callback(query, None if changed else t.already_shown)


def _with_push_button(markup: InlineKeyboardMarkup, text: str) -> InlineKeyboardMarkup:
    push_data = MenuCB(action=MenuAction.PUSH).pack()
    rows = [
        [
            InlineKeyboardButton(text=text, callback_data=push_data)
            if button.callback_data == push_data
            else button
            for button in row
        ]
        for row in markup.inline_keyboard
    ]
    return InlineKeyboardMarkup(inline_keyboard=rows)


@router.callback_query(MenuCB.filter(F.action == MenuAction.PUSH))
async def toggle_push(
    query: CallbackQuery,
    app: AppContext,
    repos: Repositories,
    user: UserData,
    t: Texts,
    uow: UnitOfWork,
) -> None:
    user = await repos.users.set_push(user.id, not user.push_enabled)
    await uow.commit()
    note = push_note(t, user, user_zone(app, user))
    message = accessible(query.message)
    if message is not None and message.reply_markup is not None:
        markup = _with_push_button(
            message.reply_markup, t.btn_push_on if user.push_enabled else t.btn_push_off
        )
        await quietly(lambda: message.edit_reply_markup(reply_markup=markup), what="push")
    await answer_callback(query, note)
