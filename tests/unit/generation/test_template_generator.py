"""The built-in generator: deterministic, in bounds, varied, sectioned, in the right alphabet.

Determinism matters because the text is cached and stored: two bot instances (or a restart)
must produce the same text for the same (sign, date, lang) without coordinating.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import re
import subprocess
import sys

import pytest

from bot.domain.generation.template import (
    MAX_LENGTH,
    MIN_LENGTH,
    SECTION_LABELS,
    TemplateGenerator,
    sign_title,
)
from db.types import GeneratedHoroscope, Lang, Sign

pytestmark = pytest.mark.unit

START = dt.date(2025, 3, 1)
DATES = [START + dt.timedelta(days=i) for i in range(30)]
GEN = TemplateGenerator()


def test_name_and_result_shape() -> None:
    assert GEN.name == "template"


async def test_generate_returns_generated_horoscope() -> None:
    result = await GEN.generate(Sign.LEO, START, Lang.EN)
    assert isinstance(result, GeneratedHoroscope)
    assert result.generator == "template"
    assert result.is_fallback is False
    assert result.text == GEN.render(Sign.LEO, START, Lang.EN)


@pytest.mark.parametrize("lang", list(Lang))
def test_deterministic_in_process(lang: Lang) -> None:
    for sign in Sign:
        assert GEN.render(sign, START, lang) == TemplateGenerator().render(sign, START, lang)


def test_deterministic_across_processes() -> None:
    """hash() is salted per process; the seed must not depend on it."""
    code = (
        "import datetime as dt;"
        "from bot.domain.generation.template import TemplateGenerator;"
        "from db.types import Sign, Lang;"
        "print(TemplateGenerator().render(Sign.VIRGO, dt.date(2025, 3, 1), Lang.RU), end='')"
    )
    env_a = {"PYTHONHASHSEED": "1"}
    env_b = {"PYTHONHASHSEED": "2"}
    outs = [
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            check=True,
            env={**_base_env(), **env},
        ).stdout.decode()
        for env in (env_a, env_b)
    ]
    assert outs[0] == outs[1] == GEN.render(Sign.VIRGO, START, Lang.RU)


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}


@pytest.mark.parametrize("lang", list(Lang))
def test_length_bounds_all_signs_thirty_days(lang: Lang) -> None:
    for sign in Sign:
        for date in DATES:
            text = GEN.render(sign, date, lang)
            assert MIN_LENGTH <= len(text) <= MAX_LENGTH, (sign, date, lang, len(text))


@pytest.mark.parametrize("lang", list(Lang))
def test_distinct_across_signs_on_one_day(lang: Lang) -> None:
    for date in DATES[:5]:
        texts = [GEN.render(sign, date, lang) for sign in Sign]
        assert len(set(texts)) == len(texts)
        # Not just a different number or colour: the prose itself differs.
        bodies = {text.rsplit("\n\n", 1)[0] for text in texts}
        assert len(bodies) == len(texts)


@pytest.mark.parametrize("lang", list(Lang))
def test_distinct_across_days_for_one_sign(lang: Lang) -> None:
    for sign in (Sign.ARIES, Sign.SCORPIO, Sign.PISCES):
        bodies = [GEN.render(sign, date, lang).rsplit("\n\n", 1)[0] for date in DATES]
        assert len(set(bodies)) == len(bodies)
        # Consecutive days rarely share a sentence; they must never share the opening line.
        first_lines = [body.split("\n", 1)[0] for body in bodies]
        assert all(a != b for a, b in itertools.pairwise(first_lines))


@pytest.mark.parametrize("lang", list(Lang))
def test_sections_present_in_order(lang: Lang) -> None:
    labels = SECTION_LABELS[lang]
    for sign in Sign:
        text = GEN.render(sign, START, lang)
        positions = [text.find(label) for label in labels]
        assert all(p >= 0 for p in positions), (labels, text)
        assert positions == sorted(positions)
        footer = text.rsplit("\n\n", 1)[1]
        assert re.fullmatch(
            rf"{re.escape(labels[4])} \d{{1,2}}\. {re.escape(labels[5])} [^\n.]+\.", footer
        )


def test_lucky_number_and_colour_agree_between_languages() -> None:
    """Same (sign, date) → same number in both languages (the colour is the same index)."""
    for sign in Sign:
        ru = GEN.render(sign, START, Lang.RU).rsplit("\n\n", 1)[1]
        en = GEN.render(sign, START, Lang.EN).rsplit("\n\n", 1)[1]
        assert re.findall(r"\d+", ru) == re.findall(r"\d+", en)


def test_russian_is_cyrillic_and_english_is_latin() -> None:
    for sign in Sign:
        ru = GEN.render(sign, START, Lang.RU)
        en = GEN.render(sign, START, Lang.EN)
        ru_letters = [c for c in ru if c.isalpha()]
        en_letters = [c for c in en if c.isalpha()]
        assert sum("\u0400" <= c <= "\u04ff" for c in ru_letters) / len(ru_letters) > 0.95
        assert all(c.isascii() for c in en_letters)


@pytest.mark.parametrize("lang", list(Lang))
def test_plain_text_without_leftovers(lang: Lang) -> None:
    """No unfilled placeholders, no markup, no doubled spaces; sentences start upper-case."""
    for sign in Sign:
        for date in DATES[:7]:
            text = GEN.render(sign, date, lang)
            assert not re.search(r"[{}<>*_#`]", text), text
            assert "  " not in text
            assert ".." not in text
            for paragraph in text.split("\n\n"):
                body = paragraph.split(":", 1)[1].strip()
                assert body[0].isupper() or body[0].isdigit(), paragraph


def test_sign_flavour_words_appear() -> None:
    """Planet names show up over a month, so signs do get their own flavour."""
    planets = {Sign.ARIES: "Mars", Sign.CANCER: "Moon", Sign.CAPRICORN: "Saturn"}
    for sign, planet in planets.items():
        month = " ".join(GEN.render(sign, date, Lang.EN) for date in DATES)
        assert planet in month
    assert "Нептун" in " ".join(GEN.render(Sign.PISCES, date, Lang.RU) for date in DATES)


def test_sign_title() -> None:
    assert sign_title(Sign.ARIES, Lang.RU) == "Овен"
    assert sign_title(Sign.PISCES, Lang.EN) == "Pisces"
    assert len({sign_title(sign, lang) for sign in Sign for lang in Lang}) == 24


# Words that name a day relative to the reader. A text is cached per (sign, date, lang) and read
# on two days (as "tomorrow" the day before, as "today" on the day), so any of these is wrong on
# one of them; the caption, composed at send time, is the only place that says which day it is.
RELATIVE_DAY = {
    Lang.EN: re.compile(
        r"\b(?:today|tonight|tomorrow|yesterday|now|nowadays|this (?:morning|afternoon|evening|"
        r"night|week)|(?:last|next) (?:night|week)|the day (?:after|before))\b",
        re.IGNORECASE,
    ),
    Lang.RU: re.compile(
        r"(?<!\w)(?:(?:после|поза)?завтра(?!к)\w*|(?:поза)?вчера\w*|сегодня\w*|сейчас|теперь|нынче|"
        r"нынешн\w*|накануне|эт(?:им|ой) (?:утром|вечером|ночью|днём)|"
        r"(?:на )?(?:этой|прошлой|следующей) неделе)(?!\w)",
        re.IGNORECASE,
    ),
}
WEEKDAYS = {
    Lang.EN: ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"),
    Lang.RU: ("понедельник", "вторник", "сред", "четверг", "пятниц", "суббот", "воскресень"),
}
WEEKDAY_WORD = {
    Lang.EN: re.compile(r"\b(" + "|".join(WEEKDAYS[Lang.EN]) + r")\b", re.IGNORECASE),
    # "сред" only in the weekday's own forms: «среда» is also "environment".
    Lang.RU: re.compile(
        r"(?<!\w)(понедельник\w*|вторник\w*|сред[аыуе]|четверг\w*|пятниц\w*|суббот\w*|"
        r"воскресень\w*)(?!\w)",
        re.IGNORECASE,
    ),
}
# Two years from a Monday: every weekday of every month, a year boundary and 29 February.
TWO_YEARS = [dt.date(2027, 12, 27) + dt.timedelta(days=i) for i in range(2 * 366 + 7)]


@pytest.mark.parametrize("lang", list(Lang))
def test_no_text_names_a_relative_day(lang: Lang) -> None:
    """Every sign x date x language: no today/tomorrow/tonight..., and a weekday named is the
    date's own, so the same text is right when read the day before and on the day."""
    for date in TWO_YEARS:
        own = WEEKDAYS[lang][date.weekday()]
        for sign in Sign:
            text = GEN.render(sign, date, lang)
            found = RELATIVE_DAY[lang].search(text)
            assert found is None, (sign, date, lang, found.group(0), text)
            for word in WEEKDAY_WORD[lang].findall(text):
                assert word.lower().startswith(own), (sign, date, lang, word, text)


def test_day_section_label_names_no_day() -> None:
    for lang in Lang:
        assert RELATIVE_DAY[lang].search(" ".join(SECTION_LABELS[lang])) is None


@pytest.mark.parametrize("lang", list(Lang))
def test_the_weekday_shows_up(lang: Lang) -> None:
    """The phrases that name the weekday are reached and filled in the right grammatical form."""
    forms = {
        Lang.EN: [r"\bThis Friday\b", r"\bthis Friday\b", r"\bFriday rewards\b"],
        Lang.RU: [r"Эта пятница открывает", r"В эту пятницу (?:любопытство|энергия)"],
    }[lang]
    fridays = [d for d in TWO_YEARS if d.weekday() == 4]
    month = " ".join(GEN.render(sign, d, lang) for d in fridays for sign in Sign)
    for form in forms:
        assert re.search(form, month), form
