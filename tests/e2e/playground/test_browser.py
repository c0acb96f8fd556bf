"""The playground in headless Chromium, driving the real bot.

``run_playground`` starts the local Bot API with the web page; the bot is the runner's own
``serve`` (build_app, getMe, commands, scheduler, long polling) on the run's Postgres and the
shared Redis under this test's key prefix. One full conversation per language is replayed in the
browser, and every text it shows is the bot's own catalogue text (bot.telegram.texts): /start,
the picture, a sign, the horoscope for today and (the same message edited) tomorrow, the daily
push button, /settings and the chosen language pressed again (nothing re-sent), the time-zone
question, a wrong zone answered with the zone error and ForceReply, the reply that fixes it,
/help; then inline mode, whose answer is made to arrive before the page's own POST returns.
Screenshots go to tests/artifacts/playground/; with UPDATE_SCREENSHOTS=1 the inline-mode one
also replaces docs/screenshots/playground.png.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import Settings, load_settings
from bot.domain.zodiac import sign_label
from bot.telegram.texts import Texts, texts, visible_text
from db.types import Lang, Sign
from devtools.playground.main import PLAYGROUND_BOT_USERNAME, PlaygroundHandle, run_playground

CHROMIUM = Path(os.environ.get("PLAYWRIGHT_CHROMIUM", "/usr/bin/chromium"))
ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / "tests" / "artifacts" / "playground"
DOC_SCREENSHOT = ROOT / "docs" / "screenshots" / "playground.png"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STEP = 15_000  # ms: generous for a cold first horoscope on a loaded CI machine

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"no Chromium at {CHROMIUM} (apt install chromium; Playwright's own browser "
        "download is not used)",
    ),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Running:
    def __init__(self) -> None:
        self.handle: PlaygroundHandle | None = None
        self.ready = asyncio.Event()
        self.stop = asyncio.Event()
        self.out = io.StringIO()
        self.task: asyncio.Task[int] | None = None


@pytest.fixture
async def playground(
    database_url: str, redis_url: str, key_prefix: str, redis: Any, tmp_path: Path
) -> AsyncIterator[Running]:
    """The playground and the real bot, as `make run` without BOT_TOKEN starts them.

    ``redis`` is requested for its clean-up: it deletes this test's keys (``key_prefix``).
    """
    from bot.ops.stores import open_stores
    from bot.runner import serve

    running = Running()
    settings = load_settings(
        database_url=database_url,
        redis_url=redis_url,
        cache_prefix=key_prefix,
        run_migrations=False,
        metrics_addr="",
        playground_addr=f"127.0.0.1:{_free_port()}",
        data_dir=tmp_path,
        log_format="console",
        # A test clicks faster than a person: the per-user throttle would drop its updates.
        throttle_enabled=False,
    )

    async def run_bot(bot_settings: Settings) -> int:
        # What the runner's run() does after its token check, minus signal handlers.
        async with open_stores(bot_settings) as stores:
            return await serve(bot_settings, stores, running.stop)

    def on_ready(handle: PlaygroundHandle) -> None:
        running.handle = handle
        running.ready.set()

    running.task = asyncio.create_task(
        run_playground(settings, run_bot, out=running.out, on_ready=on_ready)
    )
    await asyncio.wait_for(running.ready.wait(), 10)
    assert running.handle is not None
    server = running.handle.server
    # The bot is up once it long-polls the double.
    await server.wait_for(lambda: server.bot().active_poll is not None, timeout=30)
    try:
        yield running
    finally:
        running.stop.set()
        code = await asyncio.wait_for(running.task, 30)
        assert code == 0


# Counts the page's server-sent events per inline query id, before app.js sees them: lets a test
# hold the page's POST until the bot's answer has reached the page (the order that raced).
SSE_SPY = """
(() => {
  const Original = window.EventSource;
  window.__inlineSeen = [];
  window.EventSource = class extends Original {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (message) => {
        try {
          const event = JSON.parse(message.data);
          if (event.type === "inline_results") window.__inlineSeen.push(event.query_id);
        } catch (error) { /* not ours */ }
      });
    }
  };
})();
"""


@contextlib.asynccontextmanager
async def browser_page() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1440, "height": 900})
            await context.add_init_script(SSE_SPY)
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.errors = errors  # type: ignore[attr-defined]
            yield page
        finally:
            await browser.close()


async def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def shown(markup: str) -> str:
    """A catalogue text as the chat shows it (markup gone), up to its first placeholder."""
    return visible_text(markup.split("{", 1)[0])


async def conversation(page: Any, server: Any, lang: Lang, first_name: str, step: str) -> Any:
    """One person's whole conversation in ``lang``; every line checked against the catalogue.

    Returns the horoscope message's locator (shown as "tomorrow" at the end)."""
    from playwright.async_api import expect

    t: Texts = texts(lang)
    composer = page.locator("#text")

    async def say(text: str) -> None:
        await composer.fill(text)
        await composer.press("Enter")

    def last_in(text: str) -> Any:
        return page.locator(".msg.in").filter(has_text=text).last

    # /start typed in the composer: the welcome picture with the sign keyboard.
    await say("/start")
    welcome = page.locator(".msg.in").filter(has=page.locator("img.photo")).last
    await expect(welcome).to_be_visible(timeout=STEP)
    await expect(welcome).to_contain_text(visible_text(t.welcome_new.format(name=first_name)))
    await page.wait_for_function(
        "() => [...document.querySelectorAll('img.photo')].some("
        "i => i.complete && i.naturalWidth > 0)",
        timeout=STEP,
    )
    await expect(page.locator(".msg.out").filter(has_text="/start").last).to_be_visible()
    await shot(page, f"{step}-1-start")

    # A sign: the welcome picture becomes today's horoscope (an edit of the same message).
    leo = sign_label(Sign.LEO, lang)
    await welcome.get_by_role("button", name=leo).click()
    horoscope = page.locator(".msg.in").filter(has_text=f"{leo} · {t.today}").last
    await expect(horoscope).to_be_visible(timeout=STEP)
    await expect(horoscope.locator("img.photo")).to_be_visible()
    await expect(horoscope.get_by_role("button", name=t.btn_tomorrow)).to_be_visible()
    # Bold header rendered from entities as DOM, not as literal tags.
    await expect(horoscope.locator(".content b").first).to_be_visible()
    content = await horoscope.locator(".content").inner_text()
    assert "<b>" not in content
    # The text under the header names no day: the header alone says "today".
    text = content.split("\n", 1)[1]
    assert t.today not in text.lower() and t.tomorrow not in text.lower(), text
    await shot(page, f"{step}-2-horoscope")

    # Tomorrow: the same element is edited in place, with the new content.
    message_id = await horoscope.get_attribute("data-id")
    target = page.locator(f".msg[data-id='{message_id}']")
    await target.evaluate("el => { window.__target = el; }")
    await target.get_by_role("button", name=t.btn_tomorrow).click()
    await expect(target).to_contain_text(f"{leo} · {t.tomorrow}", timeout=STEP)
    await expect(target).to_have_attribute("data-edited", "1")
    assert await target.evaluate("el => el === window.__target")
    assert await page.locator(f".msg[data-id='{message_id}']").count() == 1
    await shot(page, f"{step}-3-tomorrow")

    # The daily push button turns push on, says so, and shows the new state.
    await target.get_by_role("button", name=t.btn_push_off).click()
    await expect(page.locator("#toast")).to_contain_text(shown(t.push_now_on), timeout=STEP)
    await expect(target.get_by_role("button", name=t.btn_push_on)).to_be_visible(timeout=STEP)

    # /settings; the chosen language pressed again changes nothing and sends nothing.
    await say("/settings")
    await expect(last_in(shown(t.settings))).to_be_visible(timeout=STEP)
    # Pinned by id: the same message is edited into other screens below.
    settings_id = await last_in(shown(t.settings)).get_attribute("data-id")
    settings = page.locator(f".msg[data-id='{settings_id}']")
    await expect(settings).to_contain_text(visible_text(t.settings_push_on.format(hour=9)))
    answers, edits = len(server.callback_answers), len(server.calls_to("editMessageText"))
    await settings.get_by_role("button", name=f"• {t.lang_name}").click()
    await server.wait_for(lambda: len(server.callback_answers) > answers, timeout=STEP / 1000)
    assert server.callback_answers[-1].get("text") is None  # answered quietly
    assert len(server.calls_to("editMessageText")) == edits
    await expect(settings).to_have_attribute("data-edited", "0")

    # The time-zone question, a wrong zone, the zone error with ForceReply, the fixing reply.
    await settings.get_by_role("button", name=t.btn_timezone).click()
    await expect(settings).to_contain_text(shown(t.tz_choose), timeout=STEP)
    await say("Mars/Olympus")
    error = last_in(visible_text(t.tz_unknown.format(value="Mars/Olympus")))
    await expect(error).to_be_visible(timeout=STEP)
    # The page acts as a client does for ForceReply: the next message replies to the error.
    await expect(page.locator("#reply-bar")).to_be_visible()
    await expect(composer).to_have_attribute("placeholder", t.tz_placeholder)
    await shot(page, f"{step}-4-zone-error")
    await say("Tbilisi")
    saved = visible_text(t.tz_saved.split("{time}", 1)[0].format(tz="Asia/Tbilisi"))
    await expect(last_in(saved)).to_be_visible(timeout=STEP)
    await expect(page.locator("#reply-bar")).to_be_hidden()
    await expect(composer).to_have_attribute("placeholder", re.compile(r"^Message"))
    quote = page.locator(".msg.out").filter(has_text="Tbilisi").last.locator(".quote")
    await expect(quote).to_contain_text(shown(t.tz_unknown))
    error_id = int(await error.get_attribute("data-id") or 0)
    [answer] = [
        m
        for m in server.messages(int(await current_user_id(page)), include_incoming=True)
        if m.text == "Tbilisi"
    ]
    assert answer.reply_to_message_id == error_id

    # /help, in the same language.
    await say("/help")
    await expect(last_in(shown(t.help))).to_be_visible(timeout=STEP)
    await shot(page, f"{step}-5-help")
    return target


