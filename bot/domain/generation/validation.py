"""Cleanup and validation of model output before it reaches users.

A model's answer is stored and served to everyone who asks for that sign and day, so a bad one
does damage for a whole day. Everything here is pure and total: any string either comes back as
clean plain text or raises :class:`InvalidOutputError` with a short machine-readable reason (used
in logs and metrics); nothing else may escape, because the caller's answer to a failure is the
built-in fallback text, not an exception in a Telegram handler.
"""

from __future__ import annotations

import re
import unicodedata

from db.types import Lang

__all__ = [
    "MAX_CHARS",
    "MIN_CHARS",
    "InvalidOutputError",
    "clean_output",
    "strip_markdown",
]

MIN_CHARS = 200
MAX_CHARS = 1500


class InvalidOutputError(ValueError):
    """The model answered, but the text is unusable; ``reason`` is a short stable label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Line and paragraph separators other than "\n" become "\n" so that lines mean one thing below.
_LINE_SEPARATORS = re.compile(r"\r\n|[\r\u2028\u2029\x85\x0b\x0c\x1c\x1d\x1e]")
_FENCE_LINE = re.compile(r"^[^\S\n]*(?:```|~~~)[^\n]*$", re.MULTILINE)
_IMAGE_OR_LINK = re.compile(r"!?\[([^\]\n]*)\]\([^)\n]*\)")
# Emphasis and code markers: the text is plain, so none of these characters is ever needed.
_EMPHASIS_CHARS = re.compile(r"[*`_]|~~")
# Headers (#), quotes (>) and bullets (-, +, •) at the start of a line, possibly nested.
_LINE_MARKER = re.compile(r"^[^\S\n]*(?:#+|>|[-+•](?=\s|$))[^\S\n]*", re.MULTILINE)
_RULE_LINE = re.compile(r"^[^\S\n]*(?:[-=][^\S\n]*){3,}$", re.MULTILINE)
_INLINE_SPACE = re.compile(r"[^\S\n]+")
_MANY_NEWLINES = re.compile(r"\n{3,}")

# Refusals and self-references that must never be shown as a horoscope. Matched on lower-cased
# text with "ё" folded to "е" and typographic apostrophes folded to "'".
_FORBIDDEN = re.compile(
    "|".join(
        (
            r"\bas an? (?:ai|artificial intelligence)\b",
            r"\bas an? (?:ai )?language model\b",
            r"\blanguage model\b",
            r"\bi(?:'m| am) (?:an? )?(?:ai|artificial intelligence|assistant|chatbot)\b",
            r"\bi (?:cannot|can't|can not|am unable to|'m unable to|won't be able to)\b",
            r"\b(?:openai|chatgpt)\b",
            r"\bкак (?:ии|ai|искусственный интеллект|нейросеть|ассистент)\b",
            r"\bкак языковая модель\b",
            r"\bязыков(?:ая|ой|ую) модел",
            r"\bя\s*(?:[-—–]\s*)?(?:ии|искусственный интеллект|нейросеть)\b",
            r"\bя не (?:могу|в состоянии|имею возможности)\b",
        )
    )
)


# Words that count days from the reader. A stored text is read on two days (the day before, as
# "tomorrow", and on the day, as "today"), so any of these is wrong on one of them. Matched on the
# same folded text as _FORBIDDEN ("ё" -> "е").
_RELATIVE_DAY = re.compile(
    "|".join(
        (
            r"\b(?:today|tonight|tomorrow|yesterday)(?:'s)?\b",
            r"\bthis (?:morning|afternoon|evening)\b",
            r"(?<!\w)(?:после|поза)?завтра(?!к)\w*",
            r"(?<!\w)(?:поза)?вчера\w*",
            r"(?<!\w)сегодня\w*",
            r"(?<!\w)нынче(?!\w)",
            r"(?<!\w)эт(?:им|ой) (?:утром|вечером|ночью)(?!\w)",
        )
    )
)


def _drop_control_chars(text: str) -> str:
    """Remove control characters and lone surrogates (Telegram rejects them, JSON allows them)."""
    return "".join(
        ch for ch in text if ch == "\n" or unicodedata.category(ch) not in ("Cc", "Cs", "Co")
    )


def strip_markdown(text: str) -> str:
    """Turn a model's (possibly markdown) answer into plain text with tidy whitespace.

    Models add headers, bold labels and bullets even when asked not to; the bot sends plain
    (HTML-escaped) text, where those markers would show up literally.
    """
    text = _LINE_SEPARATORS.sub("\n", text).replace("\t", " ")
    text = _drop_control_chars(text)
    text = _FENCE_LINE.sub("", text)
    text = _IMAGE_OR_LINK.sub(r"\1", text)
    text = _EMPHASIS_CHARS.sub("", text)
    # Markers can be nested ("> - # Title", "# ---"); each pass removes one level.
    while True:
        stripped = _LINE_MARKER.sub("", _RULE_LINE.sub("", text))
        if stripped == text:
            break
        text = stripped
    lines = [_INLINE_SPACE.sub(" ", line).strip() for line in text.split("\n")]
    return _MANY_NEWLINES.sub("\n\n", "\n".join(lines)).strip()


def _script_share(text: str, lang: Lang) -> float:
    """Share of letters in the expected script: a Russian request answered in English is wrong."""
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return 0.0
    if lang is Lang.RU:
        expected = sum(1 for ch in letters if "\u0400" <= ch <= "\u04ff")
    else:
        expected = sum(1 for ch in letters if ch.isascii())
    return expected / len(letters)


def clean_output(
    text: str,
    *,
    lang: Lang | None = None,
    min_chars: int = MIN_CHARS,
    max_chars: int = MAX_CHARS,
) -> str:
    """Return the cleaned text, or raise :class:`InvalidOutputError` if it must not be served.

    Checks, in order: something left after cleanup, no refusal / "as an AI" phrases, no word
    that counts days from the reader ("today", «завтра»: the text is read on two days), length
    within ``min_chars..max_chars``, and (when ``lang`` is given) mostly the right alphabet.
    """
    cleaned = strip_markdown(text)
    if not cleaned:
        raise InvalidOutputError("empty")
    folded = cleaned.lower().replace("ё", "е").replace("\u2019", "'").replace("\u02bc", "'")
    if _FORBIDDEN.search(folded):
        raise InvalidOutputError("refusal")
    if _RELATIVE_DAY.search(folded):
        raise InvalidOutputError("relative_day")
    if len(cleaned) < min_chars:
        raise InvalidOutputError("too_short")
    if len(cleaned) > max_chars:
        raise InvalidOutputError("too_long")
    if lang is not None and _script_share(cleaned, lang) < 0.6:
        raise InvalidOutputError("wrong_language")
    return cleaned
