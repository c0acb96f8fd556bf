"""What a person reads: the right day, commands in any case, answers to the bot's questions,
buttons that do what they show and screens that are not re-sent unchanged."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from bot.domain.generation import TemplateGenerator
from bot.telegram.texts import texts
from db.types import Lang
from tests.e2e.conftest import Harness

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

ANN, BOB = 601, 602

# Words that say which day it is relative to the reader (the caption's business, not the text's).
RELATIVE = re.compile(r"\b(?:today|tonight|tomorrow)\b|сегодня|завтра(?!к)", re.IGNORECASE)


def body(caption: str) -> str:
    """The horoscope under the caption's first line (the header the bot composes)."""
    return caption.split("\n\n", 1)[1]


# --- 1. texts for the right day --------------------------------------------------------------


@pytest.mark.parametrize("generator", [TemplateGenerator()])
@pytest.mark.parametrize(("lang", "code"), [(Lang.EN, "en"), (Lang.RU, "ru")])
async def test_today_and_tomorrow_read_right_with_the_built_in_generator(
    harness: Harness, lang: Lang, code: str
) -> None:
    """The caption says today/tomorrow; the text under it names no relative day, so the text
    shown as "tomorrow" on one day is right again as "today" on the next."""
    h, srv = harness, harness.server
    t = texts(lang)
    srv.user(ANN, language_code=code)
    await h.say(ANN, "/start leo")
    shown: dict[str, str] = {}
    for command, word in (("/today", t.today), ("/tomorrow", t.tomorrow)):
        [msg] = await h.say(ANN, command)
        assert msg.caption is not None
        header, text = msg.caption.split("\n\n", 1)
        assert f" · {word}, " in header
        assert RELATIVE.search(text) is None, text
        shown[command] = text
    # A day later, yesterday's "tomorrow" is today's "today", word for word.
    h.clock.value += dt.timedelta(days=1)
    [msg] = await h.say(ANN, "/today")
    assert body(msg.caption) == shown["/tomorrow"]
    assert h.errors == 0


# --- 2. commands in any case, answers to the bot's questions ---------------------------------


async def test_commands_are_case_insensitive(harness: Harness) -> None:
    h, srv = harness, harness.server
    srv.user(ANN, language_code="en")
    [msg] = await h.say(ANN, "/START leo")
    assert msg.caption.startswith("♌ Leo · today")
    [msg] = await h.say(ANN, "/Tomorrow")
    assert msg.caption.startswith("♌ Leo · tomorrow")
    [msg] = await h.say(ANN, "/HELP")
    assert msg.text.startswith("What I can do")
    [msg] = await h.say(ANN, "/SETTINGS")
    assert msg.text.startswith("Settings")
    [msg] = await h.say(ANN, "/TimeZone Europe/Berlin")
    assert msg.text.startswith("Time zone: Europe/Berlin")
    assert h.errors == 0


async def test_zone_typed_after_the_question_gets_the_zone_answer(harness: Harness) -> None:
    h, srv = harness, harness.server
    en = texts(Lang.EN)
    srv.user(ANN, language_code="en")
    await h.say(ANN, "/start")
    [question] = await h.say(ANN, "/timezone")
    assert question.text.startswith("Pick a time zone")
    # A bare zone-shaped text that is no zone: the zone error, not the generic hint.
    [error] = await h.say(ANN, "Mars/Olympus")
    assert error.text.startswith("I don't know the time zone “Mars/Olympus”")
    # The error asks again: the client opens a reply to it (ForceReply) ...
    assert error.reply_keyboard == {
        "force_reply": True,
        "input_field_placeholder": en.tz_placeholder,
    }
    # ... so what the person types next is a reply, read as the answer: a city works.
    srv.send_text(ANN, "new york", reply_to=error.message_id)
    await h.done()
    assert srv.messages(ANN)[-1].text.startswith("Time zone: America/New_York.")
    # A reply to the first question counts too; a wrong answer is told so and asked again.
    srv.send_text(ANN, "Atlantis", reply_to=question.message_id)
    await h.done()
    assert srv.messages(ANN)[-1].text.startswith("I don't know the time zone “Atlantis”")
    srv.send_text(ANN, "Tbilisi", reply_to=srv.messages(ANN)[-1].message_id)
    await h.done()
    assert srv.messages(ANN)[-1].text.startswith("Time zone: Asia/Tbilisi.")
    # Not an answer to the question: a bare city is chat, and a command stays a command.
    [hint] = await h.say(ANN, "Moscow")
    assert hint.text == en.hint
    srv.send_text(ANN, "/today", reply_to=question.message_id)
    await h.done()
    assert srv.messages(ANN)[-1].text == en.need_sign
    assert h.errors == 0


async def test_zone_question_in_russian(harness: Harness) -> None:
    h, srv = harness, harness.server
    srv.user(BOB, language_code="ru")
    await h.say(BOB, "/start")
    [error] = await h.say(BOB, "/timezone Марс/Олимп")
    assert error.text.startswith("Не знаю часового пояса «Марс/Олимп»")
    srv.send_text(BOB, "Moscow", reply_to=error.message_id)
    await h.done()
    assert srv.messages(BOB)[-1].text.startswith("Часовой пояс: Europe/Moscow.")
    assert h.errors == 0
