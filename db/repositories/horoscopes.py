"""Horoscopes: Redis, then Postgres, then the generator, and one text per (sign, date, lang).

Generation is the expensive step (an LLM call costs money and seconds), so it must happen once
per key however many updates and processes ask at the same moment:

* in one process, the engine's single-flight makes concurrent askers share one load;
* across processes, the engine's Redis lock makes one process load while the others wait;
* when Redis is down (or a waiter gives up after ``lock_wait``, or precompute races a person),
  a claim row with a lease (db/repositories/claims.py) taken in a short transaction decides
  who calls the generator; the others look for its row every so often;
* and the row is written with ``INSERT ... ON CONFLICT DO NOTHING`` then re-read, so even two
  generations that slipped through (an expired lease) agree on the single stored text.

**No connection is held while the generator runs.** A load reads Postgres in a short session
(closed), claims in a short transaction (committed), calls the generator with nothing checked
out, then stores the text and deletes the claim in one more short transaction. An LLM that
takes 12 s (or hangs) therefore costs the pool nothing, however many keys are cold at once.

**A person waits at most ``deadline`` seconds for the generator** (HOROSCOPE_DEADLINE, counted
from the request). Past it they get the built-in text (``stand_in``), which the engine caches
for FALLBACK_TTL like any fallback, while the generation carries on in the background: when it
finishes, its text is stored in Postgres and replaces the built-in one in Redis. Callers with no
person waiting (precompute, the push) use a repository without a deadline and keep the model's
whole budget. Reading Postgres is not under the deadline: it is bounded by the database
timeouts, and when Postgres is unavailable the person is asked to try again (db/guard.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any, Final, Literal

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from cache import Codec, Load, SideCommand
from db.guard import outside_updates
from db.models import Horoscope
from db.repositories.claims import CLAIM_LEASE, Claim, take_claim
from db.repositories.context import DataContext
from db.repositories.values import HoroscopeData
from db.repositories.views import HoroscopeViewRepository
from db.types import GeneratedHoroscope, HoroscopeGenerator, Lang, Sign

__all__ = ["FALLBACK_TTL", "MIN_TTL", "HoroscopeRepository"]

log = logging.getLogger(__name__)

#: A fallback text (the model failed) is served for ten minutes, then the model is asked again.
FALLBACK_TTL: Final = 600.0
#: Floor for dates already over (someone reads yesterday's): cached an hour, not forever.
MIN_TTL: Final = 3600.0

_CODEC: Final[Codec[HoroscopeData]] = Codec(HoroscopeData)

_COLUMNS: Final = (
    Horoscope.zodiac_sign,
    Horoscope.horoscope_date,
    Horoscope.lang,
    Horoscope.content,
    Horoscope.generator,
    Horoscope.model,
)

#: How often a loader looks for the row of a key another process is generating (doubling).
_POLL_FIRST: Final = 0.05
_POLL_MAX: Final = 1.0
#: Seconds a failed or cancelled generation spends releasing its claim (else the lease ends).
_RELEASE_ON_FAILURE: Final = 1.0

PrecomputeResult = Literal["generated", "present", "failed"]


def _to_data(row: Any) -> HoroscopeData:
    return HoroscopeData(
        sign=Sign(row.zodiac_sign),
        date=row.horoscope_date,
        lang=Lang(row.lang),
        text=row.content,
        generator=row.generator,
        model=row.model,
    )


def _fallback(
    sign: Sign, date: dt.date, lang: Lang, generated: GeneratedHoroscope
) -> HoroscopeData:
    """A built-in text shown in place of the model's: never stored in Postgres, cached briefly."""
    return HoroscopeData(
        sign=sign,
        date=date,
        lang=lang,
        text=generated.text,
        generator=generated.generator,
        model=generated.model,
        is_fallback=True,
    )


class _Generation:
    """One generation running in the background of this process; ``late`` once a person
    stopped waiting for it (its result must then replace the built-in text in Redis)."""

    __slots__ = ("late", "task")

    def __init__(self, task: asyncio.Task[tuple[HoroscopeData, PrecomputeResult]]) -> None:
        self.task = task
        self.late = False


