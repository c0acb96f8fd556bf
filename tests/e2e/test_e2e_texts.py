"""What a person reads: the right day, commands in any case, answers to the bot's questions,
buttons that do what they show and screens that are not re-sent unchanged."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from bot.domain.generation import TemplateGenerator
from bot.telegram.callbacks import MenuAction, MenuCB
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


# --- 3. buttons act on what they show; unchanged screens are not re-sent ---------------------


def refused_edits(h: Harness) -> list[tuple[str, object]]:
    return [
        (c.method, c.outcome) for c in h.server.calls if c.method.startswith("edit") and not c.ok
    ]


async def user_push(h: Harness, user_id: int) -> bool:
    from db.repositories.users import UserRepository

    async with h.app.session_factory() as s:
        user = await UserRepository(s, h.app.data).get(user_id)
    assert user is not None
    return user.push_enabled


async def test_pressing_the_chosen_language_sends_nothing(harness: Harness) -> None:
    h, srv = harness, harness.server
    srv.user(ANN, language_code="en")
    [settings] = await h.say(ANN, "/settings")
    english = next(b for b in settings.buttons() if b["text"] == "• English")
    edits = len(srv.calls_to("editMessageText"))
    qid = await h.press(ANN, settings.message_id, english["callback_data"])
    answer = h.answer_of(qid)
    assert answer is not None and answer.get("text") is None  # answered, quietly
    assert len(srv.calls_to("editMessageText")) == edits
    assert refused_edits(h) == []
    # A real change still edits the screen and says so.
    russian = next(b for b in settings.buttons() if b["text"] == "Русский")
    qid = await h.press(ANN, settings.message_id, russian["callback_data"])
    assert (h.answer_of(qid) or {}).get("text") == "Язык: русский."
    assert srv.message(ANN, settings.message_id).text.startswith("Настройки")
    assert refused_edits(h) == []
    assert h.errors == 0


async def test_push_button_under_an_older_horoscope_does_what_it_showed(harness: Harness) -> None:
    h, srv = harness, harness.server
    srv.user(ANN, language_code="en")
    [older] = await h.say(ANN, "/start leo")
    [newer] = await h.say(ANN, "/today")
    assert older.buttons()[-1]["text"] == newer.buttons()[-1]["text"] == "🔕 Daily push: off"
    qid = await h.press(ANN, newer.message_id, newer.buttons()[-1]["callback_data"])
    assert "Daily push is on" in (h.answer_of(qid) or {}).get("text", "")
    assert await user_push(h, ANN)
    # The older message still shows "off": pressing it asks for "on", which push already is.
    stale = srv.message(ANN, older.message_id).buttons()[-1]
    assert stale["text"] == "🔕 Daily push: off"
    qid = await h.press(ANN, older.message_id, stale["callback_data"])
    assert await user_push(h, ANN)  # not toggled off
    assert "Daily push is on" in (h.answer_of(qid) or {}).get("text", "")
    assert srv.message(ANN, older.message_id).buttons()[-1]["text"] == "🔔 Daily push: on"
    # Pressed again (a double tap): nothing changes and nothing is re-sent.
    markup_edits = len(srv.calls_to("editMessageReplyMarkup"))
    await h.press(ANN, older.message_id, stale["callback_data"])
    assert await user_push(h, ANN)
    assert len(srv.calls_to("editMessageReplyMarkup")) == markup_edits
    # "on" turns it off, as it says.
    fresh = srv.message(ANN, older.message_id).buttons()[-1]
    qid = await h.press(ANN, older.message_id, fresh["callback_data"])
    assert not await user_push(h, ANN)
    assert (h.answer_of(qid) or {}).get("text") == "🔕 Daily push is off."
    assert refused_edits(h) == []
    assert h.errors == 0


async def test_a_toggle_button_sent_before_the_fix_acts_on_its_label(harness: Harness) -> None:
    """Messages already in chats carry the old "m:push" (toggle): its label says what it does."""
    from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

    h, srv = harness, harness.server
    srv.user(ANN, language_code="en")
    await h.say(ANN, "/start leo")
    [on_msg] = await h.say(ANN, "/today")
    await h.press(ANN, on_msg.message_id, on_msg.buttons()[-1]["callback_data"])
    assert await user_push(h, ANN)
    legacy = MenuCB(action=MenuAction.PUSH).pack()
    old = await h.bot.send_message(
        ANN,
        "an old horoscope",
        reply_markup=InlineKeyboardMarkup(
            inline_keyboard=[
                [InlineKeyboardButton(text="🔕 Daily push: off", callback_data=legacy)]
            ]
        ),
    )
    await h.press(ANN, old.message_id, legacy)
    assert await user_push(h, ANN)  # it showed "off": pressing it asked for "on"
    assert srv.message(ANN, old.message_id).buttons()[-1]["text"] == "🔔 Daily push: on"
    assert h.errors == 0


async def test_no_inline_button_sends_an_edit_that_changes_nothing(harness: Harness) -> None:
    """Every button of every screen, each pressed twice (a double tap, or an old message): the
    second press never sends an edit Telegram refuses as "message is not modified"."""
    h, srv = harness, harness.server
    srv.user(ANN, language_code="en")
    pressed: list[str] = []

    async def twice(message_id: int, data: str) -> None:
        for _ in range(2):
            await h.press(ANN, message_id, data)
            assert refused_edits(h) == [], (data, refused_edits(h))
        pressed.append(data)

    def buttons(message_id: int) -> list[str]:
        return [b["callback_data"] for b in srv.message(ANN, message_id).buttons()]

    [horoscope] = await h.say(ANN, "/start leo")
    for data in buttons(horoscope.message_id):
        await twice(horoscope.message_id, data)
    [settings] = await h.say(ANN, "/settings")
    timezones = MenuCB(action=MenuAction.TIMEZONES).pack()
    for lang in ("Русский", "English"):
        chosen = next(b for b in settings.buttons() if b["text"].endswith(lang))
        await twice(settings.message_id, chosen["callback_data"])
        for data in buttons(settings.message_id):
            if data != timezones:
                await twice(settings.message_id, data)
        await twice(settings.message_id, timezones)
        for data in buttons(settings.message_id):  # the time-zone screen: zones and Back
            await h.press(ANN, settings.message_id, timezones)
            await twice(settings.message_id, data)
    assert len(pressed) > 60
    assert h.errors == 0
