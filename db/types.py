"""Domain value types shared by db/, jobs/ and bot/.

They live in db/ because dependencies point one way (bot -> db -> cache): the bot's generators
and handlers import these, the repositories store them, and nothing here imports the bot.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

#: When the daily push goes out for someone who never chose an hour (local time of day). The
#: one place that says it: the column's server default and UserData's default read it.
DEFAULT_PUSH_TIME = dt.time(9, 0)


class Sign(StrEnum):
    """The twelve zodiac signs, in zodiac order (the order of the keyboard)."""

    ARIES = "aries"
    TAURUS = "taurus"
    GEMINI = "gemini"
    CANCER = "cancer"
    LEO = "leo"
    VIRGO = "virgo"
    LIBRA = "libra"
    SCORPIO = "scorpio"
    SAGITTARIUS = "sagittarius"
    CAPRICORN = "capricorn"
    AQUARIUS = "aquarius"
    PISCES = "pisces"

    @classmethod
    def parse(cls, value: str) -> Sign | None:
        """Exact (case-insensitive) match of the English id; None for anything else."""
        try:
            return cls(value.strip().lower())
        except ValueError:
            return None


class Lang(StrEnum):
    RU = "ru"
    EN = "en"

    @classmethod
    def parse(cls, value: str | None) -> Lang | None:
        if not value:
            return None
        try:
            return cls(value.strip().lower())
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class GeneratedHoroscope:
    """What a generator returns.

    ``is_fallback`` marks the built-in text served because the configured model failed: the
    repository then keeps it in Redis for a few minutes only and does not persist it, so the
    model is asked again later instead of the fallback becoming the day's text forever.
    """

    text: str
    generator: str
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    is_fallback: bool = False


class HoroscopeGenerator(Protocol):
    """The one interface every horoscope source implements."""

    name: str

    async def generate(self, sign: Sign, date: dt.date, lang: Lang) -> GeneratedHoroscope: ...
