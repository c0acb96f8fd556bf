"""The playground in headless Chromium, driving the real bot.

``run_playground`` starts the local Bot API with the web page; the bot is the runner's own
``serve`` (build_app, getMe, commands, scheduler, long polling) on the run's Postgres and the
shared Redis under this test's key prefix. A person's session is replayed in the browser:
/start, the picture, a sign, the horoscope, Tomorrow (the same message edited), another user,
inline mode. Screenshots go to tests/artifacts/playground/; with UPDATE_SCREENSHOTS=1 the
inline-mode one also replaces docs/screenshots/playground.png.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import Settings, load_settings
from bot.domain.zodiac import sign_label
from bot.telegram.texts import texts
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
    pytest.mark.timeout(180),
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


@contextlib.asynccontextmanager
async def browser_page() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1440, "height": 900})
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


async def test_playground_in_a_browser(playground: Running) -> None:
    from playwright.async_api import expect

    handle = playground.handle
    assert handle is not None
    banner = playground.out.getvalue()
    assert handle.page_url in banner and "BOT_TOKEN=" in banner

    ru, en = texts(Lang.RU), texts(Lang.EN)
    async with browser_page() as page:
        await page.goto(handle.page_url)
        await expect(page.locator("body[data-ready='1']")).to_be_attached(timeout=STEP)
        await expect(page.locator("#bot-name")).to_have_text("Horoscope Bot")
        await expect(page.locator(".user-item.active")).to_contain_text("Анна (ru)")

        # /start typed in the composer: the welcome picture with the sign keyboard.
        await page.locator("#text").fill("/start")
        await page.locator("#text").press("Enter")
        welcome = page.locator(".msg.in").filter(has=page.locator("img.photo")).last
        await expect(welcome).to_be_visible(timeout=STEP)
        await expect(welcome).to_contain_text("Анна")
        await page.wait_for_function(
            "() => [...document.querySelectorAll('img.photo')].some("
            "i => i.complete && i.naturalWidth > 0)",
            timeout=STEP,
        )
        await expect(page.locator(".msg.out").first).to_contain_text("/start")
        await shot(page, "01-start")

        # A sign: the welcome picture becomes today's horoscope (an edit of the same message).
        leo_ru = sign_label(Sign.LEO, Lang.RU)
        await welcome.get_by_role("button", name=leo_ru).click()
        horoscope = page.locator(".msg.in").filter(has_text=f"{leo_ru} · {ru.today}").last
        await expect(horoscope).to_be_visible(timeout=STEP)
        await expect(horoscope.locator("img.photo")).to_be_visible()
        await expect(horoscope.get_by_role("button", name=ru.btn_tomorrow)).to_be_visible()
        # Bold header rendered from entities as DOM, not as literal tags.
        await expect(horoscope.locator(".content b").first).to_be_visible()
        assert "<b>" not in (await horoscope.inner_text())
        await shot(page, "02-horoscope")

        # Tomorrow: the same element is edited in place, with the new content.
        message_id = await horoscope.get_attribute("data-id")
        target = page.locator(f".msg[data-id='{message_id}']")
        await target.evaluate("el => { window.__target = el; }")
        await target.get_by_role("button", name=ru.btn_tomorrow).click()
        await expect(target).to_contain_text(f"{leo_ru} · {ru.tomorrow}", timeout=STEP)
        await expect(target).to_have_attribute("data-edited", "1")
        assert await target.evaluate("el => el === window.__target")
        assert await page.locator(f".msg[data-id='{message_id}']").count() == 1
        await shot(page, "03-tomorrow")

        # Another user, in English, with their own (empty) chat; Leo's card is re-sent by
        # file_id this time, and the side panel says so.
        await page.locator(".user-item", has_text="Ben (en)").click()
        await expect(page.locator(".user-item.active")).to_contain_text("Ben (en)")
        await expect(page.locator(".empty-chat")).to_be_visible()
        await page.locator(".empty-chat").get_by_role("button", name="START").click()
        welcome_en = page.locator(".msg.in").filter(has_text="Ben").last
        await expect(welcome_en).to_be_visible(timeout=STEP)
        leo_en = sign_label(Sign.LEO, Lang.EN)
        await welcome_en.get_by_role("button", name=leo_en).click()
        await expect(
            page.locator(".msg.in").filter(has_text=f"{leo_en} · {en.today}")
        ).to_be_visible(timeout=STEP)
        await expect(page.locator(".msg", has_text="Анна")).to_have_count(0)
        await expect(page.locator("#img-fileid")).not_to_have_text("0", timeout=5000)
        await expect(page.locator("#cache-rows tr[data-namespace='horoscope']")).to_be_visible(
            timeout=5000
        )
        await shot(page, "04-ben")

        # Inline mode: "@bot leo" lists results (a cached photo now that Leo's card has a
        # file_id); picking one posts it "via @bot" and reaches the bot as chosen_inline_result.
        server = handle.server
        await page.locator("#text").fill(f"@{PLAYGROUND_BOT_USERNAME} leo")
        result = page.locator(".inline-result").first
        await expect(result).to_be_visible(timeout=STEP)
        await expect(result).to_contain_text(leo_en.split(" ", 1)[1])
        await page.wait_for_timeout(2300)  # one stats refresh, so the panel is current
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
        await page.locator(".user-item", has_text="Ben (en)").click()
        await expect(via).to_be_visible()
        await shot(page, "06-final")

        assert page.errors == [], page.errors  # type: ignore[attr-defined]
