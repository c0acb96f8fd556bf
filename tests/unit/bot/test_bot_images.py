"""The image sender with a fake Bot and an in-memory file_id store: upload once, reuse,
fallback on a rejected file_id, concurrent first sends upload once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiogram.exceptions import TelegramBadRequest, TelegramRetryAfter
from aiogram.methods import SendPhoto
from aiogram.types import FSInputFile

from bot.domain.services.images import ImageSender
from db.repositories.values import FileRef


class MemoryStore:
    def __init__(self) -> None:
        self.refs: dict[tuple[int, str], FileRef] = {}
        self.forgotten = 0

    async def get(self, bot_id: int, asset_key: str, content_sha256: str) -> FileRef | None:
        ref = self.refs.get((bot_id, asset_key))
        return ref if ref is not None and ref.content_sha256 == content_sha256 else None

    async def save(self, bot_id: int, asset_key: str, ref: FileRef) -> None:
        self.refs[(bot_id, asset_key)] = ref

    async def forget(self, bot_id: int, asset_key: str) -> None:
        self.forgotten += 1
        self.refs.pop((bot_id, asset_key), None)


class FakeBot:
    id = 42

    def __init__(self, delay: float = 0.0) -> None:
        self.uploads = 0
        self.by_id = 0
        self.valid: set[str] = set()
        self.delay = delay

    async def send_photo(self, chat_id: int, photo: Any, **_: Any) -> Any:
        await asyncio.sleep(self.delay)
        if isinstance(photo, FSInputFile):
            self.uploads += 1
            file_id = f"F{self.uploads}"
            self.valid.add(file_id)
        else:
            if photo not in self.valid:
                raise TelegramBadRequest(
                    SendPhoto(chat_id=chat_id, photo=photo),
                    "Bad Request: wrong file identifier/HTTP URL specified",
                )
            self.by_id += 1
            file_id = photo
        sizes = [
            SimpleNamespace(
                file_id=f"{file_id}-small", file_unique_id="s", width=90, height=90, file_size=1
            ),
            SimpleNamespace(
                file_id=file_id, file_unique_id="u", width=800, height=800, file_size=9
            ),
        ]
        from aiogram.types import Message

        return Message.model_construct(message_id=1, photo=sizes)


@pytest.fixture
def assets(tmp_path: Path) -> Path:
    (tmp_path / "signs").mkdir()
    for name in ("leo", "aries"):
        (tmp_path / "signs" / f"{name}.jpg").write_bytes(name.encode() * 10)
    return tmp_path


async def test_upload_once_then_by_file_id(assets: Path) -> None:
    store, bot = MemoryStore(), FakeBot()
    sender = ImageSender(store, assets_dir=assets)
    first = await sender.send_photo(bot, 1, "signs/leo.jpg")  # type: ignore[arg-type]
    second = await sender.send_photo(bot, 1, "signs/leo.jpg")  # type: ignore[arg-type]
    assert (first.method, second.method) == ("upload", "file_id")
    assert bot.uploads == 1
    assert store.refs[(42, "signs/leo.jpg")].file_id == "F1"  # the largest size


async def test_rejected_file_id_is_forgotten_and_uploaded_again(assets: Path) -> None:
    store, bot = MemoryStore(), FakeBot()
    sender = ImageSender(store, assets_dir=assets)
    await sender.send_photo(bot, 1, "signs/leo.jpg")  # type: ignore[arg-type]
    bot.valid.clear()  # Telegram forgot everything
    sent = await sender.send_photo(bot, 1, "signs/leo.jpg")  # type: ignore[arg-type]
    assert sent.method == "upload"
    assert (bot.uploads, store.forgotten) == (2, 1)


async def test_changed_file_counts_as_new(assets: Path) -> None:
    store, bot = MemoryStore(), FakeBot()
    sender = ImageSender(store, assets_dir=assets)
    await sender.send_photo(bot, 1, "signs/leo.jpg")  # type: ignore[arg-type]
    (assets / "signs" / "leo.jpg").write_bytes(b"new picture")
    fresh = ImageSender(store, assets_dir=assets)  # a new process: hashes recomputed
    assert (await fresh.send_photo(bot, 1, "signs/leo.jpg")).method == "upload"  # type: ignore[arg-type]


async def test_concurrent_first_sends_upload_once(assets: Path) -> None:
    store, bot = MemoryStore(), FakeBot(delay=0.02)
    sender = ImageSender(store, assets_dir=assets)
    results = await asyncio.gather(
        *(sender.send_photo(bot, i, "signs/aries.jpg") for i in range(10))  # type: ignore[arg-type]
    )
    assert bot.uploads == 1
    assert sorted(r.method for r in results) == ["file_id"] * 9 + ["upload"]


class RateLimitedBot(FakeBot):
    """Answers the next ``limited`` sends with a 429; records each call's keyword arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.limited = 0
        self.calls: list[dict[str, Any]] = []

    async def send_photo(self, chat_id: int, photo: Any, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        if self.limited > 0:
            self.limited -= 1
            raise TelegramRetryAfter(
                SendPhoto(chat_id=chat_id, photo="x"), "Too Many Requests", retry_after=3
            )
        return await super().send_photo(chat_id, photo)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The 429 waits of bot.telegram.api.with_retry, recorded instead of slept."""
    import bot.telegram.api as telegram

    waited: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waited.append(seconds)

    monkeypatch.setattr(telegram, "asyncio", SimpleNamespace(sleep=fake_sleep))
    return waited


async def test_429_is_waited_out_once_by_default(assets: Path, sleeps: list[float]) -> None:
    store, bot = MemoryStore(), RateLimitedBot()
    sender = ImageSender(store, assets_dir=assets)
    bot.limited = 1
    assert (await sender.send_photo(bot, 1, "signs/leo.jpg")).method == "upload"  # type: ignore[arg-type]
    bot.limited = 1
    assert (await sender.send_photo(bot, 1, "signs/leo.jpg")).method == "file_id"  # type: ignore[arg-type]
    assert sleeps == [3, 3] and len(bot.calls) == 4


async def test_retry_429_false_raises_to_the_caller(assets: Path, sleeps: list[float]) -> None:
    store, bot = MemoryStore(), RateLimitedBot()
    sender = ImageSender(store, assets_dir=assets)
    bot.limited = 1
    with pytest.raises(TelegramRetryAfter) as upload_429:
        await sender.send_photo(bot, 1, "signs/leo.jpg", retry_429=False)  # type: ignore[arg-type]
    assert upload_429.value.retry_after == 3
    assert (bot.uploads, len(bot.calls), store.refs) == (0, 1, {})
    # the caller paused and tries again: uploads now
    sent = await sender.send_photo(bot, 1, "signs/leo.jpg", retry_429=False)  # type: ignore[arg-type]
    assert sent.method == "upload" and bot.uploads == 1
    # by file_id: the 429 is raised too, and the file_id is kept (it was not rejected)
    bot.limited = 1
    with pytest.raises(TelegramRetryAfter):
        await sender.send_photo(bot, 1, "signs/leo.jpg", retry_429=False)  # type: ignore[arg-type]
    assert store.forgotten == 0 and (42, "signs/leo.jpg") in store.refs
    assert sleeps == [] and len(bot.calls) == 3
    assert (await sender.send_photo(bot, 1, "signs/leo.jpg")).method == "file_id"  # type: ignore[arg-type]


async def test_parse_mode_only_when_given(assets: Path) -> None:
    store, bot = MemoryStore(), RateLimitedBot()
    sender = ImageSender(store, assets_dir=assets)
    await sender.send_photo(bot, 1, "signs/leo.jpg", caption="<b>x</b>")  # type: ignore[arg-type]
    await sender.send_photo(bot, 1, "signs/leo.jpg", parse_mode="HTML")  # type: ignore[arg-type]
    assert "parse_mode" not in bot.calls[0]  # the Bot's default applies
    assert bot.calls[1]["parse_mode"] == "HTML"


def test_asset_paths_stay_inside(assets: Path) -> None:
    sender = ImageSender(MemoryStore(), assets_dir=assets)
    with pytest.raises(ValueError):
        sender.path("../etc/passwd")
    assert not sender.exists("../../x.jpg")
    assert sender.assets("signs") == ("signs/aries.jpg", "signs/leo.jpg")


def test_sign_asset_is_one_function_naming_existing_pictures() -> None:
    """One place names a sign's picture; the push job sends the same asset the bot caches."""
    import jobs.push
    from bot.domain.services.horoscope import sign_asset
    from bot.domain.services.images import ASSETS_DIR
    from db.types import Sign

    assert jobs.push.sign_asset is sign_asset
    assert sign_asset(Sign.LEO) == "signs/leo.jpg"
    assert all((ASSETS_DIR / sign_asset(sign)).is_file() for sign in Sign)


async def test_rate_limited_upload_leader_takes_its_token_before_the_slot(assets: Path) -> None:
    """The push's sends wait for a bucket token (before_request). An upload leader that waited
    for it while holding the upload slot would make a person asking for the same picture wait
    on the push's bucket; it takes its token first, so the person leads the upload instead."""
    bot = FakeBot()
    sender = ImageSender(MemoryStore(), assets_dir=assets)
    gate = asyncio.Event()
    waiting = asyncio.Event()
    tokens = 0

    async def token() -> None:
        nonlocal tokens
        waiting.set()
        await gate.wait()
        tokens += 1

    push = asyncio.create_task(
        sender.send_photo(bot, 1, "signs/leo.jpg", before_request=token)  # type: ignore[arg-type]
    )
    await waiting.wait()  # the push is now waiting for its token
    person = await asyncio.wait_for(sender.send_photo(bot, 2, "signs/leo.jpg"), 1.0)  # type: ignore[arg-type]
    assert person.method == "upload"
    gate.set()
    sent = await push
    assert sent.method == "file_id" and bot.uploads == 1
    assert tokens == 1  # one request, one token


async def test_a_followers_do_not_inherit_the_leaders_429(assets: Path) -> None:
    """The push leads an upload with retry_429=False and gets a 429: that is the push's to
    handle. A person waiting for the same upload does not get the push's error: it leads."""
    bot = RateLimitedBot()
    sender = ImageSender(MemoryStore(), assets_dir=assets)
    bot.limited = 1
    entered = asyncio.Event()
    release = asyncio.Event()
    real_send = bot.send_photo

    async def send_photo(chat_id: int, photo: Any, **kwargs: Any) -> Any:
        if chat_id == 1:  # the push's upload: let the person join it first
            entered.set()
            await release.wait()
        return await real_send(chat_id, photo, **kwargs)

    bot.send_photo = send_photo  # type: ignore[method-assign]
    push = asyncio.create_task(
        sender.send_photo(bot, 1, "signs/leo.jpg", retry_429=False)  # type: ignore[arg-type]
    )
    await entered.wait()
    person = asyncio.create_task(sender.send_photo(bot, 2, "signs/leo.jpg"))  # type: ignore[arg-type]
    await asyncio.sleep(0)  # the person is now waiting on the push's upload
    release.set()
    with pytest.raises(TelegramRetryAfter):
        await push
    assert (await person).method == "upload"
    assert bot.uploads == 1