async def current_user_id(page: Any) -> str:
    return str(await page.locator(".user-item.active").get_attribute("data-user-id"))


async def test_playground_in_a_browser(playground: Running) -> None:
    from playwright.async_api import expect

    handle = playground.handle
    assert handle is not None
    banner = playground.out.getvalue()
    assert handle.page_url in banner and "BOT_TOKEN=" in banner
    server = handle.server

    ru, en = texts(Lang.RU), texts(Lang.EN)
    async with browser_page() as page:
        await page.goto(handle.page_url)
        await expect(page.locator("body[data-ready='1']")).to_be_attached(timeout=STEP)
        await expect(page.locator("#bot-name")).to_have_text("Horoscope Bot")
        await expect(page.locator(".user-item.active")).to_contain_text("Анна (ru)")

        # Анна, in Russian, from /start to /help.
        await conversation(page, server, Lang.RU, "Анна", "ru")

        # Another user, in English, with their own (empty) chat; Leo's card is re-sent by
        # file_id this time, and the side panel says so.
        await page.locator(".user-item", has_text="Ben (en)").click()
        await expect(page.locator(".user-item.active")).to_contain_text("Ben (en)")
        await expect(page.locator(".empty-chat")).to_be_visible()
        await expect(page.locator(".msg", has_text="Анна")).to_have_count(0)
        ben_horoscope = await conversation(page, server, Lang.EN, "Ben", "en")
        await expect(page.locator("#img-fileid")).not_to_have_text("0", timeout=5000)
        await expect(page.locator("#cache-rows tr[data-namespace='horoscope']")).to_be_visible(
            timeout=5000
        )

        # Inline mode: "@bot leo" lists results (a cached photo now that Leo's card has a
        # file_id); picking one posts it "via @bot" and reaches the bot as chosen_inline_result.
        # The page's POST is held until the bot's answer has reached the page over the event
        # stream: the order in which app.js used to drop the answer.
        async def answer_first(route: Any) -> None:
            response = await route.fetch()
            query_id = (await response.json())["inline_query_id"]
            await page.wait_for_function(
                "id => window.__inlineSeen.includes(id)", arg=query_id, timeout=STEP
            )
            await route.fulfill(response=response)

        await page.route("**/playground/api/inline", answer_first)
        leo_en = sign_label(Sign.LEO, Lang.EN)
        await page.locator("#text").fill(f"@{PLAYGROUND_BOT_USERNAME} leo")
        result = page.locator(".inline-result").first
        await expect(result).to_be_visible(timeout=STEP)
        await expect(result).to_contain_text(leo_en.split(" ", 1)[1])
        await page.wait_for_timeout(2300)  # one stats refresh, so the panel is current
        await ben_horoscope.evaluate("el => el.scrollIntoView({block: 'start'})")
        await shot(page, "05-inline")
        # The picture for docs/: a chat with the bot's photo, inline results and the panel.
        # Rewritten only on request (or when missing) so a test run leaves the tree clean.
        if os.environ.get("UPDATE_SCREENSHOTS") == "1" or not DOC_SCREENSHOT.exists():
            DOC_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(DOC_SCREENSHOT))
        await result.click()
        via = page.locator(".msg.out").filter(has=page.locator(".via")).last
        await expect(via).to_contain_text(f"via @{PLAYGROUND_BOT_USERNAME}")
        await expect(page.locator("#inline-panel")).to_be_hidden()
        # The bot fetched (and acknowledged) the chosen_inline_result update.
        await server.wait_for(lambda: not server.bot().updates, timeout=10)

        # Back to Анна: her chat is still there, in Russian.
        await page.locator(".user-item", has_text="Анна (ru)").click()
        await expect(page.locator(".msg.in").filter(has_text=ru.tomorrow).last).to_be_visible()
        await expect(page.locator(".msg.in").filter(has_text=shown(ru.help)).last).to_be_visible()
        await page.locator(".user-item", has_text="Ben (en)").click()
        await expect(via).to_be_visible()
        await expect(page.locator(".msg.in").filter(has_text=shown(en.help)).last).to_be_visible()
        await shot(page, "06-final")

        assert page.errors == [], page.errors  # type: ignore[attr-defined]
