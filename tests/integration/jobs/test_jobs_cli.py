"""`python -m bot precompute` as jobs.cli.precompute_command: progress, summary, exit code."""

from __future__ import annotations

import datetime as dt

import pytest
from redis.asyncio import Redis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import Horoscope
from jobs.cli import precompute_command
from tests.integration.jobs.jobs_support import CountingGenerator, make_settings


async def test_precompute_command_summary_and_exit_codes(
    redis: Redis,
    redis_url: str,
    database_url: str,
    key_prefix: str,
    session_factory: async_sessionmaker[AsyncSession],
    db_clean: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = make_settings(
        key_prefix, database_url=database_url, redis_url=redis_url, run_migrations=False
    )
    start = dt.date(2026, 5, 1)
    assert await precompute_command(settings, start=start, days=2) == 0
    out = capsys.readouterr()
    assert "generated" in out.out and "48" in out.out
    assert "48/48" in out.err  # the progress bar
    async with session_factory() as s:
        assert await s.scalar(select(func.count()).select_from(Horoscope)) == 48

    # one more day with a generator that fails after 5: exit code 1, the rest still present
    failing = CountingGenerator(fail_after=5)
    monkeypatch.setattr("bot.domain.generation.build_generator", lambda *a, **k: failing)
    assert await precompute_command(settings, start=start, days=3) == 1
    out = capsys.readouterr().out
    assert "19" in out and "48" in out  # 19 failed, 48 already present
    async with session_factory() as s:
        assert await s.scalar(select(func.count()).select_from(Horoscope)) == 53
