"""REDIS_URL forms: one server, Sentinel, Cluster; what each names and what client it makes.

Creating a client does not connect, so none of this needs a server."""

from __future__ import annotations

import pytest
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool

from cache.client import (
    create_redis,
    create_redis_cluster,
    is_cluster,
    is_cluster_url,
    parse_redis_url,
)


def test_standalone_forms() -> None:
    target = parse_redis_url("redis://:pw@cache.internal:6380/2")
    assert target.kind == "standalone" and target.hosts == (("cache.internal", 6380),)
    assert parse_redis_url("rediss://h/0").ssl
    assert parse_redis_url("unix:///run/redis.sock").hosts == ()


def test_sentinel_url_names_sentinels_service_db_and_credentials() -> None:
    target = parse_redis_url(
        "redis+sentinel://bot:s%40cret@s1:26379,s2,[::1]:26380/mymaster/3?sentinel_auth=true"
    )
    assert target.kind == "sentinel"
    assert target.hosts == (("s1", 26379), ("s2", 26379), ("::1", 26380))
    assert (target.service, target.db) == ("mymaster", 3)
    assert (target.username, target.password) == ("bot", "s@cret")
    assert target.sentinel_auth and not target.ssl
    plain = parse_redis_url("rediss+sentinel://s1/mymaster")
    assert plain.db == 0 and plain.ssl and not plain.sentinel_auth and plain.password is None


def test_cluster_url() -> None:
    target = parse_redis_url("redis-cluster://:pw@n1:7000,n2:7001/0")
    assert target.kind == "cluster"
    assert target.hosts == (("n1", 7000), ("n2", 7001)) and target.password == "pw"
    assert parse_redis_url("rediss-cluster://n1").hosts == (("n1", 6379),)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://x", "not a Redis URL"),
        ("redis://h:99999/0", "bad port"),
        ("redis+sentinel://s1:26379/", "ends in /<service>"),
        ("redis+sentinel://s1:26379/mymaster/zero", "must be a number"),
        ("redis+sentinel://s1:26379/a/0/extra", "ends in /<service>"),
        ("redis+sentinel://s1:26379,,s2/mymaster", "needs host"),
        ("redis+sentinel://s1:abc/mymaster", "bad port"),
        ("redis+sentinel://s1/mymaster?sentinel_password=x", "unknown option 'sentinel_password'"),
        ("redis+sentinel://s1/mymaster?sentinel_auth=maybe", "true or false"),
        ("redis-cluster://n1:7000/1", "only database 0"),
        ("redis+sentinel://[::1/mymaster", "IPv6"),
    ],
)
def test_malformed_urls_say_why_without_echoing_the_url(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_redis_url(url)
    assert url not in str(info.value)


def test_password_never_in_an_error() -> None:
    with pytest.raises(ValueError) as info:
        parse_redis_url("redis+sentinel://:hunter2@s1:bad/mymaster")
    assert "hunter2" not in str(info.value)


async def test_create_redis_on_sentinel_builds_a_blocking_sentinel_pool() -> None:
    client = create_redis(
        "redis+sentinel://:pw@127.0.0.1:1,127.0.0.1:2/mymaster/4",
        max_connections=7,
        pool_timeout=0.5,
    )
    try:
        assert isinstance(client, Redis)
        pool = client.connection_pool
        assert isinstance(pool, SentinelConnectionPool)
        assert isinstance(pool, BlockingConnectionPool)
        assert pool.service_name == "mymaster" and pool.is_master
        assert pool.max_connections == 7 and pool.timeout == 0.5
        assert pool.connection_kwargs["db"] == 4 and pool.connection_kwargs["password"] == "pw"
        manager = pool.sentinel_manager
        assert [s.connection_pool.connection_kwargs["port"] for s in manager.sentinels] == [1, 2]
        # The data nodes' password is not sent to the sentinels unless asked for.
        assert manager.sentinels[0].connection_pool.connection_kwargs.get("password") is None
    finally:
        await client.aclose()


async def test_create_redis_makes_a_cluster_client_and_so_does_the_cluster_factory() -> None:
    made = create_redis("redis-cluster://127.0.0.1:7000")
    try:
        assert isinstance(made, RedisCluster)
        assert is_cluster(made)
    finally:
        await made.aclose()
    assert is_cluster_url("redis-cluster://127.0.0.1:7000")
    assert not is_cluster_url("redis://127.0.0.1:6379/0")
    assert not is_cluster_url(None)
    with pytest.raises(ValueError, match="not a Redis Cluster URL"):
        create_redis_cluster("redis://127.0.0.1:6379/0")
    cluster = create_redis_cluster("redis-cluster://127.0.0.1:7000,127.0.0.1:7001")
    try:
        assert isinstance(cluster, RedisCluster)
    finally:
        await cluster.aclose()
