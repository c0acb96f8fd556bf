"""One upload per asset across processes: the image sender loads "the file_id of this upload"
through the cache engine, so the engine's Redis lock (waiters woken by pub/sub) makes one
process upload while the others send by its file_id. Two engines on one real Redis stand for
two processes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bot.domain.services.images import ImageSender
from cache import CacheAside
from tests.unit.bot.test_bot_images import FakeBot, MemoryStore


async def test_two_processes_upload_an_asset_once(
    tmp_path: Path, redis: Redis, key_prefix: str
) -> None:
    (tmp_path / "signs").mkdir()
    (tmp_path / "signs" / "leo.jpg").write_bytes(b"leo" * 10)
    store = MemoryStore()  # the shared Postgres
    bot = FakeBot(delay=0.05)  # uploads take a moment: the other process asks meanwhile

    def process() -> ImageSender:
        return ImageSender(
            store,
            assets_dir=tmp_path,
            cache=CacheAside(redis),
            upload_key=lambda b, a, sha: f"{key_prefix}:v1:upload:{b}:{a}:{sha[:8]}",
        )

    a, b = process(), process()
    sends: list[Any] = [
        sender.send_photo(bot, chat, "signs/leo.jpg")  # type: ignore[arg-type]
        for chat, sender in enumerate((a, b, a, b, a, b))
    ]
    results = await asyncio.gather(*sends)
    assert bot.uploads == 1
    assert sorted(r.method for r in results) == ["file_id"] * 5 + ["upload"]
    for sender in (a, b):
        await sender._cache.aclose()
