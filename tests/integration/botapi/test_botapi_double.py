"""The Bot API double, exercised through aiogram's real HTTP client.

These tests pin the behaviour the rest of the e2e suite relies on: if the double drifts from
Telegram (error texts, file_id ownership, long polling), bot tests would pass here and fail in
production, so each Telegram rule a bot can trip over has a test.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiogram import Bot, Dispatcher, F, Router
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramConflictError,
    TelegramForbiddenError,
    TelegramRetryAfter,
    TelegramUnauthorizedError,
)
from aiogram.filters import CommandStart
from aiogram.types import (
    BotCommand,
    BufferedInputFile,
    CallbackQuery,
    InaccessibleMessage,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InlineQueryResultCachedPhoto,
    InputMediaPhoto,
    Message,
)
from PIL import Image

from devtools.botapi import BotAPIServer, EntityParseError, Upload, parse_html

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(30)]

TOKEN = "123456:TEST-token"
OTHER_TOKEN = "654321:OTHER-token"
USER = 42


def png(width: int = 1000, height: int = 600, color: str = "purple") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return buf.getvalue()


def keyboard(*pairs: tuple[str, str]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text=t, callback_data=d)] for t, d in pairs]
    )


@pytest.fixture
async def server() -> AsyncIterator[BotAPIServer]:
    srv = BotAPIServer(tokens=[TOKEN])
    await srv.start()
    srv.user(USER, first_name="Ann", username="ann")
    yield srv
    await srv.stop()


@pytest.fixture
async def bot(server: BotAPIServer) -> AsyncIterator[Bot]:
    b = Bot(TOKEN, session=server.aiogram_session())
    yield b
    await b.session.close()


async def test_get_me(bot: Bot) -> None:
    me = await bot.get_me()
    assert me.id == 123456
    assert me.is_bot
    assert me.username == "test_123456_bot"


async def test_unknown_token_and_method(server: BotAPIServer) -> None:
    stranger = Bot("999:unknown", session=server.aiogram_session())
    try:
        with pytest.raises(TelegramUnauthorizedError, match="Unauthorized"):
            await stranger.get_me()
    finally:
        await stranger.session.close()
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server.url}/botnot-a-token/getMe") as resp:
            assert resp.status == 401
            assert (await resp.json())["description"] == "Unauthorized"
        async with http.post(f"{server.url}/bot{TOKEN}/noSuchMethod") as resp:
            assert resp.status == 404
            assert await resp.json() == {"ok": False, "error_code": 404, "description": "Not Found"}
        # Telegram also takes JSON bodies; the playground and curl use them.
        async with http.post(
            f"{server.url}/bot{TOKEN}/sendMessage", json={"chat_id": USER, "text": "hi"}
        ) as resp:
            body = await resp.json()
            assert body["ok"] and body["result"]["text"] == "hi"


async def test_upload_gives_new_file_id_and_resend_by_file_id(
    server: BotAPIServer, bot: Bot
) -> None:
    data = png()
    first = await bot.send_photo(USER, BufferedInputFile(data, "aries.png"), caption="Aries")
    assert first.photo is not None and 2 <= len(first.photo) <= 3
    widths = [p.width for p in first.photo]
    assert widths == sorted(widths) and len(set(widths)) == len(widths)
    assert (first.photo[-1].width, first.photo[-1].height) == (1000, 600)
    assert first.from_user is not None and first.from_user.id == 123456
    assert first.chat.id == USER and first.chat.type == "private"
    file_id = first.photo[-1].file_id
    assert server.uploads() == 1 and server.uploads(123456) == 1
    assert isinstance(server.calls_to("sendPhoto")[0].params["photo"], Upload)

    again = await bot.send_photo(USER, file_id)
    assert again.photo is not None
    assert again.photo[-1].file_id == file_id
    assert again.photo[-1].file_unique_id == first.photo[-1].file_unique_id
    assert server.uploads() == 1 and server.sent_by_file_id() == 1
    assert again.message_id == first.message_id + 1

    # Uploading the same bytes again is a new upload with a new file_id, like Telegram.
    third = await bot.send_photo(USER, BufferedInputFile(data, "aries.png"))
    assert third.photo is not None and third.photo[-1].file_id != file_id
    assert server.uploads() == 2

    # getFile + download return the uploaded bytes; the UI reads them from the state too.
    tg_file = await bot.get_file(file_id)
    assert tg_file.file_path
    downloaded = await bot.download_file(tg_file.file_path)
    assert downloaded is not None and downloaded.read() == data
    assert server.file_bytes(file_id) == data
    assert [m.caption for m in server.messages(USER)] == ["Aries", None, None]


async def test_foreign_and_unknown_file_ids_are_rejected(server: BotAPIServer, bot: Bot) -> None:
    server.add_bot(OTHER_TOKEN)
    other = Bot(OTHER_TOKEN, session=server.aiogram_session())
    try:
        sent = await other.send_photo(USER, BufferedInputFile(png(), "x.png"))
        assert sent.photo is not None
        foreign = sent.photo[-1].file_id
    finally:
        await other.session.close()
    assert server.uploads(654321) == 1 and server.uploads(123456) == 0

    with pytest.raises(TelegramBadRequest, match="wrong file identifier"):
        await bot.send_photo(USER, foreign)
    with pytest.raises(TelegramBadRequest, match="wrong file identifier"):
        await bot.send_photo(USER, "AgACAgIAAxkBAAIdefinitely-not-issued")
    assert server.calls_to("sendPhoto")[-1].outcome == 400


async def test_forget_file_ids(server: BotAPIServer, bot: Bot) -> None:
    sent = await bot.send_photo(USER, BufferedInputFile(png(), "x.png"))
    assert sent.photo is not None
    file_id = sent.photo[-1].file_id
    assert server.forget_file_ids() == len(sent.photo)
    with pytest.raises(TelegramBadRequest, match="wrong file identifier"):
        await bot.send_photo(USER, file_id)
    fresh = await bot.send_photo(USER, BufferedInputFile(png(), "x.png"))
    assert fresh.photo is not None and fresh.photo[-1].file_id != file_id
    await bot.send_photo(USER, fresh.photo[-1].file_id)


async def test_http_url_photo_is_accepted(server: BotAPIServer, bot: Bot) -> None:
    sent = await bot.send_photo(USER, "https://example.org/aries.jpg")
    assert sent.photo and sent.photo[-1].file_id
    assert server.uploads() == 0
    await bot.send_photo(USER, sent.photo[-1].file_id)


async def test_rate_limit_and_injected_failures(server: BotAPIServer, bot: Bot) -> None:
    server.set_rate_limit("sendMessage", every_n=2, retry_after=7)
    await bot.send_message(USER, "one")
    with pytest.raises(TelegramRetryAfter) as info:
        await bot.send_message(USER, "two")
    assert info.value.retry_after == 7
    await bot.send_message(USER, "three")
    server.set_rate_limit("sendMessage", every_n=0)

    server.fail_next("sendPhoto", error_code=429, description="Too Many Requests", retry_after=3)
    with pytest.raises(TelegramRetryAfter) as info2:
        await bot.send_photo(USER, BufferedInputFile(png(), "x.png"))
    assert info2.value.retry_after == 3
    assert server.uploads() == 0  # the failed request never reached the method
    await bot.send_photo(USER, BufferedInputFile(png(), "x.png"))
    assert [c.outcome for c in server.calls_to("sendMessage")] == ["ok", 429, "ok"]
    assert [m.text for m in server.messages(USER)][:2] == ["one", "three"]


async def test_blocked_user_and_unknown_chat(server: BotAPIServer, bot: Bot) -> None:
    server.block(USER)
    with pytest.raises(TelegramForbiddenError, match="bot was blocked by the user"):
        await bot.send_message(USER, "push")
    with pytest.raises(TelegramForbiddenError):
        await bot.send_photo(USER, BufferedInputFile(png(), "x.png"))
    updates = await bot.get_updates(timeout=0)
    assert updates[-1].my_chat_member is not None
    assert updates[-1].my_chat_member.new_chat_member.status == "kicked"
    server.unblock(USER)
    await bot.send_message(USER, "welcome back")

    with pytest.raises(TelegramBadRequest, match="chat not found"):
        await bot.send_message(777, "nobody")
    server.user(778, started=False)
    with pytest.raises(TelegramForbiddenError, match="can't initiate conversation"):
        await bot.send_message(778, "hello?")


async def test_edits(server: BotAPIServer, bot: Bot) -> None:
    kb = keyboard(("Today", "day:today"))
    msg = await bot.send_message(USER, "Aries", reply_markup=kb)
    assert msg.reply_markup is not None
    assert msg.reply_markup.model_dump() == kb.model_dump()
    with pytest.raises(TelegramBadRequest) as refused:
        await bot.edit_message_text(
            text="Aries", chat_id=USER, message_id=msg.message_id, reply_markup=kb
        )
    # Telegram's words exactly, so a test of the bot sees what production would.
    assert refused.value.message == (
        "Bad Request: message is not modified: specified new message content and reply markup "
        "are exactly the same as a current content and reply markup of the message"
    )
    edited = await bot.edit_message_text(
        text="Taurus", chat_id=USER, message_id=msg.message_id, reply_markup=kb
    )
    assert isinstance(edited, Message) and edited.text == "Taurus" and edited.edit_date
    stored = server.last_message(USER)
    assert stored is not None and stored.text == "Taurus" and stored.edit_date
    # Omitting reply_markup removes the keyboard, as in Telegram: that is a modification.
    await bot.edit_message_text(text="Taurus", chat_id=USER, message_id=msg.message_id)
    assert server.last_message(USER).reply_markup is None  # type: ignore[union-attr]
    await bot.edit_message_reply_markup(chat_id=USER, message_id=msg.message_id, reply_markup=kb)
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_reply_markup(
            chat_id=USER, message_id=msg.message_id, reply_markup=kb
        )

    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text(text="x", chat_id=USER, message_id=9999)
    assert server.delete_message_for_user(USER, msg.message_id)
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text(text="Gemini", chat_id=USER, message_id=msg.message_id)
    with pytest.raises(TelegramBadRequest, match="message to delete not found"):
        await bot.delete_message(USER, msg.message_id)

    photo = await bot.send_photo(USER, BufferedInputFile(png(), "a.png"), caption="A")
    with pytest.raises(TelegramBadRequest, match="no text in the message"):
        await bot.edit_message_text(text="x", chat_id=USER, message_id=photo.message_id)
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_caption(chat_id=USER, message_id=photo.message_id, caption="A")
    await bot.edit_message_caption(chat_id=USER, message_id=photo.message_id, caption="B")
    assert photo.photo is not None
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_media(
            media=InputMediaPhoto(media=photo.photo[-1].file_id, caption="B"),
            chat_id=USER,
            message_id=photo.message_id,
        )
    swapped = await bot.edit_message_media(
        media=InputMediaPhoto(media=BufferedInputFile(png(color="gold"), "b.png"), caption="C"),
        chat_id=USER,
        message_id=photo.message_id,
    )
    assert isinstance(swapped, Message) and swapped.photo is not None
    assert swapped.photo[-1].file_id != photo.photo[-1].file_id and swapped.caption == "C"
    assert server.uploads() == 2
    assert await bot.delete_message(USER, photo.message_id)
    assert server.last_message(USER) is None


async def test_html_parse_mode_validation(server: BotAPIServer, bot: Bot) -> None:
    with pytest.raises(TelegramBadRequest, match="can't parse entities"):
        await bot.send_photo(
            USER, BufferedInputFile(png(), "x.png"), caption="<b>Aries & Leo</b>", parse_mode="HTML"
        )
    with pytest.raises(TelegramBadRequest, match="can't parse entities"):
        await bot.send_message(USER, "Mars < Venus > Earth", parse_mode="HTML")
    assert server.uploads() == 0

    ok = await bot.send_photo(
        USER,
        BufferedInputFile(png(), "x.png"),
        caption="<b>Aries &amp; Leo</b> &lt;3",
        parse_mode="HTML",
    )
    assert ok.caption == "Aries & Leo <3"
    assert ok.caption_entities is not None
    assert (ok.caption_entities[0].type, ok.caption_entities[0].length) == ("bold", 11)
    plain = await bot.send_message(USER, "Mars < Venus & Earth")  # no parse_mode: anything goes
    assert plain.text == "Mars < Venus & Earth"

    with pytest.raises(TelegramBadRequest, match="message caption is too long"):
        await bot.send_photo(USER, BufferedInputFile(png(), "x.png"), caption="x" * 1025)
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(USER, "x" * 4097)
    await bot.send_message(USER, "x" * 4096)


async def test_dispatcher_polling_end_to_end(server: BotAPIServer) -> None:
    """A real Dispatcher long-polls the double, answers /start and a button press."""
    router = Router()

    @router.message(CommandStart())
    async def start(message: Message) -> None:
        await message.answer(
            f"Hello, {message.from_user.first_name if message.from_user else '?'}",
            reply_markup=keyboard(("Aries", "sign:aries")),
        )

    @router.callback_query(F.data.startswith("sign:"))
    async def pick(query: CallbackQuery) -> None:
        await query.answer("Saved")
        if isinstance(query.message, Message):
            await query.message.edit_text(f"Your sign: {query.data}")

    dp = Dispatcher()
    dp.include_router(router)
    polling_bot = Bot(TOKEN, session=server.aiogram_session())
    # A 300 s long poll: the reply can only arrive if the update woke the waiting poll.
    task = asyncio.create_task(
        dp.start_polling(polling_bot, handle_signals=False, polling_timeout=300)
    )
    try:
        await server.wait_for(lambda: server.bot().active_poll is not None)
        update = server.send_text(USER, "/start")
        assert update["message"]["entities"] == [{"type": "bot_command", "offset": 0, "length": 6}]
        reply = await server.wait_for(lambda: server.last_message(USER))
        assert reply.text == "Hello, Ann"
        assert reply.reply_to_message_id is None

        server.click(USER, "Aries")
        answer = await server.wait_for(lambda: server.callback_answers)
        assert answer[0]["text"] == "Saved" and answer[0]["data"] == "sign:aries"
        await server.wait_for(lambda: server.last_message(USER).edit_date)  # type: ignore[union-attr]
        assert server.last_message(USER).text == "Your sign: sign:aries"  # type: ignore[union-attr]
        incoming = server.messages(USER, include_incoming=True)
        assert [m.outgoing for m in incoming] == [False, True]
        allowed = server.calls_to("getUpdates")[0].params["allowed_updates"]
        assert sorted(allowed) == ["callback_query", "message"]
    finally:
        await dp.stop_polling()
        await asyncio.wait_for(task, 5)


async def test_concurrent_get_updates_conflict_and_wakeup(server: BotAPIServer, bot: Bot) -> None:
    # A 300 s long poll: it can only return with the update if sending it woke the poll.
    pending = asyncio.create_task(bot.get_updates(timeout=300, request_timeout=320))
    await server.wait_for(lambda: server.bot().active_poll is not None)
    with pytest.raises(TelegramConflictError, match="terminated by other getUpdates request"):
        await bot.get_updates(timeout=0)
    server.send_text(USER, "hello")
    updates = await pending
    assert [u.message.text for u in updates if u.message] == ["hello"]

    # Not acknowledged yet: delivered again; offset acknowledges it.
    again = await bot.get_updates(timeout=0)
    assert [u.update_id for u in again] == [updates[0].update_id]
    assert await bot.get_updates(offset=updates[-1].update_id + 1, timeout=0) == []
    assert not server.bot().updates


async def test_terminate_old_policy_matches_telegram() -> None:
    srv = BotAPIServer(tokens=[TOKEN], conflict_policy="terminate_old")
    await srv.start()
    b = Bot(TOKEN, session=srv.aiogram_session())
    try:
        old = asyncio.create_task(b.get_updates(timeout=5))
        await srv.wait_for(lambda: srv.bot().active_poll is not None)
        assert await b.get_updates(timeout=0) == []
        with pytest.raises(TelegramConflictError):
            await asyncio.wait_for(old, 2)
    finally:
        await b.session.close()
        await srv.stop()


async def test_allowed_updates_and_inaccessible_callback(server: BotAPIServer, bot: Bot) -> None:
    server.send_text(USER, "text")
    server.press_button(USER, 31337, "old:button")
    updates = await bot.get_updates(allowed_updates=["callback_query"], timeout=0)
    assert len(updates) == 1
    query = updates[0].callback_query
    assert query is not None and query.data == "old:button"
    assert isinstance(query.message, InaccessibleMessage)
    assert query.message.message_id == 31337 and query.message.chat.id == USER
    assert await bot.answer_callback_query(query.id, text="Too old")
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_callback_query(query.id)


async def test_inline_query_validation_and_chosen_result(server: BotAPIServer, bot: Bot) -> None:
    sent = await bot.send_photo(USER, BufferedInputFile(png(), "x.png"))
    assert sent.photo is not None
    good = sent.photo[-1].file_id
    query_id = server.inline_query(USER, "aries")
    with pytest.raises(TelegramBadRequest, match="wrong file identifier"):
        await bot.answer_inline_query(
            query_id,
            [InlineQueryResultCachedPhoto(id="1", photo_file_id="bogus")],
        )
    assert await bot.answer_inline_query(
        query_id,
        [
            InlineQueryResultCachedPhoto(
                id="aries",
                photo_file_id=good,
                caption="<b>Aries</b>",
                parse_mode="HTML",
                reply_markup=keyboard(("More", "more:aries")),
            )
        ],
        cache_time=60,
    )
    answer = server.inline_answers[-1]
    assert answer["query"] == "aries" and answer["results"][0]["photo_file_id"] == good
    update = server.choose_inline_result(USER, "aries", "aries")
    assert update["chosen_inline_result"]["inline_message_id"]
    updates = await bot.get_updates(timeout=0)
    chosen = updates[-1].chosen_inline_result
    assert chosen is not None and chosen.result_id == "aries"
    assert chosen.inline_message_id is not None
    assert (
        await bot.edit_message_caption(inline_message_id=chosen.inline_message_id, caption="Leo")
        is True
    )


async def test_inline_answer_refuses_foreign_and_forgotten_file_ids(
    server: BotAPIServer, bot: Bot
) -> None:
    """Like Telegram: a cached photo result must name a file_id this bot may send now."""
    server.add_bot(OTHER_TOKEN)
    other = Bot(OTHER_TOKEN, session=server.aiogram_session())
    try:
        theirs = await other.send_photo(USER, BufferedInputFile(png(), "x.png"))
    finally:
        await other.session.close()
    ours = await bot.send_photo(USER, BufferedInputFile(png(), "y.png"))
    assert theirs.photo is not None and ours.photo is not None
    query_id = server.inline_query(USER, "x")
    with pytest.raises(TelegramBadRequest, match="wrong file identifier"):
        await bot.answer_inline_query(
            query_id, [InlineQueryResultCachedPhoto(id="1", photo_file_id=theirs.photo[-1].file_id)]
        )
    server.forget_file_ids()
    with pytest.raises(TelegramBadRequest, match="wrong file identifier"):
        await bot.answer_inline_query(
            query_id, [InlineQueryResultCachedPhoto(id="1", photo_file_id=ours.photo[-1].file_id)]
        )
    assert not server.inline_queries[query_id]["answered"]  # a refusal answers nothing


async def test_commands_webhook_chat_action_and_events(server: BotAPIServer, bot: Bot) -> None:
    events = server.subscribe()
    assert await bot.delete_webhook(drop_pending_updates=True)
    commands = [
        BotCommand(command="start", description="Start"),
        BotCommand(command="today", description="Today"),
    ]
    assert await bot.set_my_commands(commands)
    got = await bot.get_my_commands()
    assert [(c.command, c.description) for c in got] == [("start", "Start"), ("today", "Today")]
    assert await bot.set_my_commands(commands, language_code="ru")
    with pytest.raises(TelegramBadRequest, match="BOT_COMMAND_INVALID"):
        await bot.set_my_commands([BotCommand(command="Bad Command", description="x")])
    assert await bot.send_chat_action(USER, "upload_photo")
    msg = await bot.send_message(USER, "hi")
    await bot.edit_message_text(text="hey", chat_id=USER, message_id=msg.message_id)
    await bot.delete_message(USER, msg.message_id)
    kinds = []
    while not events.empty():
        kinds.append(events.get_nowait()["type"])
    assert kinds == ["chat_action", "message_sent", "message_edited", "message_deleted"]
    server.unsubscribe(events)
    with pytest.raises(TimeoutError, match="condition not met"):
        await server.wait_for(lambda: server.callback_answers, timeout=0.1)


async def test_disconnected_poller_frees_its_slot(server: BotAPIServer, bot: Bot) -> None:
    """A bot that stops polling (task cancelled) must not leave a phantom 409 behind."""
    # A 300 s long poll: it can only return with the update if sending it woke the poll.
    pending = asyncio.create_task(bot.get_updates(timeout=300, request_timeout=320))
    await server.wait_for(lambda: server.bot().active_poll is not None)
    pending.cancel()
    await server.wait_for(lambda: server.bot().active_poll is None, timeout=2)
    assert server.calls_to("getUpdates")[-1].outcome == "cancelled"
    assert await bot.get_updates(timeout=0) == []


async def test_raw_updates_for_fuzzing(server: BotAPIServer, bot: Bot) -> None:
    update_id = server.send_raw_update(
        {
            "message": {
                "message_id": 5,
                "date": 1,
                "chat": {"id": USER, "type": "private"},
                "from": {"id": USER, "is_bot": False, "first_name": "Ann"},
                "text": "raw",
            }
        }
    )
    updates = await bot.get_updates(timeout=0)
    assert [(u.update_id, u.message.text if u.message else None) for u in updates] == [
        (update_id, "raw")
    ]
    assert server.send_text(USER, "next")["update_id"] == update_id + 1


@pytest.mark.parametrize(
    ("html", "text", "entities"),
    [
        ("<b>a</b> <i>b</i>", "a b", [("bold", 0, 1), ("italic", 2, 1)]),
        ("😀<u>x</u>", "😀x", [("underline", 2, 1)]),  # offsets are UTF-16 units
        ('<span class="tg-spoiler">s</span>', "s", [("spoiler", 0, 1)]),
        ('<pre><code class="language-py">x</code></pre>', "x", [("pre", 0, 1)]),
        ("&lt;&#65;&quot;&amp;", '<A"&', []),
    ],
)
def test_parse_html_accepts(html: str, text: str, entities: list[tuple[str, int, int]]) -> None:
    plain, parsed = parse_html(html)
    assert plain == text
    assert [(e["type"], e["offset"], e["length"]) for e in parsed] == entities


@pytest.mark.parametrize(
    "html",
    ["a & b", "<b>x", "x</b>", "<b>x</i>", "<script>", "a < b > c", "&nbsp;", "<span>x</span>"],
)
def test_parse_html_rejects(html: str) -> None:
    with pytest.raises(EntityParseError):
        parse_html(html)


async def test_chat_history_for_a_ui(server: BotAPIServer, bot: Bot) -> None:
    server.send_text(USER, "/start")
    sent = await bot.send_photo(USER, BufferedInputFile(png(), "x.png"), caption="hi")
    history = server.chat_history(USER)
    assert [(m["outgoing"], m.get("text"), m.get("caption")) for m in history] == [
        (False, "/start", None),
        (True, None, "hi"),
    ]
    assert sent.photo is not None
    async with aiohttp.ClientSession() as http:
        url = f"{server.url}/file/bot{TOKEN}/{history[1]['file_path']}"
        async with http.get(url) as resp:
            assert resp.status == 200
            assert await resp.read() == server.file_bytes(sent.photo[-1].file_id)
