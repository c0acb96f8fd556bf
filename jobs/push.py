"""The daily push: today's horoscope, with the sign's picture, at the hour each user chose.

Rules, and why:

* **Never twice on one local date.** Each user is claimed with a conditional UPDATE
  (``last_push_date < today``), committed *before* the send. Two instances, or a restart in the
  middle of a run, cannot both claim a user; the price is that a crash between the claim and
  the send loses that one push (at most once beats at least once for a daily message).
* **Retriable failures are retried on the next run.** A send that failed for a reason that may
  go away (network, 5xx, a 429 we gave up on) un-claims the user (``last_push_date`` back to
  exactly what the claim replaced), so the next minute's run
  picks them up again.
* **Gone users stop costing sends.** 403 (blocked, deactivated) and 400 "chat not found" turn
  the push off for that user.
* **One global rate.** Every HTTP request takes a token from one bucket
  (Settings.push_rate_per_second, 25/s, under Telegram's ~30/s), the re-upload after a rejected
  file_id included. A 429 pauses the whole bucket for ``retry_after``, then the
  same user is tried again: Telegram's answer is about the bot, not about one chat.
* **A push is not a view.** The text is read with ``HoroscopeRepository.for_job``, which
  never counts one (and never makes a person asking for the same text wait on the push).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from aiogram.enums import ParseMode
from aiogram.exceptions import TelegramBadRequest, TelegramForbiddenError, TelegramRetryAfter

from bot.domain.services.horoscope import sign_asset
from bot.ops.metrics import PUSHES
from bot.telegram.texts import choose_lang, horoscope_parts, texts
from db.repositories.horoscopes import HoroscopeRepository
from db.repositories.users import UserRepository
from db.repositories.values import HoroscopeData, PushClaim, PushTarget
from db.types import Lang, Sign
from db.unit_of_work import unit_of_work
from jobs.deps import JobDeps
from jobs.ratelimit import TokenBucket

__all__ = ["PushReport", "is_gone", "run_push"]

log = structlog.get_logger(__name__)

T = TypeVar("T")

#: How many 429s in a row one send may get before it is left for the next run.
MAX_RETRY_AFTER = 5
#: Descriptions of a 400 that mean the chat no longer exists for this bot.
_GONE_400 = ("chat not found", "peer_id_invalid", "user not found")


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
    """What one run did. ``already``: claimed by another run first (not sent by us)."""

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


class _PushRun:
    def __init__(self, deps: JobDeps, bucket: TokenBucket) -> None:
        if deps.bot is None or deps.images is None:
            raise RuntimeError("the push needs a Bot and an ImageSender")
        if deps.generator is None:
            raise RuntimeError("the push needs a horoscope generator")
        self.deps = deps
        self.bot = deps.bot
        self.images = deps.images
        self.bucket = bucket
        self.horoscopes = HoroscopeRepository(deps.data, deps.generator)
        self.report = PushReport()
        self._texts: dict[tuple[Sign, Any, Lang], asyncio.Task[HoroscopeData]] = {}

    # -------------------------------------------------------------- database, one UoW each

    async def _users(self, action: Callable[[UserRepository], Awaitable[T]]) -> T:
        """Run ``action`` in its own committed transaction, then drop stale cache entries."""
        async with unit_of_work(self.deps.session_factory) as session:
            return await action(UserRepository(session, self.deps.data))

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
        """One Telegram call under the bucket; a 429 pauses everyone, then this call retries.

        ``call`` must raise a 429 rather than wait it out itself (``retry_429=False`` for the
        image sender): waiting in one worker would let the others carry on sending while
        Telegram asks the bot to stop, and would resend without a token.

        ``gated``: ``call`` takes a token itself before each of its HTTP requests (the image
        sender, through ``before_request``: a rejected file_id is followed by an upload in the
        same call, and each request needs a token of its own), so none is taken here.
        """
        for _ in range(MAX_RETRY_AFTER):
            if not gated:
                await self.bucket.acquire()
            try:
                return await call()
            except TelegramRetryAfter as exc:
                self.report.retry_after += 1
                PUSHES.labels("retry_after").inc()
                log.warning("push_retry_after", retry_after=exc.retry_after)
                self.bucket.pause(float(exc.retry_after))
        raise RuntimeError(f"still rate limited after {MAX_RETRY_AFTER} attempts")

    async def deliver(self, target: PushTarget) -> None:
        user, day = target.user, target.local_date
        sign = user.zodiac_sign
        if sign is None:  # due_for_push skips these; a race with /sign reset can still get here
            return
        settings = self.deps.settings
        lang = choose_lang(
            user.lang, user.language_code, settings.default_lang, settings.enabled_langs
        )
        try:
            horoscope = await asyncio.shield(self._text(sign, day, lang))
        except Exception:
            # Nothing was claimed yet: the user stays due and the next run tries again.
            log.exception("push_text_failed", user_id=user.id, sign=sign.value)
            self._count("failed")
            return
        caption, follow_up = horoscope_parts(sign, day, texts(lang).today, horoscope.text, lang)
        claim = await self._users(lambda repo: repo.mark_pushed(user.id, day))
        if claim is None:
            self.report.already += 1
            return
        try:
            await self._send(
                lambda: self.images.send_photo(
                    self.bot,
                    user.id,
                    sign_asset(sign),
                    caption=caption,
                    parse_mode=ParseMode.HTML,
                    retry_429=False,
                    before_request=self.bucket.acquire,
                ),
                gated=True,
            )
        except Exception as exc:
            await self._failed(claim, exc)
            return
        self._count("sent")
        if follow_up is not None:
            try:
                await self._send(
                    lambda: self.bot.send_message(user.id, follow_up, parse_mode=ParseMode.HTML)
                )
            except Exception as exc:  # the picture arrived: the day's push counts as done
                log.warning("push_follow_up_failed", user_id=user.id, error=repr(exc))

    async def _failed(self, claim: PushClaim, exc: Exception) -> None:
        user_id = claim.user_id
        if is_gone(exc):
            log.info("push_user_gone", user_id=user_id, error=str(exc))
            await self._users(lambda repo: repo.disable_push(user_id))
            self._count("blocked")
            return
        log.warning("push_send_failed", user_id=user_id, error=repr(exc))
        with contextlib.suppress(Exception):
            await self._users(lambda repo: repo.unmark_pushed(claim))
        self._count("failed")

    def _count(self, outcome: str) -> None:
        setattr(self.report, outcome, getattr(self.report, outcome) + 1)
        PUSHES.labels(outcome).inc()


async def run_push(
    deps: JobDeps,
    *,
    bucket: TokenBucket | None = None,
    batch_size: int = 500,
    concurrency: int | None = None,
) -> PushReport:
    """Send today's push to every user who is due now (``deps.clock()``); returns the counts.

    Pages through ``UserRepository.due_for_push`` by id (keyset), feeding a fixed pool of
    workers through a bounded queue, so memory stays flat for any number of subscribers and the
    next page is read while the current one is being sent.
    """
    rate = deps.settings.push_rate_per_second
    bucket = bucket or TokenBucket(rate, clock=deps.monotonic)
    workers_n = concurrency or default_concurrency(bucket.rate)
    run = _PushRun(deps, bucket)
    now = deps.clock()
    queue: asyncio.Queue[PushTarget | None] = asyncio.Queue(maxsize=batch_size)

    async def produce() -> None:
        after_id = 0
        while True:
            async with deps.session_factory() as session:
                page = await UserRepository(session, deps.data).due_for_push(
                    now, limit=batch_size, after_id=after_id
                )
            run.report.due += len(page)
            for target in page:
                await queue.put(target)
            if len(page) < batch_size:
                return
            after_id = page[-1].user.id

    async def work() -> None:
        while (target := await queue.get()) is not None:
            try:
                await run.deliver(target)
            except Exception:  # a database error for one user must not stop the others
                log.exception("push_deliver_failed", user_id=target.user.id)
                run._count("failed")

    workers = [asyncio.create_task(work()) for _ in range(workers_n)]
    try:
        await produce()
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        for text_task in run._texts.values():
            text_task.cancel()
    if run.report.due:
        log.info("push_finished", **run.report.as_dict())
    return run.report
