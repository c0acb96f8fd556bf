"""The daily push: today's horoscope, with the sign's picture, at the hour each user chose.

Every instance runs it (every PUSH_SWEEP_SECONDS, no leader lock): the work is shared, not
elected. Rules, and why:

* **Batches any instance can claim.** A run claims due users in batches with
  ``UserRepository.claim_push_batch`` (``FOR UPDATE SKIP LOCKED`` on the due rows, setting
  ``push_claimed_by``/``push_claimed_until``): concurrent claimers never wait for each other
  and never get the same user. The claim is kept alive (extended every quarter lease) while
  the run works; an instance that dies stops extending it, the claim expires and any
  instance's next sweep takes the users over. Postgres rather than a Redis stream: the truth
  (``last_push_date``) is already there, claim and completion are rows of the same table,
  and the push keeps its bookkeeping when Redis is lost.
* **Once per local date, nobody skipped.** ``last_push_date`` is written right after Telegram
  accepted the picture (``complete_pushes``, conditional on ``last_push_date < today``; the
  completions of sends that end while one such UPDATE is in flight are group-committed in
  the next: one statement for many users, none waiting more than two round trips). A user
  is sent to only while this run's claim on them has at least half its lease left (so it
  cannot expire during the send and be taken over). The one window left: an instance killed
  after Telegram accepted a send and before its completion committed (a Postgres round trip
  or two, or a send still in flight when the process died): its users are pushed again by the
  instance that takes the claim over. So a death costs at most the sends in flight at that
  moment a second copy, never a skipped user.
* **Retriable failures are retried by a later sweep.** A send that failed for a reason that
  may go away (network, 5xx, a 429 we gave up on) gives the claim back with a delay
  (``RETRY_DELAY``), so another sweep (this instance's or another's) tries again.
* **Gone users stop costing sends.** 403 (blocked, deactivated) and 400 "chat not found" turn
  the push off for that user.
* **One global rate.** Every HTTP request takes a slot of one schedule shared by all instances
  (jobs/global_rate.py, a GCRA script in Redis; the in-process bucket without Redis), the
  re-upload after a rejected file_id included. A 429 pauses every instance for
  ``retry_after`` (a shared pause key), then the same user is tried again: Telegram's answer
  is about the bot, not about one chat. ``PUSH_PAID_BROADCAST`` sends with
  ``allow_paid_broadcast`` (Bot API 7.11) and allows rates up to 1000/s.
* **A push is not a view.** The text is read with ``HoroscopeRepository.for_job``, which
  never counts one (and never makes a person asking for the same text wait on the push).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import structlog
from aiogram.enums import ParseMode
from aiogram.exceptions import TelegramBadRequest, TelegramForbiddenError, TelegramRetryAfter

from bot.domain.services.horoscope import sign_asset
from bot.ops.metrics import PUSHES
from bot.telegram.texts import choose_lang, horoscope_parts, texts
from db.repositories.coalesce import CoalescingWriter
from db.repositories.horoscopes import HoroscopeRepository
from db.repositories.users import UserRepository
from db.repositories.values import HoroscopeData, PushTarget
from db.types import Lang, Sign
from db.unit_of_work import unit_of_work
from jobs.deps import JobDeps
from jobs.global_rate import GlobalRateLimiter
from jobs.ratelimit import TokenBucket

__all__ = ["PushReport", "RateLimiter", "is_gone", "push_limiter", "run_push"]

log = structlog.get_logger(__name__)

T = TypeVar("T")

#: How many 429s in a row one send may get before it is left for a later sweep.
MAX_RETRY_AFTER = 5
#: How long a user whose send failed (retriably) waits before a sweep may claim them again.
RETRY_DELAY = dt.timedelta(seconds=30)
#: How many times a completion is tried after a successful send before giving up (the claim
#: then expires and the user is pushed again: a duplicate, logged).
COMPLETE_ATTEMPTS = 3
#: Descriptions of a 400 that mean the chat no longer exists for this bot.
_GONE_400 = ("chat not found", "peer_id_invalid", "user not found")


class RateLimiter(Protocol):
    """What the push needs of a limiter: jobs.global_rate.GlobalRateLimiter, or the
    in-process TokenBucket (adapted by ``_Local``)."""

    rate: float

    async def acquire(self) -> None: ...

    async def pause(self, seconds: float) -> None: ...


class _Local:
    """The in-process TokenBucket as a RateLimiter (its ``pause`` is synchronous)."""

    def __init__(self, bucket: TokenBucket) -> None:
        self.bucket = bucket
        self.rate = bucket.rate

    async def acquire(self) -> None:
        await self.bucket.acquire()

    async def pause(self, seconds: float) -> None:
        self.bucket.pause(seconds)


def push_limiter(deps: JobDeps) -> RateLimiter:
    """The shared limiter on the app's Redis (one rate for every instance); without Redis, a
    bucket of this process's own."""
    rate = deps.settings.push_rate_per_second
    if deps.redis is None:
        return _Local(TokenBucket(rate, clock=deps.monotonic))
    return GlobalRateLimiter(deps.redis, deps.keyspace.key("pushrate", "global"), rate)


