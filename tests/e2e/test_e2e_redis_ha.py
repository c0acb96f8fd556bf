"""The real bot (aiogram, the Bot API double, Postgres) on Redis high availability, on servers
the test starts itself (tests/servers/redis_servers.py):

- a 3-master Redis Cluster: the bot answers, its keys are spread over every master (hash tags
  keep what one script touches in one slot), and the views it counted flush exactly;
- the same cluster with a replica per master, the master that holds the view buffer SIGKILLed
  while users keep asking: the replica is promoted, the bot answers every update meanwhile,
  and no count that had reached the replica is lost;
- a primary + replica + 3 sentinels, the primary SIGKILLed during traffic: the same promises.

What is promised, exactly (docs/redis-ha.md): Redis replication is asynchronous. A count the
replica acknowledged (here: ``WAIT 1`` on the primary returned, which is what the test waits
for before the kill) survives the failover. A count the dead primary had acknowledged but not
yet shipped is lost; while the primary is unreachable, counts go straight to Postgres (the side
command's fallback) and are exact; a count whose pipeline was cut off after sending is
ambiguous, counted in ``cache_events_total{event="side_unknown"}``, never replayed (it could
count twice). So: ``views == requests - unknown_lost`` with ``0 <= unknown_lost <= side_unknown``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis as redis_sync

from cache import REDIS_ERRORS
from db.repositories.views import HoroscopeViewRepository
from db.types import Sign
from devtools.botapi import BotAPIServer
from tests.e2e.conftest import FixedClock, Harness
from tests.helpers import FakeGenerator
from tests.servers.redis_servers import ClusterTopology, SentinelTopology

pytestmark = [pytest.mark.e2e, pytest.mark.multiprocess, pytest.mark.timeout(240)]

SIGNS = list(Sign)


@pytest.fixture
def ha_harness(
    server: BotAPIServer,
    settings_factory: Any,
    database_url: str,
    db_clean: None,
    generator: FakeGenerator,
    clock: FixedClock,
) -> Callable[[str], Any]:
    """``async with ha_harness(url) as h``: the bot of conftest's Harness, on ``url``."""
    import contextlib

    @contextlib.asynccontextmanager
    async def make(redis_url: str) -> AsyncIterator[Harness]:
        assert server.url is not None
        settings = settings_factory(telegram_api_url=server.url, redis_url=redis_url)
        async with Harness(server, settings, database_url, redis_url, generator, clock) as h:
            yield h

    return make


async def _sign_up(h: Harness, users: list[int]) -> None:
    for i, uid in enumerate(users):
        h.server.user(uid, language_code="en")
        sent = await h.say(uid, f"/start {SIGNS[i % 12].value}")
        assert len(sent) == 1 and sent[0].photo is not None


async def _today(h: Harness, uid: int) -> None:
    """One /today; the bot must answer it with the horoscope picture."""
    sent = await h.say(uid, "/today")
    assert len(sent) == 1, f"user {uid}: {len(sent)} answers"
    assert sent[0].photo is not None and "today" in (sent[0].caption or "")


async def _views(h: Harness, date: dt.date) -> int:
    repo = HoroscopeViewRepository(h.app.data)
    await repo.flush()
    assert await repo.buffered(date) == {}
    return sum((await repo.totals(date)).values())


def _side_unknown(h: Harness) -> int:
    snap = h.app.cache.metrics.snapshot()
    return int(sum(ns.get("side_unknown", 0) for ns in snap.values()))


def _replicated(direct: redis_sync.Redis, buffer: str, expected: int) -> None:
    """Every count so far reached the replica (what the promise is about)."""
    assert int(direct.wait(1, 10_000)) >= 1
    assert sum(int(v) for v in direct.hgetall(buffer).values()) == expected


async def _ask_until(h: Harness, users: list[int], failover: asyncio.Task[Any]) -> int:
    """Users keep asking while the failover runs; the number of /today sent."""
    sent = 0
    while not failover.done():
        for uid in users[:6]:
            await _today(h, uid)
            sent += 1
    return sent


