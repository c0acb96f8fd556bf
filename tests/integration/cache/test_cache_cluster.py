"""The cache engine on a real 3-master Redis Cluster (started by the test, tests/servers).

What must hold on a cluster as on one server: get_or_load loads once and hits afterwards, reads
of keys on different nodes share per-node pipelines, get_many spans slots, the cross-process lock
wakes its waiters (pub/sub), buffers hand over and flush exactly (RENAME + SADD in one script:
the keys share a hash tag), invalidation deletes keys and locks on every node; and when a node
ran nothing, only its side commands are replayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.exceptions import MaxConnectionsError

from cache import CacheAside, CacheMetrics, Codec, KeySpace, SideCommand, create_redis
from cache.buffers import Applied, BufferHandoff
from cache.client import is_cluster
from cache.invalidation import deliver
from cache.keys import hash_tag, related_key
from cache.pipelining import NotSentError
from cache.slots import ClusterBatcher, command_slot
from tests.servers.binaries import RedisBinaries
from tests.servers.redis_servers import ClusterTopology, start_cluster

pytestmark = pytest.mark.timeout(180)

INT = Codec(int)


@pytest.fixture(scope="module")
def cluster(redis_binaries: RedisBinaries) -> Iterator[ClusterTopology]:
    """One cluster for the module (starting one costs seconds); tests use their own keys."""
    workdir = Path(tempfile.mkdtemp(prefix="horo-test-servers-cluster-"))
    topology = start_cluster(redis_binaries, workdir, masters=3)
    try:
        yield topology
    finally:
        topology.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
async def client(cluster: ClusterTopology) -> AsyncIterator[Redis]:
    redis = create_redis(cluster.url, socket_timeout=2.0, socket_connect_timeout=2.0)
    assert is_cluster(redis)
    try:
        yield redis
    finally:
        await redis.aclose()


def _engine(redis: Redis) -> CacheAside:
    return CacheAside(redis, metrics=CacheMetrics(CollectorRegistry()), op_timeout=2.0)


def _nodes_of(cluster: ClusterTopology, keys: list[str]) -> set[int]:
    return {cluster.master_for_key(k).port for k in keys}


async def test_get_or_load_loads_once_then_hits_on_every_master(
    cluster: ClusterTopology, client: Redis
) -> None:
    cache = _engine(client)
    ks = KeySpace("cl1", hash_tags=True)
    keys = [ks.key("item", i) for i in range(60)]
    assert _nodes_of(cluster, keys) == {n.port for n in cluster.masters()}
    loads: Counter[int] = Counter()

    def loader(i: int) -> Any:
        async def load() -> int:
            loads[i] += 1
            return i * 10

        return load

    try:
        first = await asyncio.gather(
            *(cache.get_or_load(k, loader(i), ttl=60, codec=INT) for i, k in enumerate(keys))
        )
        assert first == [i * 10 for i in range(60)]
        assert set(loads.values()) == {1}

        before = cache._batcher.pipelines
        again = await asyncio.gather(
            *(cache.get_or_load(k, loader(i), ttl=60, codec=INT) for i, k in enumerate(keys))
        )
        assert again == first
        assert set(loads.values()) == {1}  # every one a hit
        # 60 concurrent reads over 3 nodes: shared per-node pipelines, not one per read
        assert cache._batcher.pipelines - before < 60
        snap = cache.metrics.snapshot()["item"]
        assert snap["hit"] == 60 and snap["redis_error"] == 0
    finally:
        await cache.aclose()


async def test_get_many_and_load_many_across_slots(cluster: ClusterTopology, client: Redis) -> None:
    cache = _engine(client)
    ks = KeySpace("cl2", hash_tags=True)
    keys = [ks.key("item", i) for i in range(40)]
    assert len(_nodes_of(cluster, keys)) == 3
    try:
        await cache.set_many([(k, i) for i, k in enumerate(keys) if i % 2 == 0], ttl=60, codec=INT)
        got = await cache.get_many(keys, INT)
        assert got == [i if i % 2 == 0 else None for i in range(40)]
        # untagged keys too (a plain MGET over slots is split by slot and merged in order)
        plain = [f"cl2plain:{i}" for i in range(20)]
        await cache.set_many([(k, i) for i, k in enumerate(plain)], ttl=60, codec=INT)
        assert await cache.get_many(list(reversed(plain)), INT) == list(range(19, -1, -1))
    finally:
        await cache.aclose()


async def test_lock_waiter_is_woken_by_the_holder_across_engines(client: Redis) -> None:
    """Two engines (two processes' worth): one loads, the other waits on the channel and
    reads the value; the loader runs once."""
    a, b = _engine(client), _engine(client)
    key = KeySpace("cl3", hash_tags=True).key("slow", 1)
    assert hash_tag(a.lock_key(key)) == hash_tag(key) == "1"
    started = asyncio.Event()
    release = asyncio.Event()
    calls = 0

    async def loader() -> int:
        nonlocal calls
        calls += 1
        started.set()
        await release.wait()
        return 7

    waiting = asyncio.Event()
    wait_for_value = b._wait_for_value

    async def observed(*args: Any) -> bytes | None:
        waiting.set()
        return await wait_for_value(*args)

    b._wait_for_value = observed  # type: ignore[method-assign]
    try:
        first = asyncio.create_task(a.get_or_load(key, loader, ttl=60, codec=INT))
        await started.wait()
        second = asyncio.create_task(b.get_or_load(key, loader, ttl=60, codec=INT))
        await waiting.wait()  # the second engine found the lock held and waits for the value
        release.set()
        assert await first == 7
        assert await second == 7
        assert calls == 1
        assert b.metrics.snapshot()["slow"]["load"] == 0
    finally:
        await a.aclose()
        await b.aclose()


async def test_buffer_side_commands_flush_exactly(cluster: ClusterTopology, client: Redis) -> None:
    cache = _engine(client)
    ks = KeySpace("cl4", hash_tags=True)
    buffer = ks.key("buf", "views")
    handoff = BufferHandoff(client, buffer)
    # everything the hand-over and ack scripts touch shares the buffer's slot
    slots = {
        cluster.keyslot(k)
        for k in (buffer, handoff.pending_key, handoff.dead_key, handoff.batch_key("1-x"))
    }
    assert len(slots) == 1
    keys = [ks.key("item", i) for i in range(30)]
    assert len(_nodes_of(cluster, [*keys, buffer])) == 3

    async def zero() -> int:
        return 0

    applied: Counter[bytes] = Counter()

    async def apply(batch_id: str, data: dict[bytes, bytes]) -> Applied:
        for field, value in data.items():
            applied[field] += int(value)
        return Applied(new=True)

    try:
        for _ in range(3):
            await asyncio.gather(
                *(
                    cache.get_or_load(
                        k,
                        zero,
                        ttl=60,
                        codec=INT,
                        also=(SideCommand(("HINCRBY", buffer, f"f{i % 4}", 1)),),
                    )
                    for i, k in enumerate(keys)
                )
            )
            result = await handoff.drain(apply)
            assert result.batches == 1
        assert applied == {b"f0": 24, b"f1": 24, b"f2": 21, b"f3": 21}
        assert await handoff.pending() == []
        assert cache.metrics.snapshot()["item"]["side_unknown"] == 0
    finally:
        await cache.aclose()


async def test_invalidation_deletes_values_and_locks_on_every_node(
    cluster: ClusterTopology, client: Redis
) -> None:
    cache = _engine(client)
    ks = KeySpace("cl5", hash_tags=True)
    keys = [ks.key("user", i) for i in range(30)]
    assert len(_nodes_of(cluster, keys)) == 3
    try:
        await cache.set_many([(k, 1) for k in keys], ttl=60, codec=INT)
        for k in keys[:5]:  # a load lock left behind, as by a load in flight
            await client.set(cache.lock_key(k), b"token", px=60_000)
        await cache.invalidate(*keys[:15])
        assert await cache.get_many(keys, INT) == [None] * 15 + [1] * 15
        assert not any([await client.exists(cache.lock_key(k)) for k in keys[:5]])
        assert await deliver(cache, keys[15:]) is True
        assert await cache.get_many(keys, INT) == [None] * 30
    finally:
        await cache.aclose()


async def test_a_node_that_ran_nothing_replays_only_its_side_commands(
    cluster: ClusterTopology, client: Redis
) -> None:
    """Per-node outcomes: a node whose pool is empty ran nothing (NotSentError in place);
    the other nodes' commands ran and are not replayed."""
    ks = KeySpace("cl6", hash_tags=True)
    keys = [ks.key("item", i) for i in range(12)]
    nodes = {cluster.master_for_key(k).port for k in keys}
    assert len(nodes) >= 2
    blocked_port = cluster.master_for_key(keys[0]).port
    batcher = ClusterBatcher(timeout=2.0)
    cluster_client: Any = client
    await cluster_client.initialize()
    node = next(n for n in cluster_client.get_primaries() if n.port == blocked_port)
    held = []
    with contextlib.suppress(MaxConnectionsError):
        while True:  # every connection of that node's pool taken: nothing can be sent there
            held.append(node.acquire_connection())
    try:
        commands = [("INCR", k) for k in keys]
        replies = await batcher.execute(client, commands)
        for k, reply in zip(keys, replies, strict=True):
            if cluster.master_for_key(k).port == blocked_port:
                assert isinstance(reply, NotSentError)
            else:
                assert reply == 1
    finally:
        for conn in held:
            node.release(conn)
        await batcher.aclose()
        await client.delete(*keys)


def test_related_keys_share_the_slot_of_their_key() -> None:
    tagged = KeySpace("p", hash_tags=True).key("user", 42)
    assert tagged == "p:v1:user:{42}"
    assert related_key(tagged, "lock", cluster=True) == "p:v1:user:{42}:lock"
    plain = "p:v1:user:42"
    assert related_key(plain, "lock", cluster=False) == "p:v1:user:42:lock"  # as ever
    wrapped = related_key(plain, "lock", cluster=True)
    assert wrapped == "{p:v1:user:42}:lock" and hash_tag(wrapped) == plain
    assert command_slot(("GET", wrapped)) == command_slot(("GET", plain))
    assert command_slot(("EVALSHA", "abc", 1, plain, "x")) == command_slot(("GET", plain))
    assert command_slot(("PUBLISH", "chan", "1")) is None
    # without hash tags nothing changes for one server or Sentinel
    assert KeySpace("p").key("user", 42) == "p:v1:user:42"


async def test_cache_stats_scans_every_master(cluster: ClusterTopology, client: Redis) -> None:
    """The cache-inspection command (bot/ops/cache_stats.py) sees the keys of all masters,
    tagged names classified by namespace, buffers told apart."""
    from bot.ops.cache_stats import scan_keyspace

    cache = _engine(client)
    ks = KeySpace("cl7", hash_tags=True)
    users = [ks.key("user", i) for i in range(2500)]  # more than one SCAN page
    assert len(_nodes_of(cluster, users[:50])) == 3
    try:
        for start in range(0, len(users), 250):
            await cache.set_many([(k, 1) for k in users[start : start + 250]], ttl=600, codec=INT)
        await client.hset(ks.key("buf", "views"), "f", 1)
        result = await scan_keyspace(client, "cl7", "v1", 10)
        assert result.namespaces["user"].keys == 2500
        assert result.namespaces["user"].no_ttl == 0
        assert result.namespaces["buf"].buffer and result.namespaces["buf"].keys == 1
    finally:
        await cache.aclose()
