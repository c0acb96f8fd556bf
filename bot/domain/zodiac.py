"""Zodiac signs as people type and read them: symbols, localised names, forgiving parsing.

`db.types.Sign` is the storage id (English, lower case). People type "лев", "LEO", "♌",
"Scorp" or "ле" in inline mode, so everything a user can type goes through here: one place that
normalises case, "ё" and stray spaces, and knows both languages whatever the reader's language.
"""

from __future__ import annotations

import re

from db.types import Lang, Sign

__all__ = [
    "NAMES",
    "SYMBOLS",
    "match_signs",
    "normalize",
    "parse_sign",
    "sign_label",
    "sign_name",
]

SYMBOLS: dict[Sign, str] = {
    Sign.ARIES: "♈",
    Sign.TAURUS: "♉",
    Sign.GEMINI: "♊",
    Sign.CANCER: "♋",
    Sign.LEO: "♌",
    Sign.VIRGO: "♍",
    Sign.LIBRA: "♎",
    Sign.SCORPIO: "♏",
    Sign.SAGITTARIUS: "♐",
    Sign.CAPRICORN: "♑",
    Sign.AQUARIUS: "♒",
    Sign.PISCES: "♓",
}

NAMES: dict[Lang, dict[Sign, str]] = {
    Lang.EN: {
        Sign.ARIES: "Aries",
        Sign.TAURUS: "Taurus",
        Sign.GEMINI: "Gemini",
        Sign.CANCER: "Cancer",
        Sign.LEO: "Leo",
        Sign.VIRGO: "Virgo",
        Sign.LIBRA: "Libra",
        Sign.SCORPIO: "Scorpio",
        Sign.SAGITTARIUS: "Sagittarius",
        Sign.CAPRICORN: "Capricorn",
        Sign.AQUARIUS: "Aquarius",
        Sign.PISCES: "Pisces",
    },
    Lang.RU: {
        Sign.ARIES: "Овен",
        Sign.TAURUS: "Телец",
        Sign.GEMINI: "Близнецы",
        Sign.CANCER: "Рак",
        Sign.LEO: "Лев",
        Sign.VIRGO: "Дева",
        Sign.LIBRA: "Весы",
        Sign.SCORPIO: "Скорпион",
        Sign.SAGITTARIUS: "Стрелец",
        Sign.CAPRICORN: "Козерог",
        Sign.AQUARIUS: "Водолей",
        Sign.PISCES: "Рыбы",
    },
}

# Variation selectors and other invisible characters some keyboards add after emoji.
_INVISIBLE = re.compile("[\ufe0e\ufe0f\u200b-\u200d\u2060]")
_SPACES = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Case-folded, "ё" -> "е", invisible characters removed, spaces collapsed."""
    text = _INVISIBLE.sub("", text).casefold().replace("ё", "е")
    return _SPACES.sub(" ", text).strip()


def _build_index() -> dict[str, Sign]:
    index: dict[str, Sign] = {}
    for sign in Sign:
        index[sign.value] = sign
        index[SYMBOLS[sign]] = sign
        for lang in Lang:
            name = normalize(NAMES[lang][sign])
            index[name] = sign
            # The button label itself ("♌ Лев") typed or pasted back.
            index[f"{SYMBOLS[sign]} {name}"] = sign
    return index


_EXACT: dict[str, Sign] = _build_index()
# (normalised name, sign) for prefix search, in zodiac order so results keep that order.
_NAMES_FOR_PREFIX: tuple[tuple[str, Sign], ...] = tuple(
    (normalize(NAMES[lang][sign]), sign) for sign in Sign for lang in Lang
)


def sign_name(sign: Sign, lang: Lang) -> str:
    return NAMES[lang][sign]


def sign_label(sign: Sign, lang: Lang) -> str:
    """What a button or a header shows: symbol and localised name."""
    return f"{SYMBOLS[sign]} {NAMES[lang][sign]}"


def parse_sign(text: str | None) -> Sign | None:
    """An exact sign in any supported language, id, symbol or button label; else None.

    Used for deep-link payloads and typed messages, where a prefix would be a guess.
    """
    if not text:
        return None
    return _EXACT.get(normalize(text))


def match_signs(query: str | None) -> list[Sign]:
    """Signs whose name (ru or en), id or symbol starts with ``query``; all twelve if empty.

    For inline mode: "ле" -> [LEO], "SCO" -> [SCORPIO], "ко" -> [CAPRICORN], in zodiac order.
    An exact match wins alone: "рак" is only Cancer, "leo" only Leo.
    """
    q = normalize(query or "")
    if not q:
        return list(Sign)
    exact = _EXACT.get(q)
    if exact is not None:
        return [exact]
    found: list[Sign] = []
    for name, sign in _NAMES_FOR_PREFIX:
        if (name.startswith(q) or sign.value.startswith(q)) and sign not in found:
            found.append(sign)
    return found
