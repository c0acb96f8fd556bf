"""Callback data of every inline button, as aiogram CallbackData factories.

Typed factories instead of hand-split strings: a handler filter (`SignCB.filter()`) only matches
data that unpacks into the declared fields, so a forged, truncated or years-old callback never
reaches a handler as garbage; it falls through to the "outdated button" handler instead. Prefixes
are short because Telegram allows 64 bytes of callback data.
"""

from __future__ import annotations

from enum import StrEnum

from aiogram.filters.callback_data import CallbackData

from db.types import Sign

__all__ = ["Day", "DayCB", "MenuAction", "MenuCB", "SetCB", "Setting", "SignCB"]


class Day(StrEnum):
    TODAY = "t"
    TOMORROW = "n"


#: The commands that show a day's horoscope (the handler and the user middleware's prefetch).
DAY_COMMANDS: dict[str, Day] = {"today": Day.TODAY, "tomorrow": Day.TOMORROW}


class MenuAction(StrEnum):
    CHANGE_SIGN = "sign"
    #: The daily-push button under a horoscope says what pressing it does (never "toggle"): a
    #: button drawn when push was off turns it on, even if push was turned on meanwhile.
    PUSH_ON = "on"
    PUSH_OFF = "off"
    #: Sent before PUSH_ON/PUSH_OFF (a toggle); the handler reads the label it showed instead.
    PUSH = "push"
    SETTINGS = "set"
    TIMEZONES = "tz"


class Setting(StrEnum):
    LANG = "l"
    TZ = "z"
    PUSH = "p"
    HOUR = "h"


class SignCB(CallbackData, prefix="s"):
    """A sign chosen on the 12-button keyboard."""

    sign: Sign


class DayCB(CallbackData, prefix="d"):
    """Today / Tomorrow under a horoscope; carries the sign the message shows."""

    day: Day
    sign: Sign


class MenuCB(CallbackData, prefix="m"):
    action: MenuAction


class SetCB(CallbackData, prefix="c"):
    """A settings change; ``value`` is a Lang, an IANA zone name, "0"/"1" or an hour."""

    setting: Setting
    value: str