def is_gone(exc: BaseException) -> bool:
    """Whether a send error means this user can never be reached (turn the push off)."""
    if isinstance(exc, TelegramForbiddenError):
        return True
    if isinstance(exc, TelegramBadRequest):
        text = str(getattr(exc, "message", None) or exc).lower()
        return any(part in text for part in _GONE_400)
    return False


@dataclass(slots=True)
class PushReport:
    """What one run did. ``due``: users this run claimed. ``already``: claimed users it did
    not send to because its claim was no longer safe to use (or the push was recorded by
    someone else first)."""

    due: int = 0
    sent: int = 0
    blocked: int = 0
    failed: int = 0
    already: int = 0
    retry_after: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "due": self.due,
            "sent": self.sent,
            "blocked": self.blocked,
            "failed": self.failed,
            "already": self.already,
            "retry_after": self.retry_after,
        }


def default_concurrency(rate: float) -> int:
    """Enough sends in flight to use the rate at Telegram's latency (~0.2 s), but bounded."""
    return max(4, min(32, math.ceil(rate / 2)))


def default_batch_size(rate: float) -> int:
    """About four seconds of sends at the full rate: small enough that several instances
    share a run evenly and a dead one strands few users, large enough that claiming is a
    small part of the work."""
    return max(10, min(500, math.ceil(rate * 4)))


