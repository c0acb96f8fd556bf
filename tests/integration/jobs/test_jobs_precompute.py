"""Precompute on real Redis and Postgres: dates across zones, skips what exists, warms Redis,
counts no view, and a run killed half-way is finished by the next without generating twice."""

from __future__ import annotations

import asyncio
import datetime as dt

from sqlalchemy import func, select

from db.models import Horoscope, HoroscopeView
from db.repositories.horoscopes import HoroscopeRepository
from db.types import Lang, Sign
from jobs.deps import JobDeps
from jobs.precompute import run_precompute
from tests.integration.jobs.jobs_support import CountingGenerator, PinnedClock

D = dt.date(2026, 3, 10)


async def stored(deps: JobDeps) -> set[tuple[Sign, dt.date, Lang]]:
    async with deps.session_factory() as s:
        rows = await s.execute(
            select(Horoscope.zodiac_sign, Horoscope.horoscope_date, Horoscope.lang)
        )
        return {(Sign(a), b, Lang(c)) for a, b, c in rows}


async def test_covers_every_today_and_bot_tomorrow_then_skips(
    deps: JobDeps, generator: CountingGenerator, clock: PinnedClock
) -> None:
    # 10:30 UTC: the 9th in UTC-12, the 10th, the 11th in UTC+14 (and Moscow's tomorrow).
    report = await run_precompute(deps)
    assert report.as_dict() == {"total": 72, "generated": 72, "present": 0, "failed": 0}
    dates = {D - dt.timedelta(1), D, D + dt.timedelta(1)}
    assert await stored(deps) == {(s, d, lang) for s in Sign for d in dates for lang in Lang}
    assert set(generator.completed.values()) == {1}

    # Redis is warm: every text reads from the cache without the generator or Postgres.
    repo = HoroscopeRepository(deps.data, generator)
    for lang in Lang:
        assert all(v is not None for v in await repo.get_many([(s, D, lang) for s in Sign]))

    # A second run (another instance, the evening run) finds everything present.
    calls = generator.calls
    again = await run_precompute(deps)
    assert again.as_dict() == {"total": 72, "generated": 0, "present": 72, "failed": 0}
    assert generator.calls == calls

    # Never a view: no rows, nothing buffered.
    async with deps.session_factory() as s:
        assert await s.scalar(select(func.count()).select_from(HoroscopeView)) == 0
    assert await deps.redis.exists(deps.keyspace.key("buf", "views")) == 0  # type: ignore[union-attr]

    # 13:00 UTC: the 9th is over everywhere; Moscow (16:00) still has the 11th as tomorrow.
    clock.now = dt.datetime(2026, 3, 10, 13, 0, tzinfo=dt.UTC)
    later = await run_precompute(deps)
    assert later.total == 48 and later.present == 48


async def test_present_rows_are_warmed_into_redis(deps: JobDeps) -> None:
    await run_precompute(deps, dates=[D])
    await deps.redis.delete(  # type: ignore[union-attr]
        *[deps.keyspace.key("horoscope", D, s, lang) for s in Sign for lang in Lang]
    )
    report = await run_precompute(deps, dates=[D])
    assert report.present == 24
    assert (
        await deps.redis.exists(  # type: ignore[union-attr]
            *[deps.keyspace.key("horoscope", D, s, lang) for s in Sign for lang in Lang]
        )
        == 24
    )


async def test_killed_half_way_then_resumed_generates_each_once(deps: JobDeps) -> None:
    hanging = CountingGenerator(hang_after=10)
    deps.generator = hanging
    task = asyncio.create_task(run_precompute(deps, dates=[D, D + dt.timedelta(1)], concurrency=4))
    # Every worker stores what it generated before it asks for the next text, so once all four
    # hang, every completed generation is in Postgres.
    await hanging.wait_hung(4)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    first = await stored(deps)
    assert 10 <= len(first) < 48

    resumed = CountingGenerator()
    deps.generator = resumed
    report = await run_precompute(deps, dates=[D, D + dt.timedelta(1)])
    assert report.failed == 0 and report.present == len(first)
    assert report.generated == 48 - len(first)
    assert len(await stored(deps)) == 48
    # none twice: what the first run stored is not generated again
    assert not set(resumed.completed) & set(hanging.completed)
    assert set((hanging.completed + resumed.completed).values()) == {1}


async def test_generator_failing_half_way_is_reported_and_retried(deps: JobDeps) -> None:
    flaky = CountingGenerator(fail_after=7)
    deps.generator = flaky
    report = await run_precompute(deps, dates=[D])
    assert report.generated == 7 and report.failed == 17
    assert len(report.failures) == 17

    healthy = CountingGenerator()
    deps.generator = healthy
    again = await run_precompute(deps, dates=[D])
    assert again.generated == 17 and again.present == 7 and again.failed == 0
    assert set((flaky.completed + healthy.completed).values()) == {1}
