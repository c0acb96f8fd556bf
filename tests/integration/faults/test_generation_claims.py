"""Generation without holding Postgres (issue 12.1) and the person's deadline (12.3).

The generator here is gated: every call waits until the test opens the gate, so "N generations
in flight at once on a pool of one connection" is a fact the test observes, not a timing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from collections.abc import AsyncIterator
from zoneinfo import ZoneInfo

import pytest
from redis.asyncio import Redis
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.domain.generation import TemplateGenerator
from cache import CacheAside, KeySpace
from db.engine import create_engine, create_session_factory
from db.models import GenerationClaim, Horoscope
from db.repositories import DataContext, HoroscopeRepository
from db.types import GeneratedHoroscope, Lang, Sign
from tests.faults import ConnectionWatch

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

DAY = dt.date(2026, 12, 6)


class GatedGenerator:
    """Counts calls per key; each call waits for ``gate``; ``started`` fires at ``expected``."""

    name = "gated"

    def __init__(self, expected: int, watch: ConnectionWatch | None = None) -> None:
        self.expected = expected
        self.watch = watch
        #: connections the calling task held while the generator ran (must all be 0)
        self.held: list[int] = []
        self.calls: Counter[tuple[Sign, dt.date, Lang]] = Counter()
        self.started = asyncio.Event()
        self.gate = asyncio.Event()

    async def generate(self, sign: Sign, date: dt.date, lang: Lang) -> GeneratedHoroscope:
        self.calls[(sign, date, lang)] += 1
        if self.watch is not None:
            self.held.append(self.watch.held_here())
        if sum(self.calls.values()) >= self.expected:
            self.started.set()
        await self.gate.wait()
        return GeneratedHoroscope(text=f"{sign.value} {lang.value}: slow and sure.", generator="g")


@pytest.fixture
async def one_connection(database_url: str, db_clean: None) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=1, max_overflow=0, pool_timeout=30)
    yield engine
    await engine.dispose()


def _ctx(
    factory: async_sessionmaker[AsyncSession], key_prefix: str, redis: Redis | None = None
) -> DataContext:
    return DataContext(CacheAside(redis), KeySpace(key_prefix), factory, ZoneInfo("UTC"))


async def _count(factory: async_sessionmaker[AsyncSession], model: type) -> int:
    async with factory() as s:
        return int(await s.scalar(select(func.count()).select_from(model)) or 0)


async def test_many_generations_at_once_on_one_connection(
    one_connection: AsyncEngine, key_prefix: str
) -> None:
    """Redis down, two 'processes', four keys asked twice each: four generations run at
    once on a pool of ONE connection, and none of them holds it."""
    factory = create_session_factory(one_connection)
    watch = ConnectionWatch(one_connection)
    gen = GatedGenerator(expected=4, watch=watch)
    a = HoroscopeRepository(_ctx(factory, key_prefix), gen)
    b = HoroscopeRepository(_ctx(factory, key_prefix), gen)
    signs = (Sign.ARIES, Sign.LEO, Sign.VIRGO, Sign.PISCES)
    asks = [
        asyncio.create_task(repo.get_or_generate(sign, DAY, Lang.EN))
        for sign in signs
        for repo in (a, b)
    ]
    # Four generations in flight at once although the pool has one connection: none of them
    # holds it (a loader that kept its connection would keep the other three from starting).
    await asyncio.wait_for(gen.started.wait(), 30)
    assert gen.held == [0, 0, 0, 0]
    gen.gate.set()
    values = await asyncio.gather(*asks)
    assert {v.sign for v in values} == set(signs)
    assert all(not v.is_fallback for v in values)
    assert gen.calls == Counter({(s, DAY, Lang.EN): 1 for s in signs})  # once per key
    assert await _count(factory, Horoscope) == 4
    assert await _count(factory, GenerationClaim) == 0  # every claim went with its row


async def test_a_crashed_holders_claim_is_taken_over_when_its_lease_ends(
    session_factory: async_sessionmaker[AsyncSession], db_clean: None, key_prefix: str
) -> None:
    async with session_factory() as s, s.begin():
        await s.execute(
            text(
                "INSERT INTO generation_claims (name, token, expires_at)"
                " VALUES (:n, 'dead-process', now() + interval '300 milliseconds')"
            ),
            {"n": f"horoscope:{DAY}:leo:en"},
        )
    gen = GatedGenerator(expected=1)
    gen.gate.set()
    repo = HoroscopeRepository(_ctx(session_factory, key_prefix), gen)
    value = await repo.get_or_generate(Sign.LEO, DAY, Lang.EN)
    assert not value.is_fallback and gen.calls[(Sign.LEO, DAY, Lang.EN)] == 1
    assert await _count(session_factory, GenerationClaim) == 0


async def test_person_gets_built_in_text_at_deadline_then_the_real_one(
    session_factory: async_sessionmaker[AsyncSession],
    db_clean: None,
    key_prefix: str,
    redis: Redis,
) -> None:
    gen = GatedGenerator(expected=1)
    ctx = _ctx(session_factory, key_prefix, redis)
    repo = HoroscopeRepository(ctx, gen, deadline=0.05, stand_in=TemplateGenerator())
    first = await repo.get_or_generate(Sign.LIBRA, DAY, Lang.EN)  # the gate is still shut
    assert first.is_fallback
    assert first.text == (await TemplateGenerator().generate(Sign.LIBRA, DAY, Lang.EN)).text
    assert gen.calls[(Sign.LIBRA, DAY, Lang.EN)] == 1 and repo.generating == 1
    # the next person does not wait for the same generation again: the built-in text is cached
    again = await repo.get_or_generate(Sign.LIBRA, DAY, Lang.EN)
    assert again.is_fallback and gen.calls[(Sign.LIBRA, DAY, Lang.EN)] == 1
    gen.gate.set()
    await repo.wait_background()
    assert await _count(session_factory, Horoscope) == 1  # stored in Postgres
    later = await repo.get_or_generate(Sign.LIBRA, DAY, Lang.EN)  # replaced in Redis
    assert not later.is_fallback and later.text == "libra en: slow and sure."
    assert gen.calls[(Sign.LIBRA, DAY, Lang.EN)] == 1


async def test_deadline_without_redis_does_not_make_the_next_person_wait(
    session_factory: async_sessionmaker[AsyncSession], db_clean: None, key_prefix: str
) -> None:
    gen = GatedGenerator(expected=1)
    repo = HoroscopeRepository(
        _ctx(session_factory, key_prefix), gen, deadline=0.05, stand_in=TemplateGenerator()
    )
    assert (await repo.get_or_generate(Sign.TAURUS, DAY, Lang.RU)).is_fallback
    # No cache: the second asker finds the late generation and gets the built-in text at once,
    # whatever its own deadline (with an hour to wait, this would hang: the gate is shut).
    repo.deadline = 3600
    assert (await asyncio.wait_for(repo.get_or_generate(Sign.TAURUS, DAY, Lang.RU), 30)).is_fallback
    gen.gate.set()
    await repo.wait_background()
    assert not (await repo.get_or_generate(Sign.TAURUS, DAY, Lang.RU)).is_fallback
    assert gen.calls[(Sign.TAURUS, DAY, Lang.RU)] == 1


async def test_a_person_never_waits_on_the_push_generating_the_same_text(
    session_factory: async_sessionmaker[AsyncSession],
    db_clean: None,
    key_prefix: str,
    redis: Redis,
) -> None:
    """The push (no deadline, the model's whole budget) and a person (a deadline) in one
    process, one cache engine, one cold key: the person gets the built-in text while the push
    still waits for the model, then the model's text everywhere."""
    gen = GatedGenerator(expected=1)
    ctx = _ctx(session_factory, key_prefix, redis)
    push = HoroscopeRepository(ctx, gen)
    person = HoroscopeRepository(ctx, gen, deadline=0.05, stand_in=TemplateGenerator())
    pushing = asyncio.create_task(push.for_job(Sign.GEMINI, DAY, Lang.EN))
    await asyncio.wait_for(gen.started.wait(), 30)
    # The gate is shut: joining the push's load would hang here.
    shown = await asyncio.wait_for(person.get_or_generate(Sign.GEMINI, DAY, Lang.EN), 30)
    assert shown.is_fallback
    gen.gate.set()
    assert not (await pushing).is_fallback
    await person.wait_background()
    later = await person.get_or_generate(Sign.GEMINI, DAY, Lang.EN)
    assert not later.is_fallback and gen.calls[(Sign.GEMINI, DAY, Lang.EN)] == 1
    assert await _count(session_factory, Horoscope) == 1
