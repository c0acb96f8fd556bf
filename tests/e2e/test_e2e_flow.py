"""A person's journey: /start, choosing a sign, Today/Tomorrow, settings, inline mode."""

from __future__ import annotations

import html

import pytest

from bot.telegram.callbacks import Day, DayCB, MenuAction, MenuCB, SignCB
from db.types import Sign
from tests.e2e.conftest import Harness

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

ANN, BOB = 501, 502


async def test_start_uploads_welcome_picture_once_then_reuses(harness: Harness) -> None:
    h, srv = harness, harness.server
    srv.user(ANN, first_name="Ann <&>", language_code="en")
    srv.user(BOB, first_name="Bob", language_code="ru")
    sent = await h.say(ANN, "/start")
    assert len(sent) == 1
    welcome = sent[0]
    assert welcome.photo is not None
    assert "Ann <&>" in welcome.caption  # escaped on the way, shown as typed
    assert len(welcome.buttons()) == 12
    assert srv.uploads() == 1
    sent = await h.say(BOB, "/start")
    assert sent[0].photo is not None
    assert "Здравствуйте" in sent[0].caption
    uploads_after_two = srv.uploads()
    assert uploads_after_two in (1, 2)  # a random cosmic picture: maybe the same one
    # Every picture already uploaded is sent by file_id from now on.
    for _ in range(6):
        await h.say(ANN, "/start")
    uploaded_keys = srv.uploads()
    files = {
        c.params["photo"].filename
        for c in srv.calls_to("sendPhoto")
        if hasattr(c.params.get("photo"), "filename")
    }
    assert uploaded_keys == len(files)  # never the same file twice
    assert h.errors == 0


async def test_choose_sign_shows_escaped_horoscope_and_day_buttons(harness: Harness) -> None:
    h, srv = harness, harness.server
    srv.user(ANN, first_name="Ann", language_code="en")
    welcome = (await h.say(ANN, "/start"))[0]
    await h.press(ANN, welcome.message_id, SignCB(sign=Sign.LEO).pack())
    msg = srv.message(ANN, welcome.message_id)
    assert msg is not None and msg.caption is not None
    assert msg.caption.startswith("♌ Leo · today")
    assert "<b>&</b> leo" in msg.caption  # the generator's markup arrived as text
    assert msg.file_id == srv.message(ANN, welcome.message_id).file_id
    buttons = [b["text"] for b in msg.buttons()]
    assert buttons == ["• Today", "Tomorrow", "🔄 Change sign", "🔕 Daily push: off"]
    edits_before = len(srv.calls_to("editMessageMedia"))
    # Tomorrow edits in place
    qid = await h.press(ANN, msg.message_id, DayCB(day=Day.TOMORROW, sign=Sign.LEO).pack())
    assert h.answer_of(qid) is not None
    msg = srv.message(ANN, msg.message_id)
    assert "tomorrow" in msg.caption
    assert len(srv.calls_to("editMessageMedia")) == edits_before + 1
    # Pressing Tomorrow again: quietly answered, no edit
    qid = await h.press(ANN, msg.message_id, DayCB(day=Day.TOMORROW, sign=Sign.LEO).pack())
    assert h.answer_of(qid) is not None
    assert len(srv.calls_to("editMessageMedia")) == edits_before + 1
    # Push toggle
    qid = await h.press(ANN, msg.message_id, MenuCB(action=MenuAction.PUSH_ON).pack())
    assert "Daily push is on" in (h.answer_of(qid) or {}).get("text", "")
    assert srv.message(ANN, msg.message_id).buttons()[-1]["text"] == "🔔 Daily push: on"
    # /today sends a new message with the sign picture
    sent = await h.say(ANN, "/today")
    assert sent[0].photo is not None and sent[0].caption.startswith("♌ Leo · today")
    assert h.errors == 0


async def test_deep_link_and_unknown_payload(harness: Harness) -> None:
    h, srv = harness, harness.server
    srv.user(ANN, language_code="ru")
    sent = await h.say(ANN, "/start scorpio")
    assert sent[0].caption.startswith("♏ Скорпион · сегодня")
    sent = await h.say(BOB, "/start whatever")
    assert "ссылки" in sent[0].caption or "link" in sent[0].caption
    assert h.errors == 0


async def test_inline_mode_and_chosen_result_counts_a_view(harness: Harness) -> None:
    h, srv = harness, harness.server
    srv.user(ANN, language_code="en")
    await h.say(ANN, "/start leo")  # uploads the Leo picture
    srv.inline_query(ANN, "LE")
    await h.done()
    answer = srv.inline_answers[-1]
    assert [r["id"].split(":")[0] for r in answer["results"]] == ["leo"]
    assert answer["results"][0]["type"] == "photo"
    assert answer["cache_time"] == 300
    # personal: the texts are in the asker's language (and for the asker's date)
    assert answer["is_personal"] is True
    srv.user(BOB, language_code="ru")
    srv.inline_query(BOB, "leo")
    await h.done()
    bob_answer = srv.inline_answers[-1]
    assert bob_answer["is_personal"] is True
    assert [r["id"] for r in bob_answer["results"]] == [
        answer["results"][0]["id"].replace(":en", ":ru")
    ]
    srv.inline_query(ANN, "")
    await h.done()
    results = srv.inline_answers[-1]["results"]
    assert len(results) == 12
    assert sum(r["type"] == "photo" for r in results) == 1
    views_before = await h.app.horoscopes.views.buffered(h.app.horoscopes.today(None))
    srv.choose_inline_result(ANN, results[3]["id"], "")
    await h.done()
    views = await h.app.horoscopes.views.buffered(h.app.horoscopes.today(None))
    assert views.get(Sign.CANCER, 0) == views_before.get(Sign.CANCER, 0) + 1
    assert h.errors == 0


async def test_settings_timezone_and_hint(harness: Harness) -> None:
    h, srv = harness, harness.server
    srv.user(ANN, language_code="en")
    await h.say(ANN, "/start")
    sent = await h.say(ANN, "/settings")
    assert "Time zone: Europe/Moscow" in sent[0].text
    sent = await h.say(ANN, "/timezone Mars/Base")
    assert "don't know" in sent[0].text
    sent = await h.say(ANN, "america/new_york")
    assert "America/New_York" in sent[0].text
    sent = await h.say(ANN, "hello there")
    assert "/today" in sent[0].text
    sent = await h.say(ANN, "/stats")  # not an admin: the hint
    assert "/today" in sent[0].text
    assert h.errors == 0
    assert html.escape("x") == "x"
