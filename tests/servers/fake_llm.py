"""A fake OpenAI-compatible chat-completions server (aiohttp on loopback), switchable at run time.

``POST {base_url}/chat/completions`` answers according to a script, one entry per request (the
last entry repeats); ``fake.mode = "hang"`` replaces the script with that one mode. Modes:

- answers: ``ok`` (GOOD_EN), ``ok_ru`` (GOOD_RU), ``auto`` (GOOD_RU when the prompt has Cyrillic,
  else GOOD_EN: for a bot asking in both languages), ``markdown``, ``ai`` (an "As an AI" refusal),
  ``today`` (says "today"), ``truncated`` (finish_reason=length), ``no_choices``;
- timing: ``slow`` (the ``auto`` answer after ``delay`` seconds), ``hang`` (no answer at all until
  ``release()`` or shutdown);
- failures: ``500``, ``503``, ``429`` (Retry-After: 0.3), ``429_long`` (Retry-After: 3600),
  ``401`` (an error body that quotes API_KEY, to prove it never reaches a log), ``garbage``
  (a 200 with a truncated JSON body).

``requests`` records what arrived (Authorization header, JSON body, monotonic arrival time);
``wait_requests(n)``/``await_requests(n)`` block until ``n`` have arrived, for tests that must
know the bot is now waiting on the LLM. The server runs on its own ``BackgroundLoop`` thread,
so it answers (or hangs) the same whether the bot is in this process or a subprocess and
whatever the test's loop is doing.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.servers.background import BackgroundLoop
from tests.servers.process import HOST

API_KEY = "sk-test-DO-NOT-LEAK-4f1c2b9e"

GOOD_EN = (
    "Overall: The day opens gently and picks up pace after lunch, so keep the morning for quiet "
    "tasks.\nLove: A kind word goes further than a grand gesture in the evening.\nWork and money: "
    "A careful plan pays off; check the numbers twice before you sign.\nHealth: Take a walk in "
    "the evening and go to bed a little earlier.\nLucky number: 7. Lucky colour: emerald."
)
GOOD_RU = (
    "В целом: Утро начнётся спокойно, а после обеда темп ускорится, поэтому оставьте утро для "
    "тихих дел.\nЛюбовь: Доброе слово значит больше громких жестов.\nРабота и деньги: "
    "Продуманный план окупится; перепроверьте цифры, прежде чем подписывать.\nЗдоровье: "
    "Прогуляйтесь вечером и ложитесь пораньше.\nСчастливое число: 7. Цвет удачи: изумрудный."
)
MARKDOWN_EN = (
    "## Your horoscope\n\n"
    "**Overall:** The day opens gently and picks up pace after lunch, so keep the morning for "
    "_quiet_ tasks.\n"
    "- **Love:** A kind word goes further than a grand gesture in the evening.\n"
    "- *Work and money:* A careful plan pays off; check the `numbers` twice before you sign.\n"
    "- **Health:** Take a walk in the evening and go to bed a little earlier.\n\n"
    "---\n**Lucky number:** 7. **Lucky colour:** emerald."
)
# A good answer that says "today": wrong when the stored text is read the day before.
TODAY_EN = GOOD_EN.replace("The day opens gently", "Today opens gently")
AI_EN = (
    "As an AI language model, I cannot actually predict the future, but here is a horoscope. "
    + GOOD_EN
)
MODES = frozenset(
    {
        *("ok", "ok_ru", "auto", "markdown", "ai", "today", "truncated", "no_choices"),
        *("slow", "hang"),
        *("500", "503", "429", "429_long", "401", "garbage"),
    }
)
_CYRILLIC = re.compile("[\u0400-\u04ff]")


def completion(text: str, *, finish_reason: str = "stop") -> dict[str, Any]:
    """A chat.completion body as OpenAI sends it (usage included)."""
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": "fake-model-2025",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {"prompt_tokens": 123, "completion_tokens": 456, "total_tokens": 579},
    }


def _prompt_is_russian(body: Any) -> bool:
    try:
        return any(_CYRILLIC.search(str(m.get("content", ""))) for m in body["messages"])
    except (TypeError, KeyError, AttributeError):
        return False


@dataclass
class FakeLLM:
    """The server's state; ``start()``/``stop()`` run it (the ``fake_llm`` fixture does both)."""

    script: list[str] = field(default_factory=lambda: ["ok"])
    #: seconds a ``slow`` answer takes
    delay: float = 5.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    base_url: str = ""
    _bg: BackgroundLoop | None = field(default=None, repr=False)
    _runner: web.AppRunner | None = field(default=None, repr=False)
    _release: asyncio.Event | None = field(default=None, repr=False)
    _arrived: threading.Condition = field(default_factory=threading.Condition, repr=False)

    @property
    def mode(self) -> str:
        """The mode the next request gets."""
        return self.script[min(len(self.requests), len(self.script) - 1)]

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"unknown mode {value!r}; one of {sorted(MODES)}")
        self.script = [value]

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeLLM:
        self._bg = BackgroundLoop("fake-llm").start()
        self._bg.run(self._start())
        return self

    async def _start(self) -> None:
        self._release = asyncio.Event()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}/v1"

    def release(self) -> None:
        """End every ``slow``/``hang`` request now (``slow`` answers, ``hang`` answers too:
        nobody is left waiting), and all later ones at once."""
        if self._bg is not None and self._release is not None:
            self._bg.loop.call_soon_threadsafe(self._release.set)

    def stop(self) -> None:
        if self._bg is None:
            return
        self.release()
        if self._runner is not None:
            runner = self._runner
            self._runner = None
            self._bg.run(runner.cleanup())
        self._bg.stop()
        self._bg = None

    # -- observing ------------------------------------------------------------------------------

    def wait_requests(self, count: int, timeout: float = 30.0) -> None:
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.requests) >= count, timeout):
                raise TimeoutError(f"fake LLM got {len(self.requests)} requests, not {count}")

    async def await_requests(self, count: int, within: float = 30.0) -> None:
        await asyncio.to_thread(self.wait_requests, count, within)

    # -- the endpoint ---------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        mode = self.script[min(len(self.requests), len(self.script) - 1)]
        with self._arrived:
            self.requests.append(
                {
                    "auth": request.headers.get("Authorization"),
                    "body": body,
                    "at": time.monotonic(),
                    "mode": mode,
                }
            )
            self._arrived.notify_all()
        return await self._answer(mode, body)

    async def _answer(self, mode: str, body: Any) -> web.StreamResponse:
        auto = GOOD_RU if _prompt_is_russian(body) else GOOD_EN
        simple = {
            "ok": GOOD_EN,
            "ok_ru": GOOD_RU,
            "auto": auto,
            "markdown": MARKDOWN_EN,
            "ai": AI_EN,
            "today": TODAY_EN,
        }
        if mode in simple:
            return web.json_response(completion(simple[mode]))
        if mode == "truncated":
            return web.json_response(completion(GOOD_EN, finish_reason="length"))
        if mode == "no_choices":
            return web.json_response({"choices": [], "usage": {"prompt_tokens": 1}})
        if mode in ("slow", "hang"):
            assert self._release is not None
            try:
                timeout = self.delay if mode == "slow" else None
                await asyncio.wait_for(self._release.wait(), timeout=timeout)
            except TimeoutError:
                pass
            return web.json_response(completion(auto))
        if mode == "500":
            return web.Response(status=500, text="upstream exploded")
        if mode == "503":
            return web.Response(status=503, text="overloaded")
        if mode == "429":
            return web.json_response(
                {"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "0.3"}
            )
        if mode == "429_long":
            return web.json_response(
                {"error": {"message": "quota"}}, status=429, headers={"Retry-After": "3600"}
            )
        if mode == "401":
            return web.json_response({"error": {"message": f"bad key {API_KEY}"}}, status=401)
        if mode == "garbage":
            return web.Response(
                status=200, text='{"choices": [ {"mess', content_type="application/json"
            )
        raise AssertionError(f"unknown mode {mode}")
