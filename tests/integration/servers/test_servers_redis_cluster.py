"""The Cluster topology: 3 masters serving every slot, and a replica taking over a killed master."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from redis.asyncio.cluster import ClusterNode, RedisCluster

from tests.servers.redis_servers import ClusterTopology

pytestmark = pytest.mark.timeout(120)


def client_for(topology: ClusterTopology) -> RedisCluster:
    return RedisCluster(
        startup_nodes=[ClusterNode(h, p) for h, p in topology.startup_nodes],
        socket_timeout=2.0,
        socket_connect_timeout=2.0,
    )


async def test_set_get_across_slots_on_every_master(redis_cluster: ClusterTopology) -> None:
    assert len(redis_cluster.masters()) == 3
    assert redis_cluster.replicas() == []
    client = client_for(redis_cluster)
    try:
        keys = [f"smoke:{i}" for i in range(60)]
        for i, key in enumerate(keys):
            assert await client.set(key, i)
        for i, key in enumerate(keys):
            assert await client.get(key) == str(i).encode()
        owners = {redis_cluster.master_for_key(key).port for key in keys}
        assert owners == {node.port for node in redis_cluster.masters()}
        # Each key really lives on the node the topology says (not just somewhere).
        for key in keys[:10]:
            with redis_cluster.master_for_key(key).client() as direct:
                assert direct.execute_command("GET", key) is not None
    finally:
        await client.aclose()


async def test_replica_takes_over_a_killed_master(
    redis_cluster_factory: Callable[..., ClusterTopology],
) -> None:
    cluster = redis_cluster_factory(replicas_per_master=1, node_timeout_ms=2000)
    assert len(cluster.masters()) == 3 and len(cluster.replicas()) == 3
    client = client_for(cluster)
    try:
        await client.set("{failover}:k", "before")
        victim = cluster.master_for_key("{failover}:k")
        with victim.client() as direct:
            direct.execute_command("WAIT", 1, 5000)  # the write reached its replica
        victim.kill()
        await cluster.await_ok()
        promoted = cluster.master_for_key("{failover}:k")
        assert promoted.port != victim.port
        with promoted.client() as direct:
            assert direct.execute_command("GET", "{failover}:k") == "before"
    finally:
        await client.aclose()
