"""The catalogue, language choice, escaping and caption splitting."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from bot.telegram.texts import (
    CAPTION_LIMIT,
    EN,
    MESSAGE_LIMIT,
    RU,
    choose_lang,
    escape,
    format_date,
    horoscope_parts,
    is_zone_question,
)
from db.types import Lang, Sign

DAY = dt.date(2026, 11, 21)


def test_catalogues_are_complete_and_distinct() -> None:
    for field in dataclasses.fields(EN):
        ru, en = getattr(RU, field.name), getattr(EN, field.name)
        assert ru and en, field.name
    assert RU.help != EN.help


@pytest.mark.parametrize(
    ("chosen", "code", "expected"),
    [
        (Lang.EN, "ru", Lang.EN),  # an explicit choice wins
        ("ru", "en", Lang.RU),
        (None, "ru", Lang.RU),
        (None, "uk", Lang.RU),
        (None, "be", Lang.RU),
        (None, "kk", Lang.RU),
        (None, "en", Lang.EN),
        (None, "en-US", Lang.EN),
        (None, "EN_gb", Lang.EN),
        (None, "de", Lang.RU),  # unsupported: the default
        (None, None, Lang.RU),
        ("xx", "en", Lang.EN),
    ],
)
def test_choose_lang(chosen: Lang | str | None, code: str | None, expected: Lang) -> None:
    assert choose_lang(chosen, code, Lang.RU) is expected


def test_choose_lang_respects_enabled_and_default() -> None:
    assert choose_lang(None, "ru", Lang.EN, enabled=(Lang.EN,)) is Lang.EN
    assert choose_lang(Lang.RU, None, Lang.EN, enabled=(Lang.EN,)) is Lang.EN
    assert choose_lang(None, "fr", Lang.EN) is Lang.EN


def test_escape() -> None:
    assert escape("<b>Tom & Jerry</b>") == "&lt;b&gt;Tom &amp; Jerry&lt;/b&gt;"
    assert escape('"quotes"') == '"quotes"'


def test_format_date() -> None:
    assert format_date(DAY, Lang.RU) == "21 ноября"
    assert format_date(DAY, Lang.EN) == "21 November"


def test_caption_is_escaped_and_fits() -> None:
    caption, extra = horoscope_parts(Sign.LEO, DAY, "today", "Watch <b> & </i> out", Lang.EN)
    assert extra is None
    assert "Watch &lt;b&gt; &amp; &lt;/i&gt; out" in caption
    assert caption.startswith("<b>♌ Leo</b> · today, 21 November")


def test_long_text_goes_to_a_message_after_the_picture() -> None:
    text = ("word " * 400).strip()  # 1999 characters
    caption, extra = horoscope_parts(Sign.ARIES, DAY, "сегодня", text, Lang.RU)
    assert extra is not None
    assert "word" not in caption
    assert len(caption) <= CAPTION_LIMIT
    assert extra.endswith("word")


def test_caption_limit_is_counted_on_visible_text() -> None:
    # Escaping makes "&" five characters in markup but Telegram counts one.
    header_len = len("♌ Leo · today, 21 November") + 2
    text = "&" * (CAPTION_LIMIT - header_len)
    _, extra = horoscope_parts(Sign.LEO, DAY, "today", text, Lang.EN)
    assert extra is None
    _, extra = horoscope_parts(Sign.LEO, DAY, "today", text + "&", Lang.EN)
    assert extra is not None


def test_huge_text_is_cut_at_a_word() -> None:
    text = "lorem ipsum " * 1000
    _, extra = horoscope_parts(Sign.LEO, DAY, "today", text, Lang.EN)
    assert extra is not None
    assert len(extra) <= MESSAGE_LIMIT + 20  # "<b></b>" markup is not visible text
    assert extra.endswith("…")


def test_zone_questions_are_recognised_as_received() -> None:
    """What a received message shows (markup parsed away, the value filled in) is matched."""
    for t in (RU, EN):
        assert is_zone_question(t.tz_choose.replace("<code>", "").replace("</code>", ""))
        unknown = t.tz_unknown.format(value="Mars/Olympus")
        assert is_zone_question(unknown.replace("<code>", "").replace("</code>", ""))
    assert not is_zone_question(EN.hint)
    assert not is_zone_question(RU.settings)
    assert not is_zone_question(None)
    assert not is_zone_question("")
