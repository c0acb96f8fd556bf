"""run_playground and the page's HTTP API, without a browser and without stores.

The bot here is a stand-in (an aiogram echo router that also answers with a picture), which is
enough to check the contract with the runner (token and URL handed over, double stopped when
the bot returns) and the JSON/SSE the page relies on.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiogram import Bot, Dispatcher, F, Router
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.types import (
    BufferedInputFile,
    CallbackQuery,
    ForceReply,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InlineQuery,
    InlineQueryResultArticle,
    InputTextMessageContent,
    Message,
)

from bot.config import Settings, load_settings
from devtools.playground import PLAYGROUND_TOKEN, PLAYGROUND_USERS, run_playground
from devtools.playground.main import PlaygroundHandle

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
    b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00"
    b"\x00\x00IEND\xaeB`\x82"
)
ANNA = PLAYGROUND_USERS[0].id


def echo_router() -> Router:
    router = Router()

    @router.message(F.text == "/pic")
    async def pic(message: Message) -> None:
        keyboard = InlineKeyboardMarkup(
            inline_keyboard=[[InlineKeyboardButton(text="Again", callback_data="again")]]
        )
        await message.answer_photo(
            BufferedInputFile(PNG, "dot.png"), caption="<b>a</b> &lt;dot&gt;", reply_markup=keyboard
        )

    @router.message(F.text == "/ask")
    async def ask(message: Message) -> None:
        await message.answer("Which zone?", reply_markup=ForceReply(input_field_placeholder="UTC"))

    @router.message(F.reply_to_message)
    async def replied(message: Message) -> None:
        assert message.reply_to_message is not None
        await message.answer(f"reply to {message.reply_to_message.message_id}")

    @router.message()
    async def echo(message: Message) -> None:
        await message.answer(f"<i>{(message.text or '').replace('<', '&lt;')}</i>")

    @router.callback_query()
    async def again(query: CallbackQuery) -> None:
        assert query.message is not None
        await query.message.edit_caption(caption="edited")  # type: ignore[union-attr]
        await query.answer("done")

    @router.inline_query()
    async def inline(query: InlineQuery) -> None:
        content = InputTextMessageContent(message_text=f"<b>{query.query}</b>")
        await query.answer(
            [InlineQueryResultArticle(id="r1", title="Echo", input_message_content=content)]
        )

    return router


class Running:
    def __init__(self) -> None:
        self.handle: PlaygroundHandle | None = None
        self.ready = asyncio.Event()
        self.stop = asyncio.Event()
        self.bot_settings: Settings | None = None
        self.out = io.StringIO()


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    state = Running()

    async def run_bot(settings: Settings) -> int:
        state.bot_settings = settings
        assert settings.bot_token is not None
        bot = Bot(
            settings.bot_token.get_secret_value(),
            session=AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_url)),
            default=DefaultBotProperties(parse_mode=ParseMode.HTML),
        )
        dp = Dispatcher()
        dp.include_router(echo_router())
        polling = asyncio.create_task(
            dp.start_polling(bot, handle_signals=False, polling_timeout=1)
        )
        await state.stop.wait()
        await dp.stop_polling()
        await polling
        return 7

    def on_ready(handle: PlaygroundHandle) -> None:
        state.handle = handle
        state.ready.set()

    settings = load_settings(playground_addr="127.0.0.1:8080").model_copy(
        update={"playground_addr": "127.0.0.1:0"}  # any free port (the validator wants 1..65535)
    )
    task = asyncio.create_task(run_playground(settings, run_bot, out=state.out, on_ready=on_ready))
    await asyncio.wait_for(state.ready.wait(), 10)
    assert state.handle is not None
    server = state.handle.server
    await server.wait_for(lambda: server.bot().active_poll is not None, timeout=10)
    yield state
    state.stop.set()
    assert await asyncio.wait_for(task, 10) == 7  # run_bot's exit code is passed through
    assert server._runner is None  # the double was stopped


async def next_event(events: aiohttp.ClientResponse, kind: str) -> dict[str, Any]:
    while True:
        line = (await asyncio.wait_for(events.content.readline(), 10)).decode()
        if line.startswith("data: "):
            event = json.loads(line[len("data: ") :])
            if event["type"] == kind:
                return event


async def test_runner_contract_and_banner(running: Running) -> None:
    handle = running.handle
    assert handle is not None and running.bot_settings is not None
    assert running.bot_settings.bot_token is not None
    assert running.bot_settings.bot_token.get_secret_value() == PLAYGROUND_TOKEN
    assert running.bot_settings.telegram_api_url == handle.api_url
    banner = running.out.getvalue()
    for expected in (handle.page_url, "BOT_TOKEN=", "Postgres", "Redis"):
        assert expected in banner


async def test_page_api_round_trip(running: Running) -> None:
    handle = running.handle
    assert handle is not None
    base = handle.api_url
    async with aiohttp.ClientSession() as http:
        async with http.get(handle.page_url) as page:
            assert page.status == 200 and "Act as" in await page.text()
        async with http.get(f"{base}/playground/static/app.js") as script:
            assert script.status == 200
        async with http.get(f"{base}/playground/api/info") as resp:
            info = await resp.json()
        assert info["bot"]["username"] == "horoscope_playground_bot"
        assert [u["label"] for u in info["users"]] == ["Анна (ru)", "Ben (en)", "Chloé (en)"]

        async with http.get(f"{base}/playground/api/events") as events:
            # A user's text and the bot's HTML answer, live, rendered as a node tree.
            async with http.post(
                f"{base}/playground/api/send", json={"user_id": ANNA, "text": "<hi>"}
            ) as resp:
                assert resp.status == 200
            mine = await next_event(events, "message")
            assert mine["message"]["from_bot"] is False
            answer = await next_event(events, "message")
            assert answer["message"]["text"] == [{"type": "italic", "children": [{"text": "<hi>"}]}]

            # A picture, its bytes, a button press that edits it, and the callback's toast.
            await http.post(f"{base}/playground/api/send", json={"user_id": ANNA, "text": "/pic"})
            await next_event(events, "message")
            photo_msg = (await next_event(events, "message"))["message"]
            async with http.get(f"{base}{photo_msg['photo']['url']}") as resp:
                assert resp.content_type == "image/png" and await resp.read() == PNG
            await http.post(
                f"{base}/playground/api/press",
                json={"user_id": ANNA, "message_id": photo_msg["id"], "data": "again"},
            )
            edited = (await next_event(events, "edit"))["message"]
            assert edited["id"] == photo_msg["id"] and edited["edited"] is True
            assert edited["caption"] == [{"text": "edited"}]
            assert (await next_event(events, "toast"))["text"] == "done"

            # Inline mode: the results, then the chosen one shown as a "via @bot" message.
            async with http.post(
                f"{base}/playground/api/inline", json={"user_id": ANNA, "query": "leo"}
            ) as resp:
                query_id = (await resp.json())["inline_query_id"]
            results = await next_event(events, "inline_results")
            assert results["query_id"] == query_id
            assert [r["id"] for r in results["results"]] == ["r1"]
            async with http.post(
                f"{base}/playground/api/choose",
                json={"user_id": ANNA, "result_id": "r1", "query": "leo"},
            ) as resp:
                via = (await resp.json())["message"]
            assert via["via"] == "horoscope_playground_bot"
            assert via["text"] == [{"type": "bold", "children": [{"text": "leo"}]}]

            # A question asked with ForceReply: the page is told (it opens a reply, as a client
            # does), and a text sent with reply_to reaches the bot as a reply.
            await http.post(f"{base}/playground/api/send", json={"user_id": ANNA, "text": "/ask"})
            await next_event(events, "message")
            question = (await next_event(events, "message"))["message"]
            assert question["force_reply"] == {"placeholder": "UTC"}
            async with http.post(
                f"{base}/playground/api/send",
                json={"user_id": ANNA, "text": "Europe/Berlin", "reply_to": question["id"]},
            ) as resp:
                assert resp.status == 200
            mine = (await next_event(events, "message"))["message"]
            assert mine["reply_to"] == question["id"]
            answer = (await next_event(events, "message"))["message"]
            assert answer["text"] == [{"text": f"reply to {question['id']}"}]
            assert answer["force_reply"] is None

        async with http.get(f"{base}/playground/api/chat/{ANNA}") as resp:
            history = (await resp.json())["messages"]
        # Texts and answers alternate; the "via @bot" message (chosen inline result) sorts last.
        assert [m["from_bot"] for m in history] == [False, True] * 4 + [False]
        assert history[-1]["via"] == "horoscope_playground_bot"
        # The history keeps the ForceReply, so a reloaded page can open the reply again.
        assert [m["force_reply"] for m in history if m["force_reply"]] == [{"placeholder": "UTC"}]

        async with http.get(f"{base}/playground/api/stats") as resp:
            stats = await resp.json()
        assert stats["telegram"]["uploads"] == 1
        assert {"images", "cache", "activity"} <= stats.keys()
        assert any(a.get("photo") == "upload" for a in stats["activity"])


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("send", {"user_id": 1, "text": "hi"}, 404),  # not a playground user
        ("send", {"user_id": ANNA, "text": ""}, 400),
        ("send", {"user_id": "x", "text": "hi"}, 400),
        ("send", {"user_id": ANNA, "text": "hi", "reply_to": "x"}, 400),
        ("send", {"user_id": ANNA, "text": "hi", "reply_to": 999_999}, 400),  # no such message
        ("press", {"user_id": ANNA, "message_id": "x", "data": "a"}, 400),
        ("inline", ["not", "an", "object"], 400),
    ],
)
async def test_bad_requests(running: Running, path: str, body: Any, status: int) -> None:
    assert running.handle is not None
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{running.handle.api_url}/playground/api/{path}", json=body) as resp,
    ):
        assert resp.status == status


async def test_unknown_photo_is_404(running: Running) -> None:
    assert running.handle is not None
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{running.handle.api_url}/playground/photo/nope") as resp,
    ):
        assert resp.status == 404
