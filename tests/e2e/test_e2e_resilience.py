"""What survives: restarts, a flushed Redis, forgotten file_ids, 429, blocked users, stale
buttons, deleted messages."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from bot.ops.metrics import FILE_ID_FALLBACKS, REGISTRY
from bot.telegram.callbacks import Day, DayCB, MenuAction, MenuCB, SignCB
from db.repositories import UserRepository
from db.types import Sign
from tests.conftest import delete_prefix
from tests.e2e.conftest import Harness

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

ANN, BOB, CAT = 601, 602, 603


async def _all_signs(h: Harness, user_id: int) -> None:
    for sign in Sign:
        await h.say(user_id, f"/start {sign.value}")


async def test_restart_and_redis_flush_never_upload_again(harness: Harness) -> None:
    h, srv = harness, harness.server
    srv.user(ANN, language_code="en")
    await h.say(ANN, "/start")
    await _all_signs(h, ANN)
    uploads = srv.uploads()
    assert uploads == 13  # one cosmic picture and twelve signs
    await h.restart()
    await h.say(ANN, "/start")
    await _all_signs(h, ANN)
    assert srv.uploads() == uploads
    # Redis loses the test's keys: file_ids come back from Postgres.
    await delete_prefix(h.redis, h.settings.cache_prefix)
    await h.restart()
    await _all_signs(h, ANN)
    assert srv.uploads() == uploads
    assert h.errors == 0


async def test_forgotten_file_ids_are_uploaded_once_more(harness: Harness) -> None:
    h, srv = harness, harness.server
    srv.user(ANN, language_code="en")
    srv.user(BOB, language_code="ru")
    await _all_signs(h, ANN)
    assert srv.uploads() == 12
    fallbacks = REGISTRY.get_sample_value("bot_file_id_fallbacks_total") or 0.0
    srv.forget_file_ids()
    await _all_signs(h, BOB)
    assert srv.uploads() == 24
    await _all_signs(h, ANN)
    await _all_signs(h, BOB)
    assert srv.uploads() == 24
    assert (REGISTRY.get_sample_value("bot_file_id_fallbacks_total") or 0) - fallbacks == 12
    assert FILE_ID_FALLBACKS is not None
    assert h.errors == 0


async def test_concurrent_first_sends_upload_once(harness: Harness) -> None:
    h, srv = harness, harness.server
    users = list(range(700, 720))
    for uid in users:
        srv.user(uid, language_code="en")
    ids = [srv.send_text(uid, "/start leo")["update_id"] for uid in users]
    await asyncio.gather(*(h.done(i) for i in ids))
    assert srv.uploads() == 1
    assert all(srv.last_message(uid).photo for uid in users)
    assert h.errors == 0


async def test_retry_after_on_send_photo_waits_and_sends_once(harness: Harness) -> None:
    h, srv = harness, harness.server
    srv.user(ANN, language_code="en")
    await h.say(ANN, "/start leo")
    srv.fail_next(
        "sendPhoto", error_code=429, description="Too Many Requests: retry after 1", retry_after=1
    )
    with capture_logs() as logs:
        sent = await h.say(ANN, "/today")
    # it waited the retry_after it was given (the log is written right before that sleep)
    assert [e["retry_after"] for e in logs if e["event"] == "retry_after"] == [1]
    assert len(sent) == 1 and sent[0].photo
    outcomes = [c.outcome for c in srv.calls_to("sendPhoto")][-2:]
    assert outcomes == [429, "ok"]
    assert h.errors == 0


async def test_blocked_user_gets_push_turned_off(harness: Harness) -> None:
    h, srv = harness, harness.server
    srv.user(ANN, language_code="en")
    welcome = (await h.say(ANN, "/start leo"))[0]
    await h.press(ANN, welcome.message_id, MenuCB(action=MenuAction.PUSH_ON).pack())
    async with h.app.session_factory() as s:
        assert (await UserRepository(s, h.app.data).get(ANN)).push_enabled  # type: ignore[union-attr]
    # The user blocks the bot (my_chat_member arrives), then presses an old button: the bot's
    # answer gets 403.
    srv.block(ANN)
    await h.done()
    async with h.app.session_factory() as s:
        assert not (await UserRepository(s, h.app.data).get(ANN)).push_enabled  # type: ignore[union-attr]
    await h.press(ANN, welcome.message_id, MenuCB(action=MenuAction.PUSH_OFF).pack())
    srv.block(ANN, notify=False)
    srv.users[ANN].blocked_by.add(srv.bot().id)
    update = srv.send_raw_update(
        {
            "message": {
                "message_id": 999,
                "date": 0,
                "chat": {"id": ANN, "type": "private"},
                "from": {"id": ANN, "is_bot": False, "first_name": "Ann"},
                "text": "/today",
                "entities": [{"type": "bot_command", "offset": 0, "length": 6}],
            }
        }
    )
    await h.done(update)
    assert any(c.outcome == 403 for c in srv.calls)
    assert h.errors == 0


async def test_stale_buttons_and_deleted_messages(harness: Harness) -> None:
    h, srv = harness, harness.server
    srv.user(CAT, language_code="en")
    welcome = (await h.say(CAT, "/start leo"))[0]
    # Unknown callback data
    qid = await h.press(CAT, welcome.message_id, "garbage:data")
    assert h.answer_of(qid)["text"] == "This button no longer works."  # type: ignore[index]
    # A button on a message Telegram no longer shows (InaccessibleMessage)
    qid = await h.press(CAT, 424242, DayCB(day=Day.TOMORROW, sign=Sign.LEO).pack())
    assert h.answer_of(qid) is not None
    assert srv.last_message(CAT).caption.startswith("♌ Leo · tomorrow")  # type: ignore[union-attr]
    # The message was deleted by the user between the press and the edit
    msg = srv.last_message(CAT)
    assert msg is not None
    srv.delete_message_for_user(CAT, msg.message_id)
    qid = await h.press(CAT, msg.message_id, DayCB(day=Day.TODAY, sign=Sign.LEO).pack())
    assert h.answer_of(qid) is not None
    # A sign keyboard under a text message, pressed twice
    sent = await h.say(CAT, "/sign")
    await h.press(CAT, sent[0].message_id, SignCB(sign=Sign.ARIES).pack())
    await h.press(CAT, sent[0].message_id, SignCB(sign=Sign.ARIES).pack())
    # Odd case and a typed sign while a keyboard is shown
    sent = await h.say(CAT, "sCoRpIo")
    assert sent[0].caption.startswith("♏ Scorpio")
    assert h.errors == 0
