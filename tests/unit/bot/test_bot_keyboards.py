"""Keyboards: layout, callback data round trips and the 64-byte limit."""

from __future__ import annotations

import pytest

from bot.domain.clock import looks_like_zone, parse_zone, zone_for_place
from bot.telegram.callbacks import Day, DayCB, MenuAction, MenuCB, SetCB, Setting, SignCB
from bot.telegram.keyboards import (
    COMMON_ZONES,
    horoscope_keyboard,
    settings_keyboard,
    sign_keyboard,
    timezone_keyboard,
)
from db.types import Lang, Sign


def _all_data(markup) -> list[str]:  # type: ignore[no-untyped-def]
    return [b.callback_data for row in markup.inline_keyboard for b in row]


@pytest.mark.parametrize("lang", list(Lang))
def test_sign_keyboard_is_3_by_4(lang: Lang) -> None:
    kb = sign_keyboard(lang)
    assert [len(row) for row in kb.inline_keyboard] == [3, 3, 3, 3]
    signs = [SignCB.unpack(d).sign for d in _all_data(kb)]
    assert signs == list(Sign)
    assert kb.inline_keyboard[1][1].text == ("♌ Лев" if lang is Lang.RU else "♌ Leo")


def test_horoscope_keyboard_buttons() -> None:
    kb = horoscope_keyboard(Lang.EN, Sign.LEO, Day.TOMORROW, push_enabled=False)
    texts = [b.text for row in kb.inline_keyboard for b in row]
    assert texts == ["Today", "• Tomorrow", "🔄 Change sign", "🔕 Daily push: off"]
    data = _all_data(kb)
    assert DayCB.unpack(data[0]) == DayCB(day=Day.TODAY, sign=Sign.LEO)
    # The push button says what pressing it does: push is off, so it turns push on.
    assert MenuCB.unpack(data[3]).action is MenuAction.PUSH_ON
    on = horoscope_keyboard(Lang.EN, Sign.LEO, Day.TOMORROW, push_enabled=True)
    assert on.inline_keyboard[-1][0].text == "🔔 Daily push: on"
    assert MenuCB.unpack(_all_data(on)[3]).action is MenuAction.PUSH_OFF
    # Same inputs, same markup: what makes "not modified" detectable.
    assert kb == horoscope_keyboard(Lang.EN, Sign.LEO, Day.TOMORROW, push_enabled=False)


def test_settings_and_timezone_keyboards() -> None:
    kb = settings_keyboard(Lang.RU, push_enabled=True, push_hour=9)
    data = [SetCB.unpack(d) for d in _all_data(kb) if d.startswith("c:")]
    assert SetCB(setting=Setting.PUSH, value="0") in data
    assert any(b.text == "• 09:00" for row in kb.inline_keyboard for b in row)
    zones = [
        SetCB.unpack(d).value
        for d in _all_data(timezone_keyboard(Lang.EN, "UTC"))
        if d.startswith("c:")
    ]
    assert zones == list(COMMON_ZONES)
    assert all(parse_zone(z) == z for z in zones)


def test_callback_data_fits_64_bytes() -> None:
    markups = [
        sign_keyboard(Lang.RU),
        timezone_keyboard(Lang.EN, "UTC"),
        settings_keyboard(Lang.EN, True, 21),
    ]
    markups += [horoscope_keyboard(Lang.RU, s, Day.TODAY, True) for s in Sign]
    for markup in markups:
        for data in _all_data(markup):
            assert 1 <= len(data.encode()) <= 64


@pytest.mark.parametrize("data", ["s:dragon", "d:x:leo", "s", "", "m:nope", "d:t"])
def test_garbage_callback_data_does_not_unpack(data: str) -> None:
    for factory in (SignCB, DayCB, MenuCB):
        with pytest.raises((ValueError, TypeError)):
            factory.unpack(data)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Europe/Berlin", "Europe/Berlin"),
        ("europe/berlin", "Europe/Berlin"),
        ("america/new_york", "America/New_York"),
        ("UTC", "UTC"),
        ("Moscow", None),
        ("hello world", None),
        ("../../etc/passwd", None),
        ("Mars/Olympus", None),
        ("", None),
    ],
)
def test_parse_zone(text: str, expected: str | None) -> None:
    assert parse_zone(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Mars/Olympus", True),
        ("Europe/Berlin", True),
        ("america/argentina/buenos_aires", True),
        ("Etc/GMT+3", True),
        ("hello world", False),
        ("Moscow", False),
        ("1/2", False),
        ("https://example.com", False),
        ("../../etc/passwd", False),
        ("a/b", False),
        ("", False),
    ],
)
def test_looks_like_zone(text: str, expected: bool) -> None:
    """Shaped like an IANA name: meant as a zone, so a wrong one gets the zone error."""
    assert looks_like_zone(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Moscow", "Europe/Moscow"),
        ("new york", "America/New_York"),
        ("New_York", "America/New_York"),
        ("  tbilisi ", "Asia/Tbilisi"),
        ("europe/berlin", "Europe/Berlin"),
        ("utc", "UTC"),
        ("Atlantis", None),
        ("Pacific", None),
        ("", None),
    ],
)
def test_zone_for_place(text: str, expected: str | None) -> None:
    """A city answers the bot's question for a zone (only there: see parse_zone)."""
    assert zone_for_place(text) == expected