class _PushRun:
    def __init__(self, deps: JobDeps, limiter: RateLimiter) -> None:
        if deps.bot is None or deps.images is None:
            raise RuntimeError("the push needs a Bot and an ImageSender")
        if deps.generator is None:
            raise RuntimeError("the push needs a horoscope generator")
        self.deps = deps
        self.bot = deps.bot
        self.images = deps.images
        self.limiter = limiter
        self.owner = deps.instance
        self.lease = dt.timedelta(seconds=deps.settings.push_claim_seconds)
        #: a claim is used for a send only while this much of its lease is left
        self.margin = self.lease / 2
        self.paid = deps.settings.push_paid_broadcast
        self.horoscopes = HoroscopeRepository(deps.data, deps.generator)
        self.report = PushReport()
        #: users claimed by this run and not finished yet -> until when the claim holds
        self.held: dict[int, dt.datetime] = {}
        #: group commit of completions: at most one UPDATE in flight, the rest join the next
        self._completions: CoalescingWriter[int, dt.date] = CoalescingWriter(
            self._complete_batch, max
        )
        self._recorded_elsewhere = 0
        self._texts: dict[tuple[Sign, Any, Lang], asyncio.Task[HoroscopeData]] = {}

    # -------------------------------------------------------------- database, one UoW each

    async def _users(self, action: Callable[[UserRepository], Awaitable[T]]) -> T:
        """Run ``action`` in its own committed transaction, then drop stale cache entries."""
        async with unit_of_work(self.deps.session_factory) as session:
            return await action(UserRepository(session, self.deps.data))

    async def claim(self, limit: int) -> list[PushTarget]:
        now = self.deps.clock()
        until = now + self.lease
        batch = await self._users(
            lambda repo: repo.claim_push_batch(now, owner=self.owner, until=until, limit=limit)
        )
        for target in batch:
            self.held[target.user.id] = until
        self.report.due += len(batch)
        return batch

    async def keep_claims(self) -> None:
        """Extend this run's claims every quarter lease while it works (a long RetryAfter, a
        slow share of the global rate): they must not expire under a live instance."""
        period = self.lease.total_seconds() / 4
        while True:
            await asyncio.sleep(period)
            if self.held:
                await self._extend(list(self.held))

    async def _extend(self, ids: list[int]) -> None:
        until = self.deps.clock() + self.lease
        try:
            await self._users(
                lambda repo: repo.move_push_claims(ids, owner=self.owner, until=until)
            )
        except Exception:  # the claims may expire: then they are taken over, no harm
            log.exception("push_claims_not_extended", users=len(ids))
            return
        for uid in ids:
            if uid in self.held:
                self.held[uid] = until

    def _claim_usable(self, user_id: int) -> bool:
        until = self.held.get(user_id)
        return until is not None and self.deps.clock() + self.margin < until

    async def release_all(self) -> None:
        """Give back what this run still holds (it is stopping): due again for anyone now."""
        ids, self.held = list(self.held), {}
        now = self.deps.clock()
        with contextlib.suppress(Exception):
            await self._users(lambda repo: repo.move_push_claims(ids, owner=self.owner, until=now))

    def _text(self, sign: Sign, date: Any, lang: Lang) -> asyncio.Task[HoroscopeData]:
        """One read per (sign, date, lang) per run, shared by every user who needs it."""
        key = (sign, date, lang)
        task = self._texts.get(key)
        if task is None or (task.done() and task.exception() is not None):
            # for_job, not get_or_generate: people asking for the same text meanwhile must not
            # wait on the push's load, which has no deadline (the model's whole budget).
            task = asyncio.ensure_future(self.horoscopes.for_job(sign, date, lang))
            self._texts[key] = task
        return task

    # -------------------------------------------------------------- sending

    async def _send(self, call: Callable[[], Awaitable[T]], *, gated: bool = False) -> T:
        """One Telegram call under the limiter; a 429 pauses everyone, then this call retries.

        ``call`` must raise a 429 rather than wait it out itself (``retry_429=False`` for the
        image sender): waiting in one worker would let the others carry on sending while
        Telegram asks the bot to stop, and would resend without a slot.

        ``gated``: ``call`` takes a slot itself before each of its HTTP requests (the image
        sender, through ``before_request``: a rejected file_id is followed by an upload in the
        same call, and each request needs a slot of its own), so none is taken here.
        """
        for _ in range(MAX_RETRY_AFTER):
            if not gated:
                await self.limiter.acquire()
            try:
                return await call()
            except TelegramRetryAfter as exc:
                self.report.retry_after += 1
                PUSHES.labels("retry_after").inc()
                log.warning("push_retry_after", retry_after=exc.retry_after)
                await self.limiter.pause(float(exc.retry_after))
        raise RuntimeError(f"still rate limited after {MAX_RETRY_AFTER} attempts")

    async def deliver(self, target: PushTarget) -> None:
        try:
            await self._deliver(target)
        finally:
            self.held.pop(target.user.id, None)

    async def _deliver(self, target: PushTarget) -> None:
        user, day = target.user, target.local_date
        sign = user.zodiac_sign
        if sign is None:  # the claim skips these; a race with /sign reset can still get here
            await self._users(lambda repo: repo.release_push_claim(user.id, owner=self.owner))
            return
        settings = self.deps.settings
        lang = choose_lang(
            user.lang, user.language_code, settings.default_lang, settings.enabled_langs
        )
        try:
            horoscope = await asyncio.shield(self._text(sign, day, lang))
        except Exception:
            log.exception("push_text_failed", user_id=user.id, sign=sign.value)
            await self._give_back(user.id)
            self._count("failed")
            return
        caption, follow_up = horoscope_parts(sign, day, texts(lang).today, horoscope.text, lang)
        if not self._claim_usable(user.id):
            # Too little of the lease is left to be sure nobody takes the user over while we
            # send: leave them to whoever claims them next (the claim expires on its own).
            log.warning("push_claim_expiring", user_id=user.id)
            self.report.already += 1
            return
        paid: dict[str, Any] = {"allow_paid_broadcast": True} if self.paid else {}
        try:
            await self._send(
                lambda: self.images.send_photo(
                    self.bot,
                    user.id,
                    sign_asset(sign),
                    caption=caption,
                    parse_mode=ParseMode.HTML,
                    retry_429=False,
                    before_request=self.limiter.acquire,
                    **paid,
                ),
                gated=True,
            )
        except Exception as exc:
            await self._failed(user.id, exc)
            return
        await self._complete(user.id, day)
        self._count("sent")
        if follow_up is not None:
            try:
                await self._send(
                    lambda: self.bot.send_message(
                        user.id, follow_up, parse_mode=ParseMode.HTML, **paid
                    )
                )
            except Exception as exc:  # the picture arrived: the day's push counts as done
                log.warning("push_follow_up_failed", user_id=user.id, error=repr(exc))

    async def _complete_batch(self, batch: dict[int, dt.date]) -> None:
        recorded = await self._users(lambda repo: repo.complete_pushes(batch))
        for user_id in batch.keys() - recorded:
            self._recorded_elsewhere += 1
            log.warning("push_recorded_by_another_instance", user_id=user_id)

    async def _complete(self, user_id: int, day: dt.date) -> None:
        """Record the push (a few tries: a lost record means a second copy after the claim
        expires)."""
        for attempt in range(1, COMPLETE_ATTEMPTS + 1):
            try:
                await self._completions.add(user_id, day)
                return
            except Exception:
                log.exception("push_not_recorded", user_id=user_id, attempt=attempt)
                if attempt < COMPLETE_ATTEMPTS:
                    await asyncio.sleep(0.2 * attempt)

    async def _give_back(self, user_id: int) -> None:
        retry_at = self.deps.clock() + RETRY_DELAY
        with contextlib.suppress(Exception):
            await self._users(
                lambda repo: repo.release_push_claim(user_id, owner=self.owner, retry_at=retry_at)
            )

    async def _failed(self, user_id: int, exc: Exception) -> None:
        if is_gone(exc):
            log.info("push_user_gone", user_id=user_id, error=str(exc))
            await self._users(lambda repo: repo.disable_push(user_id))
            self._count("blocked")
            return
        log.warning("push_send_failed", user_id=user_id, error=repr(exc))
        await self._give_back(user_id)
        self._count("failed")

    def _count(self, outcome: str) -> None:
        setattr(self.report, outcome, getattr(self.report, outcome) + 1)
        PUSHES.labels(outcome).inc()


