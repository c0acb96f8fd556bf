"""The daily push shared by several instances: batches claimed with FOR UPDATE SKIP LOCKED,
one global rate in Redis, a RetryAfter that pauses everyone, a dead instance's claims taken
over, the paid-broadcast mode.

Two "instances" here are two JobDeps with their own Bot sessions and instance names, on the
same Postgres, Redis and Bot API double (the three-process test in tests/e2e/test_e2e_scale.py
does it with real processes and a SIGKILL).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text

from db.repositories import UserRepository
from devtools.botapi import BotAPIServer
from jobs.deps import JobDeps
from jobs.global_rate import GlobalRateLimiter
from jobs.push import push_limiter, run_push
from tests.integration.jobs.jobs_support import (
    PinnedClock,
    add_users,
    push_deps_for,
    sent_to,
    user,
    user_rows,
)

MOSCOW_10AM = dt.datetime(2026, 3, 10, 7, 0, tzinfo=dt.UTC)
TODAY = dt.date(2026, 3, 10)


#: A fast rate (paid broadcasts), so the tests spend their time on the logic, not the rate.
FAST = {"push_paid_broadcast": True, "push_rate_per_second": 300}


@pytest.fixture
async def one(deps: JobDeps, botapi: BotAPIServer) -> AsyncIterator[JobDeps]:
    first = push_deps_for(deps, botapi, instance="one-host:1:aaaa", **FAST)
    yield first
    assert first.bot is not None
    await first.bot.session.close()


@pytest.fixture
async def other(deps: JobDeps, botapi: BotAPIServer) -> AsyncIterator[JobDeps]:
    """A second instance: its own Bot session and name, the same stores and clock."""
    second = push_deps_for(deps, botapi, instance="other-host:2:beef", **FAST)
    yield second
    assert second.bot is not None
    await second.bot.session.close()


async def subscribers(deps: JobDeps, botapi: BotAPIServer, ids: range) -> None:
    await add_users(deps, [user(uid, None) for uid in ids])
    for uid in ids:
        botapi.user(uid)


async def warm_pictures(deps: JobDeps, botapi: BotAPIServer, clock: PinnedClock) -> None:
    """One push per sign the day before: every sign's picture is uploaded, its file_id
    stored, so later sends are single requests (no upload lock between instances)."""
    ids = range(9_001, 9_013)
    await subscribers(deps, botapi, ids)
    clock.now = MOSCOW_10AM - dt.timedelta(days=1)
    assert (await run_push(deps)).sent == 12
    assert botapi.uploads() == 12
    async with deps.session_factory() as s, s.begin():
        await s.execute(text("UPDATE users SET push_enabled = false WHERE id >= 9001"))


async def test_two_instances_share_the_push_and_nobody_gets_it_twice(
    one: JobDeps, other: JobDeps, botapi: BotAPIServer, clock: PinnedClock
) -> None:
    push_deps = one
    ids = range(1, 201)
    await subscribers(push_deps, botapi, ids)
    clock.now = MOSCOW_10AM
    # both instances sweep at the same moment, in batches of 10
    a, b = await asyncio.gather(
        run_push(push_deps, batch_size=10, concurrency=4),
        run_push(other, batch_size=10, concurrency=4),
    )
    assert a.sent > 0 and b.sent > 0  # both took batches
    assert a.sent + b.sent == len(ids) and a.due + b.due == len(ids)
    assert a.failed == b.failed == a.already == b.already == 0
    assert all(len(sent_to(botapi, uid)) == 1 for uid in ids)
    rows = await user_rows(push_deps)
    assert {rows[uid].last_push_date for uid in ids} == {TODAY}
    assert {rows[uid].push_claimed_by for uid in ids} == {None}  # claims dropped when done
    # one limiter key for both: every send took a slot of the same schedule
    assert isinstance(push_limiter(push_deps), GlobalRateLimiter)
    # and a second sweep finds nobody
    again = await asyncio.gather(run_push(push_deps), run_push(other))
    assert [r.due for r in again] == [0, 0]


async def test_a_dead_instances_claims_expire_and_are_taken_over(
    one: JobDeps, botapi: BotAPIServer, clock: PinnedClock
) -> None:
    push_deps = one
    ids = range(1, 31)
    await subscribers(push_deps, botapi, ids)
    clock.now = MOSCOW_10AM
    # An instance claimed ten users, then died: no send, no extension, no release.
    lease = dt.timedelta(seconds=push_deps.settings.push_claim_seconds)
    async with push_deps.session_factory() as s:
        dead = await UserRepository(s, push_deps.data).claim_push_batch(
            clock.now, owner="dead-host:1:0", until=clock.now + lease, limit=10
        )
        await s.commit()
    dead_ids = {t.user.id for t in dead}
    assert len(dead_ids) == 10

    first = await run_push(push_deps)
    assert first.sent == 20  # everyone but the dead instance's users
    assert all(not sent_to(botapi, uid) for uid in dead_ids)

    clock.advance(seconds=lease.total_seconds() - 1)
    assert (await run_push(push_deps)).due == 0  # the claim still holds

    clock.advance(seconds=1)  # ... and now it has expired: taken over, pushed once
    late = await run_push(push_deps)
    assert late.sent == 10
    assert all(len(sent_to(botapi, uid)) == 1 for uid in ids)


async def eventually(check: Any, timeout: float = 10.0) -> None:  # noqa: ASYNC109
    """Wait for ``await check()`` (state in Postgres), re-checked every 20 ms."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, f"{check.__name__} not reached within {timeout} s"
        await asyncio.sleep(0.02)