class HoroscopeRepository:
    """One horoscope per (sign, date, lang), generated once and read from Redis afterwards.

    Holds no unit-of-work session: every load runs in its own short sessions (and commits its
    own INSERT), because a single-flight load is shared by many updates.

    ``deadline`` (seconds) bounds how long a person waits for the generator; ``stand_in`` is the
    built-in generator whose text they get past it (required with a deadline). None: wait for
    the generator whatever it takes (precompute, the push).
    """

    __slots__ = (
        "_ctx",
        "_generations",
        "_generator",
        "_stand_in",
        "claim_lease",
        "deadline",
        "views",
    )

    def __init__(
        self,
        ctx: DataContext,
        generator: HoroscopeGenerator,
        *,
        deadline: float | None = None,
        stand_in: HoroscopeGenerator | None = None,
        claim_lease: float = CLAIM_LEASE,
    ) -> None:
        if deadline is not None and stand_in is None:
            raise ValueError("a deadline needs a stand_in generator (the built-in text)")
        self._ctx = ctx
        self._generator = generator
        self._stand_in = stand_in
        self.deadline = deadline
        self.claim_lease = claim_lease
        self.views = HoroscopeViewRepository(ctx)
        self._generations: dict[str, _Generation] = {}

    def key(self, sign: Sign, date: dt.date, lang: Lang) -> str:
        return self._ctx.keys.key("horoscope", date, sign, lang)

    def ttl(self, value: HoroscopeData) -> float:
        """Until the date has ended in the bot's zone, plus a day (late readers, other zones).

        A fallback text gets FALLBACK_TTL; a date long over gets MIN_TTL.
        """
        if value.is_fallback:
            return FALLBACK_TTL
        end = dt.datetime.combine(value.date + dt.timedelta(days=2), dt.time(), self._ctx.tz)
        remaining = (end - dt.datetime.now(dt.UTC)).total_seconds()
        return max(remaining, MIN_TTL)

    # ------------------------------------------------------------------ Postgres, briefly

    async def _select(self, s: AsyncSession, sign: Sign, date: dt.date, lang: Lang) -> Any | None:
        stmt = select(*_COLUMNS).where(
            Horoscope.zodiac_sign == sign,
            Horoscope.horoscope_date == date,
            Horoscope.lang == lang,
        )
        return (await s.execute(stmt)).first()

    async def _read(self, sign: Sign, date: dt.date, lang: Lang) -> Any | None:
        """The stored row, in a session of its own that is closed before returning."""
        async with self._ctx.session_factory() as s:
            return await self._select(s, sign, date, lang)

    async def _claim_or_row(
        self, name: str, sign: Sign, date: dt.date, lang: Lang
    ) -> tuple[Claim | None, Any | None]:
        """One short transaction: claim the key and look for its row.

        (claim, None): ours to generate. (None, row): stored meanwhile. (None, None): another
        process holds a live claim. The look happens after the claim in the same transaction:
        a holder stores its row and deletes its claim in one commit, so whoever finds the
        claim gone also finds the row.
        """
        factory = self._ctx.session_factory
        async with factory() as s, s.begin():
            claim = await take_claim(s, factory, name, self.claim_lease)
            row = await self._select(s, sign, date, lang)
            if row is not None and claim is not None:
                await claim.release_in(s)
                claim = None
        return claim, row

    async def _store(
        self, claim: Claim, sign: Sign, date: dt.date, lang: Lang, generated: Any
    ) -> tuple[Any, bool]:
        """INSERT ... ON CONFLICT DO NOTHING, re-read when someone else's text won, and drop
        the claim: one short transaction. Returns (row, inserted)."""
        stmt = (
            insert(Horoscope)
            .values(
                zodiac_sign=sign,
                horoscope_date=date,
                lang=lang,
                content=generated.text,
                generator=generated.generator[:32],
                model=generated.model,
                prompt_tokens=generated.prompt_tokens,
                completion_tokens=generated.completion_tokens,
                cost_usd=None if generated.cost_usd is None else Decimal(str(generated.cost_usd)),
            )
            .on_conflict_do_nothing(
                index_elements=[Horoscope.zodiac_sign, Horoscope.horoscope_date, Horoscope.lang]
            )
            .returning(*_COLUMNS)
        )
        async with self._ctx.session_factory() as s, s.begin():
            row = (await s.execute(stmt)).first()
            inserted = row is not None
            if row is None:  # somebody else's text won: use the stored one
                row = await self._select(s, sign, date, lang)
            await claim.release_in(s)
        return row, inserted

    # ------------------------------------------------------------------ generating

    async def _generate_and_store(
        self, sign: Sign, date: dt.date, lang: Lang
    ) -> tuple[HoroscopeData, PrecomputeResult]:
        """Claim, generate with no connection held, store; or the row someone else stored."""
        name = f"horoscope:{date}:{sign}:{lang}"
        pause = _POLL_FIRST
        while True:
            claim, row = await self._claim_or_row(name, sign, date, lang)
            if row is not None:
                return _to_data(row), "present"
            if claim is not None:
                break
            # Another process is generating this key: its row will be there soon (or its
            # lease runs out and we take over).
            await asyncio.sleep(pause)
            pause = min(pause * 2, _POLL_MAX)
        try:
            async with claim.kept():
                generated = await self._generator.generate(sign, date, lang)
        except BaseException:
            # The next caller (another process, or this one after a restart) may try at once
            # rather than after the lease; briefly, as a shutdown may be cancelling us.
            await claim.release(timeout=_RELEASE_ON_FAILURE)
            raise
        if generated.is_fallback:
            await claim.release()  # the fallback is not stored: the model is asked again later
            return _fallback(sign, date, lang, generated), "failed"
        row, inserted = await self._store(claim, sign, date, lang, generated)
        assert row is not None
        return _to_data(row), "generated" if inserted else "present"

    async def _load_or_generate(
        self, sign: Sign, date: dt.date, lang: Lang
    ) -> tuple[HoroscopeData, PrecomputeResult]:
        """Postgres, else generate and store; returns the value and what happened."""
        row = await self._read(sign, date, lang)
        if row is not None:
            return _to_data(row), "present"
        return await self._generate_and_store(sign, date, lang)

    # ------------------------------------------------------------------ the person's deadline

    async def _in_background(
        self, key: str, sign: Sign, date: dt.date, lang: Lang
    ) -> tuple[HoroscopeData, PrecomputeResult]:
        outside_updates()  # may outlive the update that started it: takes no update slot
        value, outcome = await self._generate_and_store(sign, date, lang)
        generation = self._generations.get(key)
        if generation is not None and generation.late and outcome != "failed":
            # A person got the built-in text meanwhile (cached briefly): replace it now.
            await self._replace(key, value)
        return value, outcome

    def _generation_done(self, key: str, generation: _Generation, _task: object = None) -> None:
        if self._generations.get(key) is generation:
            del self._generations[key]
        task = generation.task
        if task.cancelled():
            return
        exc = task.exception()  # retrieved: a late failure has nobody else to tell
        if exc is not None and generation.late:
            log.warning("background generation of %s failed: %r", key, exc)

    async def _stand_in_text(self, sign: Sign, date: dt.date, lang: Lang) -> HoroscopeData:
        assert self._stand_in is not None
        return _fallback(sign, date, lang, await self._stand_in.generate(sign, date, lang))

    async def _within(self, sign: Sign, date: dt.date, lang: Lang, until: float) -> HoroscopeData:
        """The generated text if it is ready by ``until`` (loop time), else the built-in one
        while the generation carries on in the background."""
        key = self.key(sign, date, lang)
        generation = self._generations.get(key)
        if generation is None:
            task = asyncio.get_running_loop().create_task(
                self._in_background(key, sign, date, lang), name=f"generate:{key}"
            )
            generation = self._generations[key] = _Generation(task)
            task.add_done_callback(functools.partial(self._generation_done, key, generation))
        elif generation.late:
            # Someone already waited for this one in vain: do not make the next person wait.
            return await self._stand_in_text(sign, date, lang)
        remaining = until - asyncio.get_running_loop().time()
        done, _ = await asyncio.wait({generation.task}, timeout=max(remaining, 0.0))
        if done:
            return generation.task.result()[0]
        generation.late = True
        log.info("horoscope deadline passed for %s: built-in text served meanwhile", key)
        return await self._stand_in_text(sign, date, lang)

    async def _replace(self, key: str, value: HoroscopeData) -> None:
        """Put the stored text into Redis in place of whatever is there (a fallback)."""
        # invalidate first: drops a cached fallback and any load lock, so an in-flight load
        # cannot overwrite the stored text with an older answer
        await self._ctx.cache.invalidate(key)
        await self._ctx.cache.set(key, value, ttl=self.ttl, codec=_CODEC)

    async def aclose(self) -> None:
        """Cancel background generations (shutdown); their claims' leases run out."""
        tasks = [g.task for g in self._generations.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def wait_background(self) -> None:
        """Wait for the background generations running now (tests observe them this way)."""
        while self._generations:
            tasks = [g.task for g in self._generations.values()]
            await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def generating(self) -> int:
        """Generations running in the background of this process right now."""
        return len(self._generations)

    # ------------------------------------------------------------------ loading

    def _loader(
        self, sign: Sign, date: dt.date, lang: Lang
    ) -> Callable[[], Awaitable[HoroscopeData | None]]:
        until = (
            None
            if self.deadline is None
            else asyncio.get_running_loop().time() + self.deadline  # from the request on
        )

        async def load() -> HoroscopeData | None:
            row = await self._read(sign, date, lang)
            if row is not None:
                return _to_data(row)
            if until is None:
                value, _ = await self._generate_and_store(sign, date, lang)
                return value
            return await self._within(sign, date, lang, until)

        return load

    def load_spec(self, sign: Sign, date: dt.date, lang: Lang) -> Load[HoroscopeData]:
        """The cache-aside Load of one text, to batch with other reads in ONE ``load_many``
        round trip (e.g. the text, its picture's file_id and the view HINCRBY together)."""
        return Load(self.key(sign, date, lang), self._loader(sign, date, lang), _CODEC, self.ttl)

    # ------------------------------------------------------------------ reads

    async def get_or_generate(
        self, sign: Sign, date: dt.date, lang: Lang, *, count_view: bool = False
    ) -> HoroscopeData:
        """The text for (sign, date, lang): one Redis round trip when warm.

        ``count_view=True`` (a person asked) adds the view HINCRBY to that same round trip.
        """
        also: Sequence[SideCommand] = (self.views.view_command(sign, date),) if count_view else ()
        value: HoroscopeData | None = await self._ctx.cache.get_or_load(
            self.key(sign, date, lang),
            self._loader(sign, date, lang),
            ttl=self.ttl,
            codec=_CODEC,
            also=also,
        )
        if value is None:  # the loader never returns None; only a foreign NOT_FOUND could
            raise LookupError(f"no horoscope for {sign} {date} {lang}")
        return value

    async def get_many(
        self, items: Sequence[tuple[Sign, dt.date, Lang]]
    ) -> list[HoroscopeData | None]:
        """Cached texts only, one MGET (inline mode answers from what is warm)."""
        return await self._ctx.cache.get_many([self.key(*item) for item in items], _CODEC)

    async def load_many(self, items: Sequence[tuple[Sign, dt.date, Lang]]) -> list[HoroscopeData]:
        """Like ``get_many`` in one MGET, but misses are loaded/generated (concurrently)."""
        values = await self._ctx.cache.load_many([self.load_spec(*item) for item in items])
        out: list[HoroscopeData] = []
        for item, value in zip(items, values, strict=True):
            if not isinstance(value, HoroscopeData):
                raise LookupError(f"no horoscope for {item}")
            out.append(value)
        return out

    async def precompute(self, sign: Sign, date: dt.date, lang: Lang) -> PrecomputeResult:
        """Make sure the text exists in Postgres and Redis, without counting a view.

        Postgres is asked first (not Redis): a cached fallback text must not stop the job
        from trying the generator again. A failed generation (exception or fallback) is
        logged and reported as ``"failed"``; the job carries on with the next key.
        """
        try:
            value, outcome = await self._load_or_generate(sign, date, lang)
        except Exception:
            log.exception("precompute of %s %s %s failed", sign, date, lang)
            return "failed"
        if outcome != "failed":
            await self._replace(self.key(sign, date, lang), value)
        return outcome

    async def for_job(self, sign: Sign, date: dt.date, lang: Lang) -> HoroscopeData:
        """The text for a job with no person waiting (the push): Redis, else Postgres or the
        generator with its whole budget; never counts a view.

        It loads outside the engine's shared load (single-flight and Redis lock) on purpose: a
        person asking for the same key meanwhile must not join a load without a deadline. They
        run their own, find this job's claim, get the built-in text at their deadline, and the
        stored text replaces it when it arrives (here, and in their background generation).
        """
        key = self.key(sign, date, lang)
        (cached,) = await self._ctx.cache.get_many([key], _CODEC)
        if cached is not None:  # a cached fallback too: the model failed minutes ago
            return cached
        value, outcome = await self._load_or_generate(sign, date, lang)
        if outcome != "failed":
            await self._replace(key, value)
        return value

    async def count_generated_since(self, since: dt.datetime) -> int:
        async with self._ctx.session_factory() as s:
            stmt = (
                select(func.count()).select_from(Horoscope).where(Horoscope.generated_at >= since)
            )
            return int(await s.scalar(stmt) or 0)
