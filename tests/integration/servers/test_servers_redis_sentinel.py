"""The Sentinel topology: every sentinel sees the set-up; a killed primary is failed over (the
sentinels' answer to get-master-addr-by-name changes), replicated data survives, and the old
primary comes back as a replica."""

from __future__ import annotations

import pytest

from tests.servers.process import wait_until
from tests.servers.redis_servers import SentinelTopology

pytestmark = pytest.mark.timeout(120)


async def test_failover_changes_the_master_and_keeps_replicated_data(
    redis_sentinel: SentinelTopology,
) -> None:
    old = redis_sentinel.master_address()
    assert old == redis_sentinel.primary.address
    assert len(set(redis_sentinel.sentinel_views())) == 1
    with redis_sentinel.primary.client() as client:
        client.set("smoke:before", "kept")
    redis_sentinel.wait_replicated()

    killed = redis_sentinel.kill_primary()
    assert killed is redis_sentinel.primary and not killed.running
    new = await redis_sentinel.await_failover(old)

    assert new != old
    assert new == redis_sentinel.replicas[0].address
    promoted = redis_sentinel.node_at(new)
    assert promoted.info("replication")["role"] == "master"
    with promoted.client() as client:
        assert client.get("smoke:before") == "kept"
        client.set("smoke:after", "written")  # writable: a real master now

    # The old primary, restarted, is turned into a replica of the new one by the sentinels.
    killed.restart()
    wait_until(
        lambda: (
            killed.info("replication").get("master_port") == str(new[1])
            and killed.info("replication").get("master_link_status") == "up"
        ),
        timeout=60,
        what="the old primary to rejoin as a replica",
    )
    assert redis_sentinel.master_address() == new
