"""Chat prompts for the LLM generator, one pair (system, user) per language.

The section labels are the built-in generator's, so a user sees the same layout whichever
generator wrote the day's text (and a fallback text does not look out of place).

The model is told never to name a day relative to the reader: the text is stored per (sign,
date, lang) and read both the day before (as "tomorrow") and on the day (as "today"), so
"today" or «завтра» in it would be wrong on one of the two. It may name the weekday instead.
Validation (``validation.clean_output``) rejects an answer that does it anyway.
"""

from __future__ import annotations

import datetime as dt

from bot.domain.generation.template import SECTION_LABELS, sign_title
from db.types import Lang, Sign

__all__ = ["build_messages", "format_date"]

_MONTHS_RU_GEN = (
    "января", "февраля", "марта", "апреля", "мая", "июня",
    "июля", "августа", "сентября", "октября", "ноября", "декабря",
)  # fmt: skip
_WEEKDAYS_RU = ("понедельник", "вторник", "среда", "четверг", "пятница", "суббота", "воскресенье")
# After «в»: the accusative ("в среду", "в пятницу").
_WEEKDAYS_RU_ACC = (
    "понедельник", "вторник", "среду", "четверг", "пятницу", "субботу", "воскресенье",
)  # fmt: skip
_MONTHS_EN = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
_WEEKDAYS_EN = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

_SYSTEM = {
    Lang.EN: (
        "You are a warm, thoughtful astrologer who writes short daily horoscopes for a Telegram "
        "bot. Write in English. Plain text only: no Markdown, no lists, no asterisks, no "
        'hashes, no emoji. Address the reader as "you". Never mention that you are an AI or a '
        "language model, and never refuse: this is light entertainment."
    ),
    Lang.RU: (
        "Ты — доброжелательный и вдумчивый астролог, который пишет короткие ежедневные гороскопы "
        "для Telegram-бота. Пиши по-русски, грамотно, обращайся к читателю на «вы». Только "
        "обычный текст: без Markdown, списков, звёздочек, решёток и эмодзи. Никогда не упоминай, "
        "что ты ИИ или языковая модель, и не отказывайся: это лёгкое развлечение."
    ),
}


def format_date(date: dt.date, lang: Lang) -> str:
    """A human date with the weekday ("среда, 12 марта 2025 года" / "Wednesday, 12 March 2025")."""
    if lang is Lang.RU:
        month = _MONTHS_RU_GEN[date.month - 1]
        return f"{_WEEKDAYS_RU[date.weekday()]}, {date.day} {month} {date.year} года"
    return f"{_WEEKDAYS_EN[date.weekday()]}, {date.day} {_MONTHS_EN[date.month - 1]} {date.year}"


def _user_prompt(sign: Sign, date: dt.date, lang: Lang) -> str:
    day, love, work, health, number, colour = SECTION_LABELS[lang]
    title = sign_title(sign, lang)
    when = format_date(date, lang)
    if lang is Lang.RU:
        return (
            f"Напиши гороскоп для знака {title} на {when}. Объём — от 400 до 800 символов. "
            f"Разделы, каждый с новой строки и со своей меткой: «{day}», «{love}», «{work}», "
            f"«{health}», а в конце одна строка «{number} N. {colour} …». Пиши конкретно, тепло "
            "и практично, без фатализма, без медицинских и финансовых обещаний. Текст читают и "
            "накануне, и в сам день, поэтому не пиши «сегодня», «завтра», «вчера», «этим вечером» "
            f"и других слов, отсчитывающих дни от читателя; если нужно назвать день, пиши "
            f"«в {_WEEKDAYS_RU_ACC[date.weekday()]}»."
        )
    return (
        f"Write the horoscope for {title} for {when}. Length: 400 to 800 characters. Use these "
        f'sections, each on a new line starting with its label: "{day}", "{love}", "{work}", '
        f'"{health}", and finish with one line "{number} N. {colour} ...". Be specific, kind and '
        "practical; no fatalism, no medical or financial promises. The text is read both the day "
        'before and on the day itself, so never write "today", "tomorrow", "tonight", '
        '"yesterday", "this evening" or any other word that counts days from the reader; if you '
        f'need to name the day, say "on {_WEEKDAYS_EN[date.weekday()]}".'
    )


def build_messages(sign: Sign, date: dt.date, lang: Lang) -> list[dict[str, str]]:
    """The ``messages`` array of a chat-completions request."""
    return [
        {"role": "system", "content": _SYSTEM[lang]},
        {"role": "user", "content": _user_prompt(sign, date, lang)},
    ]
