"""JobRunner on fakeredis: one leader per run, failures contained, metrics counted."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import fakeredis
import pytest
from redis.asyncio import Redis

from bot.ops.metrics import REGISTRY
from cache import KeySpace
from jobs.leader import JobOutcome, JobRunner
from jobs.push import is_gone


@pytest.fixture
async def fake_redis() -> AsyncIterator[Redis]:
    client = fakeredis.FakeAsyncRedis()
    yield client
    await client.aclose()


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_second_runner_skips_while_first_leads(fake_redis: Redis) -> None:
    job = f"j{uuid.uuid4().hex[:6]}"
    ks = KeySpace("tunit")
    a, b = JobRunner(fake_redis, ks, lease=5), JobRunner(fake_redis, ks, lease=5)
    started, release = asyncio.Event(), asyncio.Event()
    runs = 0

    async def work() -> None:
        nonlocal runs
        runs += 1
        started.set()
        await release.wait()

    first = asyncio.create_task(a.run(job, work))
    await started.wait()
    assert set(a.running.values()) == {job}
    assert await b.run(job, work) is JobOutcome.SKIPPED
    release.set()
    assert await first is JobOutcome.OK
    assert runs == 1
    assert await fake_redis.exists(a.lock_key(job)) == 0  # released at the end
    assert await b.run(job, work) is JobOutcome.OK  # and the next run can lead
    assert sample("bot_job_runs_total", task=job, outcome="skipped") == 1
    assert sample("bot_job_runs_total", task=job, outcome="ok") == 2
    assert sample("bot_job_last_success_timestamp_seconds", task=job) > 0


async def test_failing_job_is_contained_and_releases_the_lock(fake_redis: Redis) -> None:
    job = f"j{uuid.uuid4().hex[:6]}"
    runner = JobRunner(fake_redis, KeySpace("tunit"))

    async def boom() -> None:
        raise RuntimeError("boom")

    assert await runner.run(job, boom) is JobOutcome.FAILED
    assert sample("bot_job_runs_total", task=job, outcome="failed") == 1
    assert await fake_redis.exists(runner.lock_key(job)) == 0
    assert not runner.running


async def test_without_redis_the_job_still_runs() -> None:
    class Down(fakeredis.FakeAsyncRedis):
        async def set(self, *a: object, **kw: object) -> bool:  # type: ignore[override]
            raise ConnectionError("down")

    job = f"j{uuid.uuid4().hex[:6]}"
    client = Down()
    ran = []

    async def work() -> None:
        ran.append(1)

    assert await JobRunner(client, KeySpace("tunit")).run(job, work) is JobOutcome.OK
    assert ran == [1]
    await client.aclose()


async def test_wait_running_cancels_after_timeout(fake_redis: Redis) -> None:
    job = f"j{uuid.uuid4().hex[:6]}"
    runner = JobRunner(fake_redis, KeySpace("tunit"), lease=5)
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(runner.run(job, forever))
    await started.wait()
    assert await runner.wait_running(0.05) == {job}
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await fake_redis.exists(runner.lock_key(job)) == 0


def test_is_gone() -> None:
    from aiogram.exceptions import TelegramBadRequest, TelegramForbiddenError, TelegramNetworkError
    from aiogram.methods import SendPhoto

    method = SendPhoto(chat_id=1, photo="x")
    assert is_gone(TelegramForbiddenError(method, "Forbidden: bot was blocked by the user"))
    assert is_gone(TelegramBadRequest(method, "Bad Request: chat not found"))
    assert not is_gone(TelegramBadRequest(method, "Bad Request: wrong file identifier"))
    assert not is_gone(TelegramNetworkError(method, "timeout"))