async def test_claims_live_while_the_instance_works_and_go_back_when_it_stops(
    deps: JobDeps, other: JobDeps, botapi: BotAPIServer, clock: PinnedClock
) -> None:
    await warm_pictures(other, botapi, clock)
    ids = range(1, 41)
    await subscribers(deps, botapi, ids)
    clock.now = MOSCOW_10AM
    # An instance whose Telegram calls hang: its run is stuck in its first two sends.
    stuck = push_deps_for(
        deps, botapi, instance="stuck-host:1:aa", tag="s1", push_claim_seconds=1, **FAST
    )
    botapi.hold_calls("s1")
    run = asyncio.create_task(run_push(stuck, batch_size=5, concurrency=2))
    try:
        await botapi.wait_for(lambda: botapi.held_calls("s1") == 2)

        async def mine() -> dict[int, dt.datetime]:
            rows = await user_rows(deps)
            return {
                u: r.push_claimed_until
                for u, r in rows.items()
                if r.push_claimed_by == stuck.instance
            }

        claimed = await mine()
        in_flight = {p["chat_id"] for _, p in botapi.held("s1")}
        assert in_flight < set(claimed)  # two sending, the rest queued behind them
        assert set(claimed.values()) == {clock.now + dt.timedelta(seconds=1)}
        # time passes: the live instance keeps extending its claims (every quarter lease)
        clock.advance(seconds=0.8)

        async def extended() -> bool:
            return set((await mine()).values()) == {clock.now + dt.timedelta(seconds=1)}

        await eventually(extended)
        # so another instance pushes everyone else, never the claimed users
        report = await run_push(other)
        assert report.sent == len(ids) - len(claimed)
        assert all(not sent_to(botapi, uid) for uid in claimed)

        # the stuck instance stops (shutdown cancels its run): what it had not started goes
        # back at once; the two sends in flight are abandoned (they never reached Telegram)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        back = await run_push(other)
        assert back.sent == len(claimed) - len(in_flight)
        # ... and theirs is taken over when the claim expires: pushed once, not lost
        clock.advance(seconds=1)
        late = await run_push(other)
        assert late.sent == len(in_flight)
        assert [len(sent_to(botapi, uid)) for uid in ids] == [1] * len(ids)
        assert botapi.uploads() == 12  # all sends by file_id
        cancelled = [c for c in botapi.calls if c.tag == "s1" and c.outcome == "cancelled"]
        assert {c.params["chat_id"] for c in cancelled} == in_flight
    finally:
        run.cancel()
        botapi.release_calls("s1")
        assert stuck.bot is not None
        await stuck.bot.session.close()


async def test_retry_after_pauses_every_instance(
    one: JobDeps, other: JobDeps, botapi: BotAPIServer, clock: PinnedClock
) -> None:
    ids = range(1, 121)
    await subscribers(one, botapi, ids)
    clock.now = MOSCOW_10AM
    botapi.set_rate_limit("sendPhoto", every_n=50, retry_after=1)
    # the limiter each run would build, recording the server time of every grant
    key = one.keyspace.key("pushrate", "global")
    limiters = [GlobalRateLimiter(d.redis, key, 300, record=True) for d in (one, other)]  # type: ignore[arg-type]
    a, b = await asyncio.gather(
        run_push(one, bucket=limiters[0], batch_size=10, concurrency=4),
        run_push(other, bucket=limiters[1], batch_size=10, concurrency=4),
    )
    assert a.sent + b.sent == len(ids) and a.failed + b.failed == 0
    assert all(len(sent_to(botapi, uid)) == 1 for uid in ids)
    pauses = a.retry_after + b.retry_after
    assert pauses >= 2 and sum(lim.pauses for lim in limiters) == pauses
    # each 429 stopped *both* instances: the shared schedule (Redis' clock) has a gap of a
    # whole second (retry_after) for every distinct pause, whichever instance was told
    grants = sorted(g for lim in limiters for g in lim.grants or [])
    gaps = [b - a for a, b in itertools.pairwise(grants)]
    assert sum(1 for gap in gaps if gap >= 1_000_000) >= 2
    assert {lim.grants is not None and len(lim.grants) > 0 for lim in limiters} == {True}


async def test_paid_broadcast_sends_with_allow_paid_broadcast(
    push_deps: JobDeps, one: JobDeps, botapi: BotAPIServer, clock: PinnedClock
) -> None:
    await subscribers(one, botapi, range(1, 6))
    clock.now = MOSCOW_10AM
    free = push_limiter(push_deps)  # the default: 25/s, no paid broadcasts
    assert isinstance(free, GlobalRateLimiter) and free.rate == 25
    limiter = push_limiter(one)
    assert isinstance(limiter, GlobalRateLimiter) and limiter.rate == 300
    report = await run_push(one)
    assert report.sent == 5
    sends = [*botapi.calls_to("sendPhoto"), *botapi.calls_to("sendMessage")]
    assert sends and all(c.params.get("allow_paid_broadcast") is True for c in sends)
    # without the setting, no paid broadcast is ever asked for
    await subscribers(push_deps, botapi, range(6, 8))
    before = len(botapi.calls)
    assert (await run_push(push_deps)).sent == 2
    assert all("allow_paid_broadcast" not in c.params for c in botapi.calls[before:])
