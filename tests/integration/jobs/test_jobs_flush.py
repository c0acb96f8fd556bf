"""The flush jobs move Redis buffers (views, last-seen) into Postgres, exactly once, and the
file_id warm-up loads a bot's file_ids into Redis."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import insert, select

from db.models import HoroscopeView, ImageAsset, User
from db.repositories.users import UserRepository
from db.repositories.views import HoroscopeViewRepository
from db.types import Sign
from jobs.deps import JobDeps
from jobs.maintenance import flush_last_seen, flush_views, warm_file_ids

D = dt.date(2026, 3, 10)


async def test_flush_views_moves_the_buffer_once(deps: JobDeps) -> None:
    views = HoroscopeViewRepository(deps.data)
    for _ in range(3):
        await views.record_view(Sign.LEO, D)
    await views.record_view(Sign.ARIES, D)
    result = await flush_views(deps)
    assert (result.rows, result.views) == (2, 4)
    assert (await flush_views(deps)).views == 0  # nothing left, nothing applied twice
    async with deps.session_factory() as s:
        rows = dict(
            (await s.execute(select(HoroscopeView.zodiac_sign, HoroscopeView.view_count))).all()
        )
    assert rows == {Sign.LEO: 3, Sign.ARIES: 1}


async def test_flush_last_seen_writes_the_stamps(deps: JobDeps) -> None:
    async with deps.session_factory() as s, s.begin():
        await s.execute(insert(User), [{"id": 1, "first_name": "A"}, {"id": 2, "first_name": "B"}])
    stamp = dt.datetime(2030, 1, 1, tzinfo=dt.UTC).timestamp()
    async with deps.session_factory() as s:
        repo = UserRepository(s, deps.data)
        await deps.cache.load_many([], also=[repo.last_seen_command(1, stamp)])
    result = await flush_last_seen(deps)
    assert result.stamps == 1
    async with deps.session_factory() as s:
        seen = dict((await s.execute(select(User.id, User.last_seen_at))).all())
    assert seen[1] == dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert seen[2] < seen[1]


async def test_warm_file_ids_loads_the_bots_file_ids(deps: JobDeps) -> None:
    bot_id = deps.bot_id
    assert bot_id is not None
    async with deps.session_factory() as s, s.begin():
        await s.execute(
            insert(ImageAsset),
            [
                {
                    "bot_id": bot_id,
                    "asset_key": f"signs/{sign.value}.jpg",
                    "file_id": f"F{i}",
                    "content_sha256": "0" * 64,
                }
                for i, sign in enumerate(Sign)
            ]
            + [
                {
                    "bot_id": 1,
                    "asset_key": "signs/leo.jpg",
                    "file_id": "other",
                    "content_sha256": "0" * 64,
                }
            ],
        )
    assert await warm_file_ids(deps) == 12
    keys = [deps.keyspace.key("fileid", bot_id, f"signs/{s.value}.jpg") for s in Sign]
    assert await deps.redis.exists(*keys) == 12  # type: ignore[union-attr]
    assert await deps.redis.exists(deps.keyspace.key("fileid", 1, "signs/leo.jpg")) == 0  # type: ignore[union-attr]