async def _client_follows(h: Harness, key: str) -> None:
    """Until the bot's own client reaches ``key``'s new master: redis-py refreshes its slot
    map after a failover only when its refresh back-off allows (refreshes that failed during
    the failover push the next one out), and until then commands for that slot fail."""
    async with asyncio.timeout(60):
        while True:
            try:
                await h.redis.exists(key)
                return
            except REDIS_ERRORS:
                await asyncio.sleep(0.1)


async def _counted_exactly(h: Harness, date: dt.date, before: int, requests: int) -> None:
    """Every count is in Postgres but at most the ambiguous ones (``side_unknown``); the 30
    of phase 1, acknowledged by the replica, are never lost."""
    unknown = _side_unknown(h)
    counted = await _views(h, date) - before
    assert requests - unknown <= counted <= requests, (requests, unknown, counted)
    assert counted >= 30
    assert h.errors == 0


async def test_bot_on_a_three_master_cluster_answers_and_counts_exactly(
    redis_cluster: ClusterTopology, ha_harness: Callable[[str], Any]
) -> None:
    async with ha_harness(redis_cluster.url) as h:
        users = list(range(7001, 7031))
        await _sign_up(h, users)
        date = h.app.horoscopes.today(None)
        before = await _views(h, date)
        for uid in users:
            await _today(h, uid)
        for uid in users[:10]:
            await _today(h, uid)
        assert await _views(h, date) == before + 40
        # The bot's keys: tagged, spread over the three masters, user and throttle in one slot
        keys = [h.app.keyspace.key("user", uid) for uid in users]
        assert all(k.endswith(f":{{{uid}}}") for k, uid in zip(keys, users, strict=True))
        assert {redis_cluster.master_for_key(k).port for k in keys} == {
            n.port for n in redis_cluster.masters()
        }
        assert all([await h.redis.exists(k) for k in keys])
        assert h.app.cache.metrics.snapshot()["user"]["redis_error"] == 0
        assert h.errors == 0


async def test_cluster_master_killed_during_traffic(
    redis_cluster_factory: Callable[..., ClusterTopology], ha_harness: Callable[[str], Any]
) -> None:
    cluster = redis_cluster_factory(masters=3, replicas_per_master=1, node_timeout_ms=2000)
    async with ha_harness(cluster.url) as h:
        users = list(range(7101, 7131))
        await _sign_up(h, users)
        date = h.app.horoscopes.today(None)
        before = await _views(h, date)
        buffer = HoroscopeViewRepository(h.app.data).buffer_key
        for uid in users:
            await _today(h, uid)  # phase 1: counted in the buffer, on one master
        victim = cluster.master_for_key(buffer)
        with victim.client() as direct:
            _replicated(direct, buffer, 30)
        victim.kill()
        # phase 2: users keep asking while the cluster notices and promotes the replica
        failover = asyncio.create_task(cluster.await_failover(victim))
        requests = 30 + await _ask_until(h, users, failover)
        await failover
        await _client_follows(h, buffer)
        # phase 3: after the failover, the buffer is served by the promoted replica again
        for uid in users:
            await _today(h, uid)
            requests += 1
        assert cluster.master_for_key(buffer).port != victim.port
        await _counted_exactly(h, date, before, requests)


async def test_sentinel_primary_killed_during_traffic(
    redis_sentinel: SentinelTopology, ha_harness: Callable[[str], Any]
) -> None:
    async with ha_harness(redis_sentinel.url()) as h:
        users = list(range(7201, 7231))
        await _sign_up(h, users)
        date = h.app.horoscopes.today(None)
        before = await _views(h, date)
        buffer = HoroscopeViewRepository(h.app.data).buffer_key
        for uid in users:
            await _today(h, uid)
        old = redis_sentinel.master_address()
        with redis_sync.Redis(*old) as direct:
            _replicated(direct, buffer, 30)
        redis_sentinel.kill_primary()
        failover = asyncio.create_task(redis_sentinel.await_failover(old))
        requests = 30 + await _ask_until(h, users, failover)
        new = await failover
        assert new != old
        for uid in users:
            await _today(h, uid)
            requests += 1
        await _counted_exactly(h, date, before, requests)
