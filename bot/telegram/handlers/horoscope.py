"""/today, /tomorrow, the Today/Tomorrow buttons and the daily-push button under a horoscope."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import structlog
from aiogram import Bot, F
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from bot.domain.zodiac import parse_sign, sign_label
from bot.telegram.api import with_retry
from bot.telegram.callbacks import DAY_COMMANDS, Day, DayCB, MenuAction, MenuCB
from bot.telegram.handlers.common import (
    RouterFactory,
    accessible,
    answer_callback,
    chat_id_of,
    push_note,
    quietly,
    same_markup,
    user_zone,
)
from bot.telegram.keyboards import push_button_data, sign_keyboard
from bot.telegram.texts import TEXTS, Texts, texts, visible_header
from db.repositories import Repositories, UserData
from db.types import Lang, Sign

if TYPE_CHECKING:
    from bot.domain.services.horoscope import Prefetched
    from bot.telegram.context import AppContext
    from bot.telegram.middlewares.uow import UnitOfWork

__all__ = ["router"]

log = structlog.get_logger(__name__)

router = RouterFactory("horoscope")


# ``prefetched``: the horoscope's reads sent along the user lookup (bot/telegram/middlewares/
# user.py); used only when they match what is shown here.
@router.message(Command(*DAY_COMMANDS, ignore_case=True))
async def day_command(
    message: Message,
    command: CommandObject,
    bot: Bot,
    app: AppContext,
    user: UserData,
    prefetched: Prefetched | None = None,
) -> None:
    """/today or /tomorrow."""
    if user.zodiac_sign is None:
        lang = app.horoscopes.lang_for(user)
        t = texts(lang)
        await with_retry(
            lambda: message.answer(t.need_sign, reply_markup=sign_keyboard(lang)), what="need_sign"
        )
        return
    day = DAY_COMMANDS[command.command.lower()]
    await app.horoscopes.send(
        bot, message.chat.id, user, user.zodiac_sign, day, prefetched=prefetched
    )


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


_PUSH_ACTIONS = (MenuAction.PUSH_ON, MenuAction.PUSH_OFF, MenuAction.PUSH)
_PUSH_DATA = frozenset(MenuCB(action=action).pack() for action in _PUSH_ACTIONS)
_PUSH_OFF_LABELS = frozenset(t.btn_push_off for t in TEXTS.values())
_PUSH_ON_LABELS = frozenset(t.btn_push_on for t in TEXTS.values())


def _wanted_push(action: MenuAction, pressed: str | None, message: Message | None) -> bool | None:
    """What the pressed button asked for: on, off, or None when that cannot be known.

    A PUSH_ON/PUSH_OFF button says it. A button sent before those existed (MenuAction.PUSH, a
    toggle) is read from its label as the message showed it: "off" asks to turn push on.
    """
    if action is not MenuAction.PUSH:
        return action is MenuAction.PUSH_ON
    markup = message.reply_markup if message is not None else None
    for row in markup.inline_keyboard if markup is not None else ():
        for button in row:
            if button.callback_data == pressed:
                if button.text in _PUSH_OFF_LABELS:
                    return True
                if button.text in _PUSH_ON_LABELS:
                    return False
    return None


def _with_push_button(
    markup: InlineKeyboardMarkup, t: Texts, push_enabled: bool
) -> InlineKeyboardMarkup:
    """``markup`` with its push button showing ``push_enabled`` (the other buttons as shown)."""
    label = t.btn_push_on if push_enabled else t.btn_push_off
    data = push_button_data(push_enabled)
    rows = [
        [
            InlineKeyboardButton(text=label, callback_data=data)
            if button.callback_data in _PUSH_DATA
            else button
            for button in row
        ]
        for row in markup.inline_keyboard
    ]
    return InlineKeyboardMarkup(inline_keyboard=rows)


@router.callback_query(MenuCB.filter(F.action.in_(_PUSH_ACTIONS)))
async def set_push(
    query: CallbackQuery,
    callback_data: MenuCB,
    app: AppContext,
    repos: Repositories,
    user: UserData,
    t: Texts,
    uow: UnitOfWork,
) -> None:
    """Daily push on or off, as the pressed button said; its button then shows the new state.

    A stale button (drawn "off" while push was turned on elsewhere) sets what it showed it
    would, so pressing it changes nothing but its label; an unchanged keyboard is not re-sent.
    """
    message = accessible(query.message)
    wanted = _wanted_push(callback_data.action, query.data, message)
    if wanted is not None and wanted != user.push_enabled:
        user = await repos.users.set_push(user.id, wanted)
        await uow.commit()
    if message is not None and message.reply_markup is not None:
        markup = _with_push_button(message.reply_markup, t, user.push_enabled)
        if not same_markup(markup, message.reply_markup):
            await quietly(lambda: message.edit_reply_markup(reply_markup=markup), what="push")
    await answer_callback(query, push_note(t, user, user_zone(app, user)))
