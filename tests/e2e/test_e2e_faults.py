"""Telegram says no (issue 12.8, 12.9): rejected file_ids in inline mode, presses from people
who blocked the bot. Every query is answered, every outcome counted once, no phantom views."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from bot.ops.metrics import REGISTRY
from bot.telegram.callbacks import Day, DayCB
from db.models import ImageAsset
from db.types import Sign
from tests.e2e.conftest import Harness

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

ANN, BOB = 651, 652


async def test_inline_query_is_answered_when_telegram_rejects_the_cached_photo(
    harness: Harness,
) -> None:
    h, srv = harness, harness.server
    srv.user(ANN, language_code="en")
    await h.say(ANN, "/start leo")  # uploads the Leo picture: inline offers it as a photo
    qid = srv.inline_query(ANN, "leo")
    await h.done()
    assert srv.inline_answers[-1]["results"][0]["type"] == "photo"
    srv.forget_file_ids()  # Telegram purged them: answerInlineQuery now refuses that file_id

    qid = srv.inline_query(ANN, "leo")
    await h.done()
    assert srv.inline_queries[qid]["answered"]  # never left unanswered
    answer = srv.inline_answers[-1]
    assert answer["inline_query_id"] == qid
    assert [r["type"] for r in answer["results"]] == ["article"]
    outcomes = [c.outcome for c in srv.calls_to("answerInlineQuery")]
    assert outcomes[-2:] == [400, "ok"]
    async with h.app.session_factory() as s:  # the rejected file_id is forgotten
        assert (await s.scalars(select(ImageAsset.asset_key))).all() == []

    qid = srv.inline_query(ANN, "leo")  # no second refusal: straight to an article
    await h.done()
    assert srv.inline_queries[qid]["answered"]
    assert [c.outcome for c in srv.calls_to("answerInlineQuery")][-1] == "ok"
    assert outcomes.count(400) == [c.outcome for c in srv.calls_to("answerInlineQuery")].count(400)

    uploads = srv.uploads()
    await h.say(ANN, "/today")  # a send uploads the picture again...
    assert srv.uploads() == uploads + 1
    qid = srv.inline_query(ANN, "le")
    await h.done()
    assert [r["type"] for r in srv.inline_answers[-1]["results"]] == ["photo"]  # ...and back
    assert h.errors == 0


def _updates(kind: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("bot_updates_total", {"type": kind, "outcome": outcome}) or 0


async def test_a_press_from_a_user_who_blocked_the_bot(harness: Harness) -> None:
    h, srv = harness, harness.server
    srv.user(BOB, language_code="en")
    welcome = (await h.say(BOB, "/start leo"))[0]
    tomorrow = h.app.horoscopes.today(None) + dt.timedelta(days=1)
    views_before = await h.app.horoscopes.views.buffered(tomorrow)
    errors, blocked = _updates("callback_query", "error"), _updates("callback_query", "blocked")
    srv.block(BOB, notify=False)  # blocked; the old message and its buttons are still there

    qid = await h.press(BOB, welcome.message_id, DayCB(day=Day.TOMORROW, sign=Sign.LEO).pack())
    assert [c.outcome for c in srv.calls_to("editMessageMedia")][-1] == 403
    assert srv.callback_queries[qid]["answered"]  # the press is answered all the same
    # no view for a horoscope that was never shown
    assert await h.app.horoscopes.views.buffered(tomorrow) == views_before
    await h.app.horoscopes.views.flush()
    assert await h.app.horoscopes.views.totals(tomorrow) == {}
    # counted once, as what it is: not an error (the alert on errors stays quiet)
    assert _updates("callback_query", "blocked") == blocked + 1
    assert _updates("callback_query", "error") == errors
    assert h.errors == 0


async def test_updates_without_a_person_are_skipped_not_errors(harness: Harness) -> None:
    """A group message from an anonymous admin (sender_chat, no from) and a message or button
    press from another bot: handlers that read for a person never run, nothing is an error,
    the press is still answered."""
    h, srv = harness, harness.server
    ignored = _updates("message", "ignored")
    group = {"id": -100777, "type": "supergroup", "title": "g"}
    srv.send_raw_update(
        {
            "message": {
                "message_id": 1,
                "date": 0,
                "chat": group,
                "sender_chat": group,
                "text": "/today",
            }
        }
    )
    robot = {"id": 4242, "is_bot": True, "first_name": "robot"}
    srv.send_raw_update(
        {"message": {"message_id": 2, "date": 0, "chat": group, "from": robot, "text": "/settings"}}
    )
    srv.send_raw_update(
        {
            "callback_query": {
                "id": "cb-robot",
                "from": robot,
                "chat_instance": "x",
                "data": DayCB(day=Day.TODAY, sign=Sign.LEO).pack(),
                "message": {"message_id": 3, "date": 0, "chat": group, "text": "old"},
            }
        }
    )
    await h.done()
    assert h.errors == 0
    assert _updates("message", "ignored") == ignored + 2
    assert [c for c in srv.calls_to("answerCallbackQuery")]  # the spinner stops
    assert not srv.calls_to("sendMessage") and not srv.calls_to("sendPhoto")


async def test_an_inline_query_is_answered_even_when_its_handler_fails(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever goes wrong while building the results, the query gets an (empty, uncached)
    answer instead of spinning until Telegram gives up."""
    h, srv = harness, harness.server
    srv.user(ANN, language_code="en")
    await h.say(ANN, "/start leo")

    async def broken(*_a: object, **_k: object) -> None:
        raise RuntimeError("simulated bug while building inline results")

    monkeypatch.setattr(h.app.cache, "load_many", broken)
    qid = srv.inline_query(ANN, "leo")
    await h.done()
    assert srv.inline_queries[qid]["answered"]
    answer = srv.inline_answers[-1]
    assert answer["inline_query_id"] == qid and answer["results"] == []
    assert h.errors == 1  # a bug is still an error: logged and counted
