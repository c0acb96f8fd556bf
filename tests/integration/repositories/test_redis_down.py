"""Redis down (a closed port): every read still answers from Postgres, views and last-seen
stamps go straight to Postgres through the side commands' fallbacks."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, text

from db.models import User
from db.repositories import (
    DataContext,
    HoroscopeRepository,
    ImageAssetRepository,
    UserRepository,
)
from db.types import Lang, Sign
from tests.helpers import FakeGenerator, TgUser, unit_of_work

DAY = dt.date(2026, 11, 21)


async def test_every_read_answers_from_postgres(down_ctx: DataContext) -> None:
    ctx = down_ctx
    async with unit_of_work(ctx.session_factory) as s:
        users = UserRepository(s, ctx)
        _, created = await users.get_or_create_from_telegram(TgUser(1, "Ann"))
        assert created
        await users.set_sign(1, Sign.LEO)
        await ImageAssetRepository(s, ctx).save(7, "signs/leo.jpg", "F1", None, "a" * 64)
    old = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    async with ctx.session_factory() as s, s.begin():
        await s.execute(text("UPDATE users SET last_seen_at = :t"), {"t": old})

    def redis_errors() -> float:
        return sum(c.get("redis_error", 0.0) for c in ctx.cache.metrics.snapshot().values())

    errors_before = redis_errors()
    for _ in range(3):
        async with unit_of_work(ctx.session_factory) as s:
            users = UserRepository(s, ctx)
            got, created = await users.get_or_create_from_telegram(TgUser(1, "Ann"))
            assert not created and got.zodiac_sign is Sign.LEO
            assert (await users.get(1)) == got
            assert await users.get(2) is None
            images = ImageAssetRepository(s, ctx)
            ref = await images.get_file_id(7, "signs/leo.jpg", "a" * 64)
            assert ref is not None and ref.file_id == "F1"
            assert await images.file_ids(7, ["signs/leo.jpg"]) == {}  # cache-only read
            assert await images.warm(7) == 1
            assert await users.count_seen_since(old + dt.timedelta(days=1)) == 1
    # the breaker skips the dead Redis: the rounds of reads cost at most the three failures
    # that open it, not one failed connection each (counted, not timed)
    assert redis_errors() - errors_before <= 3
    assert ctx.cache.breaker.state != 0  # open (or half-open): Redis is being skipped

    async with ctx.session_factory() as s:
        seen = await s.scalar(select(User.last_seen_at).where(User.id == 1))
        assert seen is not None and seen > old  # the HSET fallback wrote it directly

    gen = FakeGenerator()
    horoscopes = HoroscopeRepository(ctx, gen)
    first = await horoscopes.get_or_generate(Sign.LEO, DAY, Lang.RU, count_view=True)
    again = await horoscopes.get_or_generate(Sign.LEO, DAY, Lang.RU, count_view=True)
    assert first == again and len(gen.calls) == 1
    assert await horoscopes.get_many([(Sign.LEO, DAY, Lang.RU)]) == [None]
    assert await horoscopes.load_many([(Sign.LEO, DAY, Lang.RU)]) == [first]
    assert await horoscopes.precompute(Sign.LEO, DAY, Lang.RU) == "present"
    assert await horoscopes.views.totals(DAY) == {Sign.LEO: 2}
    assert await horoscopes.views.buffered(DAY) == {}