async def run_push(
    deps: JobDeps,
    *,
    bucket: TokenBucket | RateLimiter | None = None,
    batch_size: int | None = None,
    concurrency: int | None = None,
) -> PushReport:
    """Send today's push to every user who is due now and not claimed by another instance.

    Claims batches (``claim_push_batch``) until none is left, feeding a fixed pool of
    workers through a bounded queue, so memory stays flat for any number of subscribers and
    the next batch is claimed while the current one is being sent. ``bucket``: the rate
    limiter (default: ``push_limiter``, shared by all instances through Redis).
    """
    if bucket is None:
        limiter = push_limiter(deps)
    elif isinstance(bucket, TokenBucket):
        limiter = _Local(bucket)
    else:
        limiter = bucket
    size = batch_size or deps.settings.push_batch_size or default_batch_size(limiter.rate)
    workers_n = concurrency or default_concurrency(limiter.rate)
    run = _PushRun(deps, limiter)
    queue: asyncio.Queue[PushTarget | None] = asyncio.Queue(maxsize=size)

    async def produce() -> None:
        while True:
            batch = await run.claim(size)
            for target in batch:
                await queue.put(target)
            if not batch:
                return

    async def work() -> None:
        while (target := await queue.get()) is not None:
            try:
                await run.deliver(target)
            except Exception:  # a database error for one user must not stop the others
                log.exception("push_deliver_failed", user_id=target.user.id)
                run._count("failed")

    workers = [asyncio.create_task(work()) for _ in range(workers_n)]
    keeper = asyncio.create_task(run.keep_claims())
    try:
        await produce()
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)
    finally:
        keeper.cancel()
        for task in workers:
            task.cancel()
        await asyncio.gather(keeper, *workers, return_exceptions=True)
        for text_task in run._texts.values():
            text_task.cancel()
        if run.held:  # stopped early (cancelled, or a claim failed): others take over now
            await asyncio.shield(run.release_all())
    run.report.already += run._recorded_elsewhere
    if run.report.due:
        log.info("push_finished", **run.report.as_dict())
    return run.report
