"""The daily push through the local Bot API double with a real aiogram Bot: who is due at which
local time, never twice a day, blocked users switched off, retriable failures retried, and
2,000 subscribers under injected 429s without ever exceeding the token bucket's rate."""

from __future__ import annotations

import datetime as dt
import time

from sqlalchemy import func, select, text

from bot.telegram.texts import format_date
from db.models import HoroscopeView
from db.types import Lang
from devtools.botapi import BotAPIServer
from jobs.deps import JobDeps
from jobs.global_rate import GlobalRateLimiter
from jobs.push import run_push
from jobs.ratelimit import TokenBucket
from tests.integration.jobs.jobs_support import (
    FakeTime,
    PinnedClock,
    add_users,
    max_in_window,
    sent_to,
    user,
    user_rows,
)


async def test_due_users_by_local_time_once_per_local_date(
    push_deps: JobDeps, botapi: BotAPIServer, clock: PinnedClock
) -> None:
    march = lambda day: dt.date(2026, 3, day)  # noqa: E731
    await add_users(
        push_deps,
        [
            user(1, "Asia/Tokyo"),  # 15:30 on the 10th: due
            user(2, "America/New_York"),  # 02:30: not yet
            user(3, None),  # the bot's zone, Moscow, 09:30: due
            user(4, "Europe/London"),  # 06:30: not yet
            user(5, "Pacific/Kiritimati"),  # 20:30 on the 10th: due
            user(6, "Asia/Tokyo", push_enabled=False),  # push off
            user(7, "Asia/Tokyo", last_push_date=march(10)),  # already pushed today
            user(8, "Pacific/Pago_Pago", last_push_date=march(8)),  # 19:30 on the 9th: due
            user(9, "Europe/Moscow", push_time=dt.time(10, 0)),  # 09:30 < 10:00: not yet
        ],
    )
    for uid in range(1, 10):
        botapi.user(uid)
    clock.now = dt.datetime(2026, 3, 10, 6, 30, tzinfo=dt.UTC)

    report = await run_push(push_deps)
    assert (report.due, report.sent, report.failed) == (4, 4, 0)
    assert {uid for uid in range(1, 10) if sent_to(botapi, uid)} == {1, 3, 5, 8}
    # each got today's horoscope of *their* date, with the sign's picture
    msg = sent_to(botapi, 8)[0]
    assert msg.photo and format_date(march(9), Lang.EN) in msg.caption
    assert format_date(march(10), Lang.EN) in sent_to(botapi, 1)[0].caption
    rows = await user_rows(push_deps)
    assert {uid: rows[uid].last_push_date for uid in (1, 3, 5, 8)} == {
        1: march(10),
        3: march(10),
        5: march(10),
        8: march(9),
    }

    # the next minute: nobody is due twice
    clock.advance(minutes=1)
    again = await run_push(push_deps)
    assert again.due == 0 and again.sent == 0

    # 14:00 UTC: New York 10:00, London 14:00, Moscow 17:00 are due; Tokyo was pushed today
    clock.now = dt.datetime(2026, 3, 10, 14, 0, tzinfo=dt.UTC)
    later = await run_push(push_deps)
    assert later.sent == 3
    assert {uid for uid in range(1, 10) if sent_to(botapi, uid)} == {1, 2, 3, 4, 5, 8, 9}
    assert [len(sent_to(botapi, uid)) for uid in range(1, 10)] == [1, 1, 1, 1, 1, 0, 0, 1, 1]

    # a push is not a view
    async with push_deps.session_factory() as s:
        assert await s.scalar(select(func.count()).select_from(HoroscopeView)) == 0
    assert not await push_deps.redis.exists(push_deps.keyspace.key("buf", "views"))  # type: ignore[union-attr]


async def test_blocked_gone_and_retriable_failures(
    push_deps: JobDeps, botapi: BotAPIServer, clock: PinnedClock
) -> None:
    await add_users(push_deps, [user(uid, None) for uid in (1, 2, 3, 4, 5)])
    for uid in (1, 2, 4, 5):  # 3 never opened a chat with the bot: "chat not found"
        botapi.user(uid)
    botapi.block(2, notify=False)
    clock.now = dt.datetime(2026, 3, 10, 7, 0, tzinfo=dt.UTC)  # 10:00 in Moscow
    botapi.fail_next("sendPhoto", error_code=500, description="Internal Server Error")
    botapi.fail_next("sendPhoto", error_code=429, description="Too Many Requests", retry_after=1)

    # The push's shared limiter on the real Redis script, on the test's clock: the pause is
    # shown by the time the sender slept through it, not by a stopwatch.
    assert push_deps.redis is not None
    clock_us = FakeTime()
    limiter = GlobalRateLimiter(
        push_deps.redis,
        push_deps.keyspace.key("pushrate", "global"),
        push_deps.settings.push_rate_per_second,
        now_us=clock_us,
        sleep=clock_us.sleep,
    )
    report = await run_push(push_deps, bucket=limiter, concurrency=1)  # in id order: 1 gets the 500
    assert limiter.pauses == 1
    assert sum(clock_us.slept) >= 1.0  # the 429 paused the sender for its retry_after
    assert report.as_dict() == {
        "due": 5,
        "sent": 2,
        "blocked": 2,
        "failed": 1,
        "already": 0,
        "retry_after": 1,
    }
    rows = await user_rows(push_deps)
    assert not rows[2].push_enabled and not rows[3].push_enabled  # blocked, chat not found
    assert rows[1].push_enabled and rows[1].last_push_date is None  # unmarked: as it was
    assert [len(sent_to(botapi, uid)) for uid in (1, 2, 3, 4, 5)] == [0, 0, 0, 1, 1]

    # the next run retries the user whose send failed, and only them
    clock.advance(minutes=1)
    retry = await run_push(push_deps)
    assert (retry.due, retry.sent) == (1, 1)
    assert [len(sent_to(botapi, uid)) for uid in (1, 2, 3, 4, 5)] == [1, 0, 0, 1, 1]


