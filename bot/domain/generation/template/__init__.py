"""The built-in offline horoscope generator.

It is the default (``HOROSCOPE_GENERATOR=template``) and the fallback of the LLM generator, so it
must never fail, never need the network, and give the same text for the same (sign, date, lang):
the text is cached and stored, and a restart or a second bot instance must agree with it. The
seed therefore comes from a stable hash (``hashlib``), never from ``hash()``, which is salted per
process.

The texts are assembled from phrase banks (phrases.py) and each sign's words (vocabulary.py):
each section picks a situation and a piece of advice, with the sign's planet, element and
strongest trait woven in, so two signs on one day (and one sign on two days) read differently.
The Russian banks are written so that the inserted words never need gender agreement with the
reader (the reader is always addressed as «вы»).

A text names no day relative to the reader ("today", "tomorrow", "tonight", «сегодня»,
«завтра», «этим вечером»): it is generated and cached once per (sign, date, lang) and read on
two different days, as "tomorrow" on the day before and as "today" on the day itself. Only the
caption the bot composes when it sends the text says which of the two it is. Where a sentence
needs to point at its day it names the weekday of ``date`` ("this Friday", «в эту пятницу»),
which is right on both days.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random

from bot.domain.generation.template.phrases import BANKS
from bot.domain.generation.template.vocabulary import (
    COLOURS_EN,
    COLOURS_RU,
    QUALITIES_EN,
    QUALITIES_RU,
    SECTION_LABELS,
    SIGNS_EN,
    SIGNS_RU,
    WEEKDAYS_EN,
    WEEKDAYS_RU,
)
from db.types import GeneratedHoroscope, Lang, Sign

__all__ = ["MAX_LENGTH", "MIN_LENGTH", "SECTION_LABELS", "TemplateGenerator", "sign_title"]

MIN_LENGTH = 300
MAX_LENGTH = 900

# Bump when the banks change meaningfully: stored texts are keyed by (sign, date, lang) only, so
# old dates keep their stored text and only new ones use the new banks. v2: no relative days.
_SEED_VERSION = "v2"


def sign_title(sign: Sign, lang: Lang) -> str:
    """The sign's display name in ``lang`` ("Овен", "Aries"); the LLM prompt uses it too."""
    return (SIGNS_RU if lang is Lang.RU else SIGNS_EN)[sign].title


def _seed(*parts: str) -> int:
    """A process-independent seed: ``hash()`` is salted per process, sha256 is not."""
    digest = hashlib.sha256("|".join((_SEED_VERSION, *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _capitalize(sentence: str) -> str:
    """Upper-case the first letter only (``str.capitalize`` would lower-case "Mars")."""
    return sentence[:1].upper() + sentence[1:]


def _fill_words(sign: Sign, date: dt.date, lang: Lang, rng: random.Random) -> dict[str, str]:
    """The placeholder values for one text; the element quality varies from day to day."""
    weekday = date.weekday()
    if lang is Lang.RU:
        ru = SIGNS_RU[sign]
        quality, quality_acc = rng.choice(QUALITIES_RU[ru.element])
        weekday_nom, weekday_in = WEEKDAYS_RU[weekday]
        return {
            "planet": ru.planet,
            "planet_gen": ru.planet_gen,
            "planet_dat": ru.planet_dat,
            "element_gen": ru.element_gen,
            "trait": ru.trait,
            "trait_acc": ru.trait_acc,
            "quality": quality,
            "quality_acc": quality_acc,
            "weekday": weekday_nom,
            "weekday_in": weekday_in,
        }
    en = SIGNS_EN[sign]
    return {
        "planet": en.planet,
        "element": en.element,
        "trait": en.trait,
        "quality": rng.choice(QUALITIES_EN[en.element]),
        "weekday": WEEKDAYS_EN[weekday],
    }


def _render(sign: Sign, date: dt.date, lang: Lang) -> str:
    """Assemble the text; shortens itself (dropping optional sentences) to stay within bounds."""
    rng = random.Random(_seed(sign.value, date.isoformat(), lang.value))
    words = _fill_words(sign, date, lang, rng)
    signs = SIGNS_RU if lang is Lang.RU else SIGNS_EN
    labels = SECTION_LABELS[lang]

    # Each section: (situation, advice); the day section may also carry a sign-flavour line.
    sections: list[list[str]] = []
    for situations, tips in BANKS[lang]:
        chosen = [rng.choice(situations), rng.choice(tips)]
        sections.append([_capitalize(s.format(**words)) for s in chosen])
    flavour = rng.choice(signs[sign].flavour)
    if rng.random() < 0.6:
        sections[0].insert(1, flavour)

    # Lucky number and colour depend on (sign, date) only, so ru and en agree on them.
    lucky = random.Random(_seed(sign.value, date.isoformat(), "lucky"))
    number = lucky.randint(1, 99)
    colour = (COLOURS_RU if lang is Lang.RU else COLOURS_EN)[lucky.randrange(len(COLOURS_EN))]
    footer = f"{labels[4]} {number}. {labels[5]} {colour}."

    def assemble() -> str:
        parts = [f"{label} {' '.join(body)}" for label, body in zip(labels, sections, strict=False)]
        return "\n\n".join([*parts, footer])

    text = assemble()
    # Too long: drop advice sentences from the longest sections until it fits (never below one
    # sentence per section). Deterministic, because the order depends only on the text.
    while len(text) > MAX_LENGTH:
        candidates = [body for body in sections if len(body) > 1]
        if not candidates:
            break
        longest = max(candidates, key=lambda body: sum(map(len, body)))
        longest.pop()
        text = assemble()
    if len(text) < MIN_LENGTH and flavour not in sections[0]:
        sections[0].append(flavour)
        text = assemble()
    return text


class TemplateGenerator:
    """Offline, deterministic horoscopes in Russian and English from phrase banks.

    Free, instant and always available, which is why it is both the default generator and the
    fallback of the LLM one.
    """

    name = "template"

    async def generate(self, sign: Sign, date: dt.date, lang: Lang) -> GeneratedHoroscope:
        return GeneratedHoroscope(text=_render(sign, date, lang), generator=self.name)

    def render(self, sign: Sign, date: dt.date, lang: Lang) -> str:
        """Synchronous access for callers without an event loop (tests, scripts)."""
        return _render(sign, date, lang)
