"""/settings and its buttons, /timezone, /hour, /lang, and a typed IANA zone name.

No FSM: "send me your zone" would need a state round trip to storage on every message. A zone
is either a button, ``/timezone Europe/Berlin``, or a plain message read as a zone:
- a valid IANA name anywhere (nobody types "Asia/Tbilisi" by accident);
- a text shaped like one ("Mars/Olympus"): meant as a zone, so it gets the zone error;
- any text that replies to the bot's question for a zone: the reply is what says the bot asked
  (a city name works there too: "Moscow"). The zone error asks again with ForceReply, so the
  next thing the person types is such a reply without them having to choose "Reply".
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import structlog
from aiogram import Bot, F
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, ForceReply, InlineKeyboardMarkup, Message

from bot.domain.clock import local_now, looks_like_zone, parse_zone, zone_for_place
from bot.telegram.api import is_harmless, is_not_modified, with_retry
from bot.telegram.callbacks import MenuAction, MenuCB, SetCB, Setting
from bot.telegram.handlers.common import (
    RouterFactory,
    accessible,
    answer_callback,
    chat_id_of,
    push_note,
    shows,
    user_zone,
)
from bot.telegram.keyboards import settings_keyboard, timezone_keyboard
from bot.telegram.texts import TEXTS, Texts, escape, is_zone_question, texts
from db.repositories import Repositories, UserData
from db.types import Lang

if TYPE_CHECKING:
    from bot.telegram.context import AppContext
    from bot.telegram.middlewares.uow import UnitOfWork

__all__ = ["router"]

log = structlog.get_logger(__name__)

router = RouterFactory("settings")


def settings_view(app: AppContext, user: UserData) -> tuple[str, InlineKeyboardMarkup]:
    lang = app.horoscopes.lang_for(user)
    t = texts(lang)
    hour = user.push_time.hour
    push = t.settings_push_on.format(hour=hour) if user.push_enabled else t.settings_push_off
    text = t.settings.format(lang=TEXTS[lang].lang_name, tz=escape(user_zone(app, user)), push=push)
    return text, settings_keyboard(lang, user.push_enabled, hour)


async def _edit(
    bot: Bot, chat_id: int, message: Message | None, text: str, markup: InlineKeyboardMarkup
) -> bool:
    """Show a settings view in place of a text message, or as a new message under a picture
    (a caption is not the place for settings) or when the old message is gone.

    False when the message shows this view already: nothing is sent (Telegram would refuse
    the edit as "not modified"), and the caller answers the button quietly.
    """
    if message is not None and message.text is not None:
        if shows(message, text, markup):
            return False
        try:
            await with_retry(lambda: message.edit_text(text, reply_markup=markup), what="settings")
            return True
        except Exception as exc:
            if not is_harmless(exc):
                raise
            if is_not_modified(exc):  # changed between the press and now: shown all the same
                return False
    await with_retry(lambda: bot.send_message(chat_id, text, reply_markup=markup), what="settings")
    return True


@router.message(Command("settings", ignore_case=True))
async def settings_command(message: Message, app: AppContext, user: UserData) -> None:
    text, markup = settings_view(app, user)
    await with_retry(lambda: message.answer(text, reply_markup=markup), what="settings")


@router.callback_query(MenuCB.filter(F.action == MenuAction.SETTINGS))
async def settings_back(query: CallbackQuery, bot: Bot, app: AppContext, user: UserData) -> None:
    text, markup = settings_view(app, user)
    await _edit(bot, chat_id_of(query), accessible(query.message), text, markup)
    await answer_callback(query)


@router.callback_query(MenuCB.filter(F.action == MenuAction.TIMEZONES))
async def timezones(
    query: CallbackQuery, bot: Bot, app: AppContext, user: UserData, t: Texts, lang: Lang
) -> None:
    await _edit(
        bot,
        chat_id_of(query),
        accessible(query.message),
        t.tz_choose,
        timezone_keyboard(lang, user_zone(app, user)),
    )
    await answer_callback(query)


def _hour(value: str) -> int | None:
    """A push hour typed or pressed: "0" to "23", else None."""
    if not value.isdigit() or not 0 <= int(value) <= 23:
        return None
    return int(value)


def _zone_saved(app: AppContext, user: UserData) -> str:
    t = texts(app.horoscopes.lang_for(user))
    zone = user_zone(app, user)
    now = local_now(app.now(), zone, app.settings.bot_timezone)
    return t.tz_saved.format(tz=escape(zone), time=now.strftime("%H:%M"))


async def _save_zone(
    app: AppContext, repos: Repositories, uow: UnitOfWork, user: UserData, zone: str
) -> tuple[UserData, str]:
    """Write and commit the zone (unless it is the user's already); the user and the "saved,
    it is HH:MM there" note."""
    if user.timezone != zone:
        user = await repos.users.set_timezone(user.id, zone)
        await uow.commit()
    return user, _zone_saved(app, user)


async def _reply_zone_saved(
    message: Message,
    app: AppContext,
    repos: Repositories,
    uow: UnitOfWork,
    user: UserData,
    zone: str,
) -> None:
    _user, saved = await _save_zone(app, repos, uow, user, zone)
    await with_retry(lambda: message.answer(saved), what="tz_saved")


@router.callback_query(SetCB.filter())
async def change_setting(
    query: CallbackQuery,
    callback_data: SetCB,
    bot: Bot,
    app: AppContext,
    repos: Repositories,
    user: UserData,
    t: Texts,
    uow: UnitOfWork,
) -> None:
    """Set what the button says (its value: a language, a zone, push on/off, an hour), then
    show the settings. Pressing what is already set changes nothing and sends nothing."""
    setting, value = callback_data.setting, callback_data.value
    note: str | None = None
    if setting is Setting.LANG:
        lang = Lang.parse(value)
        if lang is None or lang not in app.settings.enabled_langs:
            await answer_callback(query, t.unknown_button)
            return
        if user.lang is not lang:
            user = await repos.users.set_lang(user.id, lang)
            await uow.commit()
        note = TEXTS[lang].lang_saved
    elif setting is Setting.PUSH:
        if user.push_enabled is not (value == "1"):
            user = await repos.users.set_push(user.id, value == "1")
            await uow.commit()
    elif setting is Setting.HOUR:
        hour = _hour(value)
        if hour is None:
            await answer_callback(query, t.unknown_button)
            return
        if not user.push_enabled or user.push_time != dt.time(hour):
            user = await repos.users.set_push(user.id, True, dt.time(hour))
            await uow.commit()
    elif setting is Setting.TZ:
        zone = parse_zone(value)
        if zone is None:
            await answer_callback(query, t.unknown_button)
            return
        user, note = await _save_zone(app, repos, uow, user, zone)
    if setting in (Setting.PUSH, Setting.HOUR):
        # set_push leaves the language alone: this is ``t``'s language, as before.
        note = push_note(texts(app.horoscopes.lang_for(user)), user, user_zone(app, user))
    text, markup = settings_view(app, user)
    shown = await _edit(bot, chat_id_of(query), accessible(query.message), text, markup)
    await answer_callback(query, note[:200] if note and shown else None)


@router.message(Command("timezone", "tz", ignore_case=True))
async def timezone_command(
    message: Message,
    command: CommandObject,
    app: AppContext,
    repos: Repositories,
    user: UserData,
    t: Texts,
    lang: Lang,
    uow: UnitOfWork,
) -> None:
    value = (command.args or "").strip()
    if not value:
        markup = timezone_keyboard(lang, user_zone(app, user))
        await with_retry(lambda: message.answer(t.tz_choose, reply_markup=markup), what="tz")
        return
    zone = parse_zone(value)
    if zone is None:
        await _reply_zone_unknown(message, t, value)
        return
    await _reply_zone_saved(message, app, repos, uow, user, zone)


async def _reply_zone_unknown(message: Message, t: Texts, value: str) -> None:
    """The zone error, which asks again: ForceReply makes the next text a reply to it."""
    text = t.tz_unknown.format(value=escape(value[:64]))
    markup = ForceReply(input_field_placeholder=t.tz_placeholder)
    await with_retry(lambda: message.answer(text, reply_markup=markup), what="tz_unknown")


def _answers_zone_question(message: Message, bot_id: int) -> bool:
    asked = message.reply_to_message
    return (
        asked is not None
        and asked.from_user is not None
        and asked.from_user.id == bot_id
        and is_zone_question(asked.text)
    )


def zone_answer(message: Message, bot: Bot) -> dict[str, Any] | bool:
    """Filter: a message read as a zone (see the module docstring); ``zone`` is None when it
    names none. Commands are never zone answers."""
    text = (message.text or "").strip()
    if not text or text.startswith("/"):
        return False
    zone = parse_zone(text)
    if zone is not None:
        return {"zone": zone}
    if _answers_zone_question(message, bot.id):
        return {"zone": zone_for_place(text)}
    if looks_like_zone(text):
        return {"zone": None}
    return False


@router.message(zone_answer)
async def typed_zone(
    message: Message,
    zone: str | None,
    app: AppContext,
    repos: Repositories,
    user: UserData,
    t: Texts,
    uow: UnitOfWork,
) -> None:
    if zone is None:
        await _reply_zone_unknown(message, t, (message.text or "").strip())
        return
    await _reply_zone_saved(message, app, repos, uow, user, zone)


@router.message(Command("hour", ignore_case=True))
async def hour_command(
    message: Message,
    command: CommandObject,
    app: AppContext,
    repos: Repositories,
    user: UserData,
    t: Texts,
    uow: UnitOfWork,
) -> None:
    hour = _hour((command.args or "").strip().removesuffix(":00"))
    if hour is None:
        await with_retry(lambda: message.answer(t.hour_usage), what="hour_usage")
        return
    user = await repos.users.set_push(user.id, True, dt.time(hour))
    await uow.commit()
    text = t.hour_saved.format(hour=user.push_time.hour, tz=escape(user_zone(app, user)))
    await with_retry(lambda: message.answer(text), what="hour_saved")


@router.message(Command("lang", "language", ignore_case=True))
async def lang_command(
    message: Message,
    command: CommandObject,
    app: AppContext,
    repos: Repositories,
    user: UserData,
    uow: UnitOfWork,
) -> None:
    lang = Lang.parse(command.args)
    if lang is None or lang not in app.settings.enabled_langs:
        text, markup = settings_view(app, user)
        await with_retry(lambda: message.answer(text, reply_markup=markup), what="settings")
        return
    user = await repos.users.set_lang(user.id, lang)
    await uow.commit()
    await with_retry(lambda: message.answer(TEXTS[lang].lang_saved), what="lang_saved")