async def test_two_thousand_subscribers_under_429s_never_exceed_the_bucket(
    push_deps: JobDeps, botapi: BotAPIServer, clock: PinnedClock
) -> None:
    n, first = 2000, 10_000
    async with push_deps.session_factory() as s, s.begin():
        await s.execute(
            text(
                """
                INSERT INTO users (id, first_name, zodiac_sign, lang, timezone, push_enabled,
                                   push_time)
                SELECT g, 'U' || g,
                       (ARRAY['aries','taurus','gemini','cancer','leo','virgo','libra',
                              'scorpio','sagittarius','capricorn','aquarius','pisces'])[g % 12 + 1],
                       CASE WHEN g % 2 = 0 THEN 'ru' ELSE 'en' END,
                       (ARRAY[NULL, 'Europe/Berlin', 'Asia/Yekaterinburg'])[g % 3 + 1],
                       true, TIME '08:00'
                FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS g
                """
            ),
            {"first": first, "last": first + n - 1},
        )
    ids = range(first, first + n)
    for uid in ids:
        botapi.user(uid)
    blocked = set(ids[::40])  # 50 users
    for uid in blocked:
        botapi.block(uid, notify=False)
    botapi.set_rate_limit("sendPhoto", every_n=300, retry_after=1)
    clock.now = dt.datetime(2026, 3, 10, 9, 0, tzinfo=dt.UTC)  # 10:00 Berlin, 12:00 Moscow

    grants: list[float] = []

    class RecordingBucket(TokenBucket):
        async def acquire(self) -> None:
            await super().acquire()
            grants.append(time.monotonic())  # same task, no await since the grant

    bucket = RecordingBucket(250, burst=25)
    report = await run_push(push_deps, bucket=bucket, concurrency=16)

    assert report.due == n
    assert report.sent == n - len(blocked) and report.blocked == len(blocked)
    assert report.failed == 0 and report.retry_after >= 5
    for uid in ids:
        assert len(sent_to(botapi, uid)) == (0 if uid in blocked else 1), uid
    rows = await user_rows(push_deps)
    assert {uid for uid in ids if not rows[uid].push_enabled} == blocked
    calls = botapi.calls_to("sendPhoto")
    assert sum(1 for c in calls if c.outcome == 429) == report.retry_after
    # the bucket held: every request the push made took a token of its own ...
    sends = [*calls, *botapi.calls_to("sendMessage")]
    assert len(sends) == bucket.granted == len(grants)
    # ... and no one-second window granted more than rate + burst. Measured where the rate is
    # set (the sender): arrival times at the server add the event loop's jitter, which can
    # squeeze 1.004 s of correctly spaced sends into one second.
    assert max_in_window(grants) <= bucket.rate + bucket.burst
    # and each 429 paused everyone: in the second after it, only the requests that were
    # already on their way (at most one per worker) arrive
    for c in calls:
        if c.outcome == 429:
            assert len([o for o in calls if c.at < o.at < c.at + 0.95]) <= 16
    assert bucket.pauses == report.retry_after  # each 429 paused the bucket

    again = await run_push(push_deps, bucket=bucket)
    assert again.due == 0


async def test_rejected_file_id_and_its_re_upload_each_take_a_token(
    push_deps: JobDeps, botapi: BotAPIServer, clock: PinnedClock
) -> None:
    # Day one uploads each sign's picture once and caches the file_ids.
    await add_users(push_deps, [user(uid, None) for uid in range(1, 7)])  # six signs
    for uid in range(1, 7):
        botapi.user(uid)
    clock.now = dt.datetime(2026, 3, 10, 7, 0, tzinfo=dt.UTC)  # 10:00 in Moscow
    first = await run_push(push_deps)
    assert first.sent == 6 and botapi.uploads() == 6

    # Telegram purged the files: every cached file_id is rejected once, then re-uploaded in
    # the same call. Each of those requests must take a token of its own.
    assert botapi.forget_file_ids() > 0
    before = len(botapi.calls)
    clock.advance(days=1)
    bucket = TokenBucket(1000, burst=100)
    report = await run_push(push_deps, bucket=bucket, concurrency=3)

    assert (report.due, report.sent, report.failed) == (6, 6, 0)
    assert [len(sent_to(botapi, uid)) for uid in range(1, 7)] == [2] * 6
    requests = botapi.calls[before:]
    assert {c.method for c in requests} <= {"sendPhoto", "sendMessage"}
    rejected = [c for c in requests if c.method == "sendPhoto" and c.outcome == 400]
    assert len(rejected) == 6  # each sign's stale file_id, once
    assert botapi.uploads() == 12  # ... then uploaded again
    # every request the push made took a token of its own, the re-uploads included
    assert len(requests) == bucket.granted
