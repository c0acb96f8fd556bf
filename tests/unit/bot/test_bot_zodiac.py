"""Sign parsing as people type it: both languages, any case, symbols, prefixes."""

from __future__ import annotations

import pytest

from bot.domain.zodiac import NAMES, SYMBOLS, match_signs, normalize, parse_sign, sign_label
from db.types import Lang, Sign


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("leo", Sign.LEO),
        ("LEO", Sign.LEO),
        ("  Leo ", Sign.LEO),
        ("лев", Sign.LEO),
        ("ЛЕВ", Sign.LEO),
        ("♌", Sign.LEO),
        ("♌️", Sign.LEO),  # with a variation selector
        ("♌ Лев", Sign.LEO),
        ("♏ Scorpio", Sign.SCORPIO),
        ("Скорпион", Sign.SCORPIO),
        ("рыбы", Sign.PISCES),
        ("sagittarius", Sign.SAGITTARIUS),
        ("", None),
        (None, None),
        ("ле", None),  # exact parsing never guesses from a prefix
        ("dragon", None),
        ("leo; DROP TABLE", None),
    ],
)
def test_parse_sign(text: str | None, expected: Sign | None) -> None:
    assert parse_sign(text) is expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("ле", [Sign.LEO]),
        ("Ле", [Sign.LEO]),
        ("SCO", [Sign.SCORPIO]),
        ("sco", [Sign.SCORPIO]),
        ("ко", [Sign.CAPRICORN]),
        ("с", [Sign.SCORPIO, Sign.SAGITTARIUS]),
        ("c", [Sign.CANCER, Sign.CAPRICORN]),
        ("рак", [Sign.CANCER]),
        ("♓", [Sign.PISCES]),
        ("zzz", []),
    ],
)
def test_match_signs_prefix(query: str, expected: list[Sign]) -> None:
    assert match_signs(query) == expected


@pytest.mark.parametrize("query", ["", "   ", None])
def test_empty_query_gives_all_signs_in_order(query: str | None) -> None:
    assert match_signs(query) == list(Sign)


def test_every_sign_has_symbol_and_names() -> None:
    for sign in Sign:
        assert SYMBOLS[sign]
        for lang in Lang:
            assert NAMES[lang][sign]
            assert parse_sign(NAMES[lang][sign]) is sign
            assert parse_sign(sign_label(sign, lang)) is sign


def test_normalize_yo_and_spaces() -> None:
    assert normalize("  Ёлка\t и  Ель ") == "елка и ель"
