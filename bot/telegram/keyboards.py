"""Inline keyboards. Pure functions of (language, state) so they are unit-testable and so that
a re-render of an unchanged message produces byte-identical markup (which is what lets a
handler see that a screen is unchanged and not send the edit at all).

A button that changes a setting carries the value it sets (SetCB value, MenuCB PUSH_ON /
PUSH_OFF), never "toggle": a button under an old message acts on what it showed."""

from __future__ import annotations

from functools import cache

from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from bot.domain.zodiac import sign_label
from bot.telegram.callbacks import Day, DayCB, MenuAction, MenuCB, SetCB, Setting, SignCB
from bot.telegram.texts import TEXTS, texts
from db.types import Lang, Sign

__all__ = [
    "COMMON_ZONES",
    "PUSH_HOURS",
    "horoscope_keyboard",
    "push_button_data",
    "settings_keyboard",
    "sign_keyboard",
    "timezone_keyboard",
]

#: Zones offered as buttons; any other IANA name can be typed.
COMMON_ZONES: tuple[str, ...] = (
    "Europe/Kaliningrad",
    "Europe/Moscow",
    "Europe/Samara",
    "Asia/Yekaterinburg",
    "Asia/Omsk",
    "Asia/Novosibirsk",
    "Asia/Krasnoyarsk",
    "Asia/Irkutsk",
    "Asia/Vladivostok",
    "Europe/Kyiv",
    "Europe/Minsk",
    "Asia/Almaty",
    "Asia/Tbilisi",
    "Europe/London",
    "Europe/Berlin",
    "America/New_York",
    "America/Los_Angeles",
    "UTC",
)

#: Hours offered for the daily push; /hour N sets any other.
PUSH_HOURS: tuple[int, ...] = (7, 8, 9, 10, 12, 18, 20, 21)

SIGNS_PER_ROW = 3


def _button(text: str, data: str) -> InlineKeyboardButton:
    return InlineKeyboardButton(text=text, callback_data=data)


@cache
def sign_keyboard(lang: Lang) -> InlineKeyboardMarkup:
    """Twelve signs, three per row, in zodiac order: symbol and localised name.

    Built once per language: the markup is a frozen model that nobody mutates, and a warm
    update should not pay for 13 pydantic models and 12 callback packs."""
    signs = list(Sign)
    rows = [
        [
            _button(sign_label(sign, lang), SignCB(sign=sign).pack())
            for sign in signs[i : i + SIGNS_PER_ROW]
        ]
        for i in range(0, len(signs), SIGNS_PER_ROW)
    ]
    return InlineKeyboardMarkup(inline_keyboard=rows)


def horoscope_keyboard(
    lang: Lang, sign: Sign, day: Day, push_enabled: bool
) -> InlineKeyboardMarkup:
    """Today / Tomorrow (the shown one marked), Change sign, Daily push on/off.

    One shared (frozen) markup per (lang, sign, day, push): 2 x 12 x 2 x 2 = 96 at most, built
    on first use; /today is the hottest path and each build is 9 pydantic models."""
    return _horoscope_keyboard(lang, sign, day, bool(push_enabled))


@cache
def _horoscope_keyboard(
    lang: Lang, sign: Sign, day: Day, push_enabled: bool
) -> InlineKeyboardMarkup:
    t = texts(lang)
    today = ("• " if day is Day.TODAY else "") + t.btn_today
    tomorrow = ("• " if day is Day.TOMORROW else "") + t.btn_tomorrow
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                _button(today, DayCB(day=Day.TODAY, sign=sign).pack()),
                _button(tomorrow, DayCB(day=Day.TOMORROW, sign=sign).pack()),
            ],
            [_button(t.btn_change_sign, MenuCB(action=MenuAction.CHANGE_SIGN).pack())],
            [
                _button(
                    t.btn_push_on if push_enabled else t.btn_push_off,
                    push_button_data(push_enabled),
                )
            ],
        ]
    )


def push_button_data(push_enabled: bool) -> str:
    """The daily-push button's data: what pressing it sets (the opposite of what it shows)."""
    return MenuCB(action=MenuAction.PUSH_OFF if push_enabled else MenuAction.PUSH_ON).pack()


def settings_keyboard(lang: Lang, push_enabled: bool, push_hour: int) -> InlineKeyboardMarkup:
    t = texts(lang)
    langs = [
        _button(
            ("• " if code is lang else "") + TEXTS[code].lang_name,
            SetCB(setting=Setting.LANG, value=code.value).pack(),
        )
        for code in Lang
    ]
    push = _button(
        t.btn_push_on if push_enabled else t.btn_push_off,
        SetCB(setting=Setting.PUSH, value="0" if push_enabled else "1").pack(),
    )
    hours = [
        _button(
            ("• " if hour == push_hour else "") + f"{hour:02d}:00",
            SetCB(setting=Setting.HOUR, value=str(hour)).pack(),
        )
        for hour in PUSH_HOURS
    ]
    return InlineKeyboardMarkup(
        inline_keyboard=[
            langs,
            [push],
            hours[:4],
            hours[4:],
            [_button(t.btn_timezone, MenuCB(action=MenuAction.TIMEZONES).pack())],
        ]
    )


def timezone_keyboard(lang: Lang, current: str) -> InlineKeyboardMarkup:
    rows: list[list[InlineKeyboardButton]] = []
    for i in range(0, len(COMMON_ZONES), 2):
        rows.append(
            [
                _button(
                    ("• " if zone == current else "") + zone.rsplit("/", 1)[-1].replace("_", " "),
                    SetCB(setting=Setting.TZ, value=zone).pack(),
                )
                for zone in COMMON_ZONES[i : i + 2]
            ]
        )
    rows.append([_button(texts(lang).btn_back, MenuCB(action=MenuAction.SETTINGS).pack())])
    return InlineKeyboardMarkup(inline_keyboard=rows)
