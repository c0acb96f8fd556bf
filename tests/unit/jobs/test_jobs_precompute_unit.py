"""Which dates precompute covers, and the bounded, failure-tolerant loop (fake repository)."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from db.types import Lang, Sign
from jobs.precompute import PrecomputeOutcome, precompute, precompute_dates, precompute_items

D = dt.date(2026, 3, 10)


def utc(hour: int, minute: int = 0, day: int = 10) -> dt.datetime:
    return dt.datetime(2026, 3, day, hour, minute, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("now", "zone", "expected"),
    [
        # 00:30 UTC: Baker Island (UTC-12) is still on the 9th, Kiritimati (UTC+14) on the 10th;
        # Moscow's tomorrow is the 11th.
        (utc(0, 30), "Europe/Moscow", [D - dt.timedelta(1), D, D + dt.timedelta(1)]),
        # 10:30 UTC: the 9th (UTC-12 at 22:30), the 10th, and the 11th in UTC+14 (00:30).
        (utc(10, 30), "Europe/Moscow", [D - dt.timedelta(1), D, D + dt.timedelta(1)]),
        # 12:30 UTC: the 9th is over everywhere.
        (utc(12, 30), "Europe/Moscow", [D, D + dt.timedelta(1)]),
        # 22:00 UTC = 01:00 on the 11th in Moscow: Moscow's tomorrow is the 12th.
        (utc(22, 0), "Europe/Moscow", [D, D + dt.timedelta(1), D + dt.timedelta(2)]),
        # A bot in Honolulu (UTC-10) at 09:00 UTC: its today is the 9th, its tomorrow the 10th.
        (utc(9, 0), "Pacific/Honolulu", [D - dt.timedelta(1), D]),
    ],
)
def test_dates_are_today_somewhere_plus_bot_tomorrow(
    now: dt.datetime, zone: str, expected: list[dt.date]
) -> None:
    assert precompute_dates(now, zone) == expected


def test_dates_accept_non_utc_aware_now() -> None:
    moscow = utc(22, 0).astimezone(dt.timezone(dt.timedelta(hours=3)))
    assert precompute_dates(moscow, "Europe/Moscow") == precompute_dates(utc(22), "Europe/Moscow")


def test_items_cover_every_sign_and_language_nearest_date_first() -> None:
    items = precompute_items([D + dt.timedelta(1), D], [Lang.RU, Lang.EN])
    assert len(items) == 2 * 2 * 12
    assert {i.sign for i in items} == set(Sign)
    assert items[0].date == D and items[-1].date == D + dt.timedelta(1)


class FakeRepo:
    def __init__(self, fail: set[Sign] | None = None) -> None:
        self.fail = fail or set()
        self.in_flight = 0
        self.max_in_flight = 0
        self.calls = 0

    async def precompute(self, sign: Sign, date: dt.date, lang: Lang) -> str:
        self.calls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.001)
            if sign in self.fail:
                if lang is Lang.RU:
                    raise RuntimeError("boom")
                return "failed"
            return "present" if sign is Sign.ARIES else "generated"
        finally:
            self.in_flight -= 1


async def test_bounded_concurrency_counts_and_progress() -> None:
    repo = FakeRepo(fail={Sign.LEO})
    items = precompute_items([D], [Lang.RU, Lang.EN])
    seen: list[int] = []
    report = await precompute(
        repo, items, concurrency=4, on_progress=lambda _i, _o, r: seen.append(r.done)
    )
    assert repo.calls == 24 and repo.max_in_flight == 4
    assert report.as_dict() == {"total": 24, "generated": 20, "present": 2, "failed": 2}
    assert {str(i) for i in report.failures} == {f"{D}:leo:ru", f"{D}:leo:en"}
    assert seen == list(range(1, 25))


async def test_unknown_outcome_is_a_failure() -> None:
    class Odd:
        async def precompute(self, sign: Sign, date: dt.date, lang: Lang) -> str:
            return "weird"

    report = await precompute(Odd(), precompute_items([D], [Lang.EN])[:1])
    assert report.failed == 1
    assert PrecomputeOutcome("generated") is PrecomputeOutcome.GENERATED
