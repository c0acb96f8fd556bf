"""Precompute horoscopes before anyone asks: every sign x language x "today somewhere".

Why these dates: a user's "today" is their own zone's date, and inhabited zones run from
UTC-12 to UTC+14, so at any instant two or three calendar dates are "today" for someone. Adding
tomorrow in the bot's zone means the evening run prepares the next day's texts, and the
"tomorrow" button never waits for a generator either.

Why bounded concurrency: the generator may be a paid LLM with its own rate limit; four in
flight keeps a cold day (72 texts) to seconds without hammering it. Skipping what Postgres
already holds (and warming Redis with it) makes a second run, or a run on another instance,
cheap; the repository's INSERT ... ON CONFLICT DO NOTHING makes racing runs agree on one text.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol
from zoneinfo import ZoneInfo

import structlog

from db.types import Lang, Sign

if TYPE_CHECKING:
    from jobs.deps import JobDeps

__all__ = [
    "EARLIEST_OFFSET",
    "LATEST_OFFSET",
    "PrecomputeItem",
    "PrecomputeOutcome",
    "PrecomputeReport",
    "PrecomputeRepository",
    "ProgressHook",
    "precompute",
    "precompute_dates",
    "precompute_items",
    "run_precompute",
]

log = structlog.get_logger(__name__)

#: The westernmost and easternmost UTC offsets in use (Baker Island, Line Islands).
EARLIEST_OFFSET = dt.timedelta(hours=-12)
LATEST_OFFSET = dt.timedelta(hours=14)


class PrecomputeOutcome(enum.StrEnum):
    GENERATED = "generated"
    PRESENT = "present"
    FAILED = "failed"


class PrecomputeRepository(Protocol):
    """The one repository call precompute needs (db.repositories.HoroscopeRepository)."""

    async def precompute(self, sign: Sign, date: dt.date, lang: Lang) -> str: ...


@dataclass(frozen=True, slots=True)
class PrecomputeItem:
    sign: Sign
    date: dt.date
    lang: Lang

    def __str__(self) -> str:
        return f"{self.date.isoformat()}:{self.sign.value}:{self.lang.value}"


@dataclass(slots=True)
class PrecomputeReport:
    """Counts of one run; ``failures`` names the items to look at (and to retry next run)."""

    total: int = 0
    generated: int = 0
    present: int = 0
    failed: int = 0
    failures: list[PrecomputeItem] = field(default_factory=list)

    @property
    def done(self) -> int:
        return self.generated + self.present + self.failed

    def add(self, item: PrecomputeItem, outcome: PrecomputeOutcome) -> None:
        if outcome is PrecomputeOutcome.GENERATED:
            self.generated += 1
        elif outcome is PrecomputeOutcome.PRESENT:
            self.present += 1
        else:
            self.failed += 1
            self.failures.append(item)

    def as_dict(self) -> dict[str, int]:
        return {
            "total": self.total,
            "generated": self.generated,
            "present": self.present,
            "failed": self.failed,
        }


#: Called after each item: (item, outcome, report so far). The CLI drives its progress bar.
ProgressHook = Callable[[PrecomputeItem, PrecomputeOutcome, PrecomputeReport], None]


def precompute_dates(now_utc: dt.datetime, bot_zone: str | ZoneInfo) -> list[dt.date]:
    """Every date that is "today" somewhere on Earth at ``now_utc``, plus tomorrow in the bot's
    zone, ascending. Two or three dates; the bot's tomorrow is usually among them already."""
    if now_utc.tzinfo is None:
        now_utc = now_utc.replace(tzinfo=dt.UTC)
    now_utc = now_utc.astimezone(dt.UTC)
    tz = bot_zone if isinstance(bot_zone, ZoneInfo) else ZoneInfo(bot_zone)
    first = (now_utc + EARLIEST_OFFSET).date()
    last = (now_utc + LATEST_OFFSET).date()
    dates = {first + dt.timedelta(days=i) for i in range((last - first).days + 1)}
    dates.add(now_utc.astimezone(tz).date() + dt.timedelta(days=1))
    return sorted(dates)


def precompute_items(
    dates: Iterable[dt.date], langs: Iterable[Lang], signs: Iterable[Sign] = tuple(Sign)
) -> list[PrecomputeItem]:
    """Date-major order: the nearest date is finished first if a run is cut short."""
    langs, signs = tuple(langs), tuple(signs)
    return [
        PrecomputeItem(sign, date, lang)
        for date in sorted(set(dates))
        for lang in langs
        for sign in signs
    ]


def _progress_step(total: int) -> int:
    return max(1, total // 10)


async def precompute(
    repo: PrecomputeRepository,
    items: Sequence[PrecomputeItem],
    *,
    concurrency: int = 4,
    on_progress: ProgressHook | None = None,
) -> PrecomputeReport:
    """Make sure every item is in Postgres (and Redis); returns what was generated/present/failed.

    A failing item is logged and counted, never raised: the others still get done, and the
    next run retries it. Cancellation (shutdown, a killed CLI) stops at once; whatever was
    stored stays stored, so the next run only does the rest.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    report = PrecomputeReport(total=len(items))
    step = _progress_step(report.total)
    queue = iter(items)

    async def one(item: PrecomputeItem) -> PrecomputeOutcome:
        try:
            raw = await repo.precompute(item.sign, item.date, item.lang)
        except Exception:
            log.exception("precompute_item_failed", item=str(item))
            return PrecomputeOutcome.FAILED
        try:
            return PrecomputeOutcome(raw)
        except ValueError:
            log.error("precompute_unknown_outcome", item=str(item), outcome=raw)
            return PrecomputeOutcome.FAILED

    async def worker() -> None:
        # Workers pull from one shared iterator: no task per item is created up front, and
        # a cancelled run leaves nothing half-started behind it.
        for item in queue:
            outcome = await one(item)
            report.add(item, outcome)
            if outcome is PrecomputeOutcome.FAILED:
                log.warning("precompute_failed", item=str(item))
            if on_progress is not None:
                on_progress(item, outcome, report)
            if report.done % step == 0 or report.done == report.total:
                log.info("precompute_progress", done=report.done, total=report.total)

    workers = [asyncio.create_task(worker()) for _ in range(min(concurrency, len(items)))]
    try:
        await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    log.info("precompute_finished", **report.as_dict())
    return report


async def run_precompute(
    deps: JobDeps,
    *,
    dates: Sequence[dt.date] | None = None,
    concurrency: int = 4,
    on_progress: ProgressHook | None = None,
) -> PrecomputeReport:
    """The scheduled job: every sign x enabled language for ``dates`` (default: the dates that
    are today somewhere, plus tomorrow in the bot's zone, at ``deps.clock()``)."""
    from db.repositories.horoscopes import HoroscopeRepository

    if deps.generator is None:
        raise RuntimeError("precompute needs a horoscope generator")
    if dates is None:
        dates = precompute_dates(deps.clock(), deps.settings.tz)
    items = precompute_items(dates, deps.settings.enabled_langs)
    log.info(
        "precompute_started",
        dates=[d.isoformat() for d in sorted(set(dates))],
        total=len(items),
    )
    repo = HoroscopeRepository(deps.data, deps.generator)
    return await precompute(repo, items, concurrency=concurrency, on_progress=on_progress)
