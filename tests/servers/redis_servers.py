"""Redis/Valkey topologies on loopback: single nodes, a Cluster, primary + replica + Sentinels.

All nodes run from the same binary (``binaries.redis_binaries()``), without persistence, each in
its own directory under the topology's work dir, on free ports, as ``ServerProcess`` children
(own process group, parent-death signal, atexit): see ``tests/servers/process.py``.

Everything here is synchronous on purpose: starting a topology happens in a fixture before the
test runs, and killing a node is a signal. What a test awaits while its own traffic runs (the
Sentinel failover) has an ``async`` form that polls with redis.asyncio and never blocks the
event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis as redis_sync

from tests.servers.binaries import RedisBinaries
from tests.servers.process import (
    HOST,
    START_TIMEOUT,
    ServerProcess,
    ServerStartError,
    free_ports,
    log_tail,
    start_with_port_retry,
    wait_until,
)

#: Generous bounds for waits on the shared 2-core machine; a healthy run takes a few seconds.
CLUSTER_READY_TIMEOUT = 60.0
FAILOVER_TIMEOUT = 60.0
SERVICE = "mymaster"


def _resp_ping(port: int) -> bool:
    """PING over raw RESP: +PONG once the node serves (``-LOADING`` before that)."""
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _raw_text_command(port: int, *args: str, timeout: float = 2.0) -> str | None:
    """Send one command over raw RESP and return its bulk-string reply (INFO, CLUSTER NODES,
    CLUSTER INFO) as text, None on any error. Raw on purpose: redis-py parses these replies
    into shapes that differ between versions, and we only want the text."""
    payload = f"*{len(args)}\r\n".encode()
    for arg in args:
        data = arg.encode()
        payload += b"$%d\r\n%s\r\n" % (len(data), data)
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(payload)
            reader = sock.makefile("rb")
            header = reader.readline()
            if not header.startswith(b"$"):
                return None
            length = int(header[1:].strip())
            if length < 0:
                return None
            return reader.read(length + 2)[:length].decode(errors="replace")
    except (OSError, ValueError):
        return None


def _parse_info(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith("#"):
            key, _, value = line.partition(":")
            out[key.strip()] = value.strip()
    return out


@dataclass
class RedisNode:
    """One valkey-server/redis-server (a data node or a sentinel) on 127.0.0.1:``port``.

    ``restart()`` starts it again with the same arguments and port (a crashed node coming
    back). ``pause()``/``resume()`` freeze it with SIGSTOP/SIGCONT: connections stay open
    and nothing answers, which is what a hung server looks like to a client.
    """

    name: str
    port: int
    workdir: Path
    argv: list[str]
    process: ServerProcess
    role: str = "node"  # "primary" | "replica" | "sentinel" | "cluster" | "node"

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.port)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process.running

    def client(self, **kwargs: Any) -> redis_sync.Redis:
        """A sync client with short timeouts and decoded replies (admin and assertions);
        the caller closes it."""
        kwargs.setdefault("socket_timeout", 2.0)
        kwargs.setdefault("socket_connect_timeout", 2.0)
        kwargs.setdefault("decode_responses", True)
        return redis_sync.Redis(host=HOST, port=self.port, **kwargs)

    def info(self, section: str = "replication") -> dict[str, str]:
        """INFO <section> as a dict of strings ({} when the node does not answer)."""
        return _parse_info(_raw_text_command(self.port, "INFO", section) or "")

    def ping(self) -> bool:
        return _resp_ping(self.port)

    def start(self, *, timeout: float = START_TIMEOUT) -> None:
        self.process.spawn()
        self.process.wait_ready(self.ping, timeout=timeout)

    def restart(self, *, timeout: float = START_TIMEOUT) -> None:
        """Start again on the same port after ``kill()``/``stop()``."""
        if self.running:
            raise RuntimeError(f"{self.name} is still running")
        self.start(timeout=timeout)

    def stop(self) -> None:
        self.process.stop()

    def kill(self) -> None:
        self.process.kill()

    def pause(self) -> None:
        self.process.pause()

    def resume(self) -> None:
        self.process.resume()

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.process.log_file, lines)


def _base_args(server: str, port: int, workdir: Path) -> list[str]:
    return [
        server,
        *("--bind", HOST, "--port", str(port), "--protected-mode", "yes"),
        *("--daemonize", "no", "--logfile", "", "--dir", str(workdir)),
        *("--save", "", "--appendonly", "no"),
        # A replica's first full sync starts at once, not after the default 5 s wait for more
        # replicas to share the transfer.
        *("--repl-diskless-sync-delay", "0"),
        # DEBUG SLEEP / DEBUG SEGFAULT let a fault test freeze or crash a node from a client.
        *("--enable-debug-command", "local"),
    ]


def start_redis_node(
    binaries: RedisBinaries,
    workdir: Path,
    *,
    name: str = "redis",
    args: Sequence[str] = (),
    role: str = "node",
    extra_ports: int = 0,
    args_for_ports: Callable[[int, list[int]], Sequence[str]] | None = None,
) -> RedisNode:
    """Start one data node on a free port, ``args`` appended to the base command line.

    ``args_for_ports(port, extra)`` may build arguments that name more ports (a cluster's bus
    port): ``extra_ports`` more free ports are chosen with the node's own, and all are chosen
    again if the node finds one taken.
    """
    node_dir = workdir / name
    node_dir.mkdir(parents=True, exist_ok=True)

    def attempt() -> RedisNode:
        port, *extra = free_ports(1 + extra_ports)
        argv = _base_args(binaries.server, port, node_dir) + list(args)
        if args_for_ports is not None:
            argv += list(args_for_ports(port, extra))
        process = ServerProcess(argv, name=name, log_file=node_dir / "server.log", cwd=node_dir)
        node = RedisNode(name, port, node_dir, argv, process, role)
        node.start()
        return node

    return start_with_port_retry(attempt)


# --- Cluster -----------------------------------------------------------------------------------


@dataclass
class ClusterTopology:
    """A Redis Cluster of ``masters`` primaries (+ ``replicas_per_master`` replicas each).

    ``url`` is the ``redis-cluster://`` form that ``cache.client.create_redis_cluster`` takes;
    ``startup_nodes`` the (host, port) pairs for redis-py's RedisCluster directly. Slots are
    split evenly by ``--cluster create``; which node is a replica is decided there too and read
    back from CLUSTER NODES by ``masters()``/``replicas()``.
    """

    nodes: list[RedisNode]
    replicas_per_master: int
    node_timeout_ms: int

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [node.address for node in self.nodes]

    @property
    def url(self) -> str:
        return "redis-cluster://" + ",".join(f"{h}:{p}" for h, p in self.startup_nodes)

    def _any_live(self) -> RedisNode:
        for node in self.nodes:
            if node.running and node.ping():
                return node
        raise RuntimeError("no cluster node is running")

    def cluster_nodes(self, node: RedisNode | None = None) -> list[dict[str, Any]]:
        """CLUSTER NODES as seen by ``node`` (default: any live node): id, port, flags,
        master id, slots (ranges as text)."""
        text = _raw_text_command((node or self._any_live()).port, "CLUSTER", "NODES") or ""
        out: list[dict[str, Any]] = []
        for line in text.strip().splitlines():
            parts = line.split()
            address = parts[1].split("@", 1)[0]
            out.append(
                {
                    "id": parts[0],
                    "port": int(address.rsplit(":", 1)[1]),
                    "flags": set(parts[2].split(",")) - {"myself"},
                    "master_id": None if parts[3] == "-" else parts[3],
                    "slots": parts[8:],
                }
            )
        return out

    def _nodes_with_flag(self, flag: str) -> list[RedisNode]:
        ports = {
            n["port"]
            for n in self.cluster_nodes()
            if flag in n["flags"] and "fail" not in n["flags"]
        }
        return [node for node in self.nodes if node.port in ports]

    def masters(self) -> list[RedisNode]:
        return self._nodes_with_flag("master")

    def replicas(self) -> list[RedisNode]:
        return self._nodes_with_flag("slave")

    def keyslot(self, key: str | bytes) -> int:
        with self._any_live().client() as client:
            return int(client.execute_command("CLUSTER KEYSLOT", key))

    def master_for_key(self, key: str | bytes) -> RedisNode:
        """The node that currently serves ``key``'s slot."""
        slot = self.keyslot(key)
        for entry in self.cluster_nodes():
            if "master" not in entry["flags"] or "fail" in entry["flags"]:
                continue
            for span in entry["slots"]:
                if span.startswith("["):  # a slot being migrated: "[slot->-id]"
                    continue
                low, _, high = span.partition("-")
                if int(low) <= slot <= int(high or low):
                    return next(n for n in self.nodes if n.port == entry["port"])
        raise LookupError(f"no master serves slot {slot}")

    def is_ok(self, *, replicas: int | None = None) -> bool:
        """Every running node says cluster_state:ok, knows all nodes, covers all slots, sees
        the same roles as every other node (gossip has converged), and every running replica
        has its link to its master up. ``replicas``: also require exactly that many replicas
        (after creation; a failover changes the count)."""
        running = [n for n in self.nodes if n.running]
        views = set()
        for node in running:
            view = frozenset(
                (e["id"], "master" in e["flags"], e["master_id"])
                for e in self.cluster_nodes(node)
                if not e["flags"] & {"fail", "fail?", "handshake", "noaddr"}
            )
            views.add(view)
            if replicas is not None and sum(1 for _, m, _ in view if not m) != replicas:
                return False
        if len(views) != 1:
            return False
        for node in running:
            info = self._cluster_info(node)
            if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != "16384":
                return False
            if int(info.get("cluster_known_nodes", "0")) < len(self.nodes):
                return False
        for node in running:
            replication = node.info("replication")
            if replication.get("role") == "slave" and (
                replication.get("master_link_status") != "up"
            ):
                return False
        return True

    @staticmethod
    def _cluster_info(node: RedisNode) -> dict[str, str]:
        return _parse_info(_raw_text_command(node.port, "CLUSTER", "INFO") or "")

    def wait_ok(
        self, timeout: float = CLUSTER_READY_TIMEOUT, *, replicas: int | None = None
    ) -> None:
        """Block until ``is_ok()`` (after creation, or after a node failure and failover)."""
        wait_until(
            lambda: self.is_ok(replicas=replicas),
            timeout=timeout,
            what="cluster_state:ok on every node",
            interval=0.05,
            on_timeout=self._describe,
        )

    async def await_ok(self, within: float = CLUSTER_READY_TIMEOUT) -> None:
        """``wait_ok`` for an async test: the checks run in a thread, the loop keeps going."""
        await asyncio.to_thread(self.wait_ok, within)

    def _failed_over(self, old: RedisNode) -> bool:
        live_masters = {n.port for n in self.masters()}
        return old.port not in live_masters and self.is_ok()

    def wait_for_failover(self, old: RedisNode, timeout: float = FAILOVER_TIMEOUT) -> None:
        """Block until the cluster flagged ``old`` (a killed master) as failed, promoted its
        replica, and says ``cluster_state:ok`` everywhere again."""
        wait_until(
            lambda: self._failed_over(old),
            timeout=timeout,
            what=f"failover of the master on :{old.port}",
            interval=0.05,
            on_timeout=self._describe,
        )

    async def await_failover(self, old: RedisNode, within: float = FAILOVER_TIMEOUT) -> None:
        """``wait_for_failover`` for an async test (the checks run in a thread)."""
        await asyncio.to_thread(self.wait_for_failover, old, within)

    def _describe(self) -> str:
        parts = []
        for node in self.nodes:
            parts.append(f"--- {node.name} :{node.port} running={node.running}")
            parts.append(str(self._cluster_info(node)))
            parts.append(node.log_tail(10))
        return "\n".join(parts)

    def stop(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.kill()  # no persistence: nothing to shut down cleanly


def start_cluster(
    binaries: RedisBinaries,
    workdir: Path,
    *,
    masters: int = 3,
    replicas_per_master: int = 0,
    node_timeout_ms: int = 3000,
) -> ClusterTopology:
    """Start ``masters * (1 + replicas_per_master)`` cluster-enabled nodes, join them with
    ``<cli> --cluster create`` and wait until the whole cluster says ``cluster_state:ok``.

    ``node_timeout_ms`` is how long a silent node may stay before it is failed over (low for
    fast failover tests, but not so low that a busy machine fails healthy nodes).
    """
    if masters < 3:
        raise ValueError("redis-cli --cluster create needs at least 3 masters")
    if binaries.cli is None:
        raise ServerStartError("no valkey-cli/redis-cli to create the cluster with")
    count = masters * (1 + replicas_per_master)
    nodes: list[RedisNode] = []
    topology = ClusterTopology(nodes, replicas_per_master, node_timeout_ms)
    try:
        for index in range(count):
            nodes.append(
                start_redis_node(
                    binaries,
                    workdir,
                    name=f"cluster-{index}",
                    role="cluster",
                    args=(
                        *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
                        *("--cluster-node-timeout", str(node_timeout_ms)),
                        # A replica of a failed master may take over however long it was cut off.
                        *("--cluster-replica-validity-factor", "0"),
                    ),
                    extra_ports=1,
                    # The bus port explicitly: port + 10000 may be above 65535 or taken.
                    args_for_ports=lambda _port, extra: ("--cluster-port", str(extra[0])),
                )
            )
        result = subprocess.run(
            [
                binaries.cli,
                "--cluster",
                "create",
                *(f"{HOST}:{node.port}" for node in nodes),
                "--cluster-replicas",
                str(replicas_per_master),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=CLUSTER_READY_TIMEOUT,
            check=False,
        )
        (workdir / "cluster-create.log").write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            raise ServerStartError(
                f"--cluster create failed ({result.returncode}):\n{result.stdout[-2000:]}"
                f"{result.stderr[-2000:]}"
            )
        topology.wait_ok(replicas=masters * replicas_per_master)
    except BaseException:
        topology.stop()
        raise
    return topology


# --- Sentinel ----------------------------------------------------------------------------------


@dataclass
class SentinelTopology:
    """A primary, ``replicas`` replicas and ``sentinels`` sentinels monitoring ``service``.

    ``url()`` is the ``redis+sentinel://`` form that ``cache.client.create_redis`` takes.
    ``kill_primary()`` crashes the current primary (SIGKILL); ``wait_for_failover()`` /
    ``await_failover()`` return once the sentinels name a different primary *and* that node
    says ``role:master`` (observed, never a fixed sleep).
    """

    primary: RedisNode
    replicas: list[RedisNode]
    sentinels: list[RedisNode]
    service: str = SERVICE
    quorum: int = 2
    down_after_ms: int = 1500
    failover_timeout_ms: int = 5000
    _clients: list[Any] = field(default_factory=list, repr=False)

    @property
    def data_nodes(self) -> list[RedisNode]:
        return [self.primary, *self.replicas]

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [s.address for s in self.sentinels]

    def url(self, db: int = 0) -> str:
        hosts = ",".join(f"{h}:{p}" for h, p in self.sentinel_addresses)
        return f"redis+sentinel://{hosts}/{self.service}/{db}"

    def node_at(self, address: tuple[str, int]) -> RedisNode:
        for node in self.data_nodes:
            if node.port == int(address[1]):
                return node
        raise LookupError(f"no data node at {address}")

    # -- what the sentinels say ----------------------------------------------------------------

    def sentinel_views(self) -> list[tuple[str, int] | None]:
        """Each running sentinel's answer to get-master-addr-by-name (None: no answer)."""
        views: list[tuple[str, int] | None] = []
        for sentinel in self.sentinels:
            if not sentinel.running:
                continue
            try:
                with sentinel.client() as client:
                    host, port = client.execute_command(
                        "SENTINEL", "get-master-addr-by-name", self.service
                    )
                views.append((str(host), int(port)))
            except (redis_sync.RedisError, TypeError, ValueError):
                views.append(None)
        return views

    def master_address(self) -> tuple[str, int]:
        """The address most running sentinels agree on (raises if they do not agree yet)."""
        views = [v for v in self.sentinel_views() if v is not None]
        if not views:
            raise LookupError("no sentinel names a master")
        best = max(set(views), key=views.count)
        if views.count(best) < self.quorum:
            raise LookupError(f"sentinels disagree: {views}")
        return best

    def current_primary(self) -> RedisNode:
        return self.node_at(self.master_address())

    def _sentinels_ready(self) -> bool:
        """Every sentinel sees the master up, all replicas and all other sentinels: only then
        can a failover elect a leader and find a replica to promote."""
        for sentinel in self.sentinels:
            try:
                with sentinel.client() as client:
                    state = client.sentinel_master(self.service)
            except redis_sync.RedisError:
                return False
            if not state.get("is_master") or state.get("is_sdown") or state.get("is_odown"):
                return False
            if int(state.get("num-slaves", 0)) < len(self.replicas):
                return False
            if int(state.get("num-other-sentinels", 0)) < len(self.sentinels) - 1:
                return False
        return True

    def _replicas_linked(self) -> bool:
        return all(r.info("replication").get("master_link_status") == "up" for r in self.replicas)

    def wait_ready(self, timeout: float = CLUSTER_READY_TIMEOUT) -> None:
        wait_until(
            lambda: self._replicas_linked() and self._sentinels_ready(),
            timeout=timeout,
            what="replicas linked and every sentinel seeing master, replicas and peers",
            interval=0.05,
            on_timeout=self._describe,
        )

    def wait_replicated(self, timeout: float = 30.0) -> None:
        """Block until every running replica has everything the primary has written so far
        (replication offsets equal): a write made before this call survives a failover."""
        primary = self.current_primary()

        def caught_up() -> bool:
            target = int(primary.info("replication").get("master_repl_offset", "-1"))
            for node in self.data_nodes:
                if node is primary or not node.running:
                    continue
                info = node.info("replication")
                if info.get("master_link_status") != "up":
                    return False
                if int(info.get("slave_repl_offset", "-1")) < target:
                    return False
            return True

        wait_until(caught_up, timeout=timeout, what="replicas caught up with the primary")

    # -- faults ---------------------------------------------------------------------------------

    def kill_primary(self) -> RedisNode:
        """SIGKILL the node the sentinels currently name as primary; returns it (restart it
        later with ``node.restart()``: the sentinels then turn it into a replica)."""
        node = self.current_primary()
        node.kill()
        return node

    def _failover_done(self, old: tuple[str, int]) -> tuple[str, int] | None:
        try:
            new = self.master_address()
        except LookupError:
            return None
        if new == old:
            return None
        try:
            node = self.node_at(new)
        except LookupError:
            return None
        return new if node.info("replication").get("role") == "master" else None

    def wait_for_failover(
        self, old: tuple[str, int], timeout: float = FAILOVER_TIMEOUT
    ) -> tuple[str, int]:
        """Block until the sentinels agree on a new master (not ``old``) that serves as one."""
        found: list[tuple[str, int]] = []

        def done() -> bool:
            new = self._failover_done(old)
            if new is not None:
                found.append(new)
            return new is not None

        wait_until(
            done,
            timeout=timeout,
            what=f"a failover away from {old}",
            interval=0.05,
            on_timeout=self._describe,
        )
        return found[-1]

    async def await_failover(
        self, old: tuple[str, int], within: float = FAILOVER_TIMEOUT
    ) -> tuple[str, int]:
        """``wait_for_failover`` for an async test: the polling runs in a thread, so the test's
        own traffic keeps running on its loop meanwhile."""
        return await asyncio.to_thread(self.wait_for_failover, old, within)

    def _describe(self) -> str:
        parts = [f"sentinel views: {self.sentinel_views()}"]
        for node in [*self.data_nodes, *self.sentinels]:
            parts.append(f"--- {node.name} :{node.port} running={node.running}")
            parts.append(node.log_tail(12))
        return "\n".join(parts)

    def stop(self) -> None:
        for node in [*self.sentinels, *self.data_nodes]:
            with contextlib.suppress(Exception):
                node.kill()


def _sentinel_config(
    port: int,
    directory: Path,
    primary_port: int,
    *,
    service: str,
    quorum: int,
    down_after_ms: int,
    failover_timeout_ms: int,
) -> str:
    return "\n".join(
        [
            f"port {port}",
            f"bind {HOST}",
            "daemonize no",
            'logfile ""',
            f'dir "{directory}"',
            f"sentinel monitor {service} {HOST} {primary_port} {quorum}",
            f"sentinel down-after-milliseconds {service} {down_after_ms}",
            f"sentinel failover-timeout {service} {failover_timeout_ms}",
            f"sentinel parallel-syncs {service} 1",
            "",
        ]
    )


def start_sentinel_topology(
    binaries: RedisBinaries,
    workdir: Path,
    *,
    replicas: int = 1,
    sentinels: int = 3,
    service: str = SERVICE,
    down_after_ms: int = 1500,
    failover_timeout_ms: int = 5000,
) -> SentinelTopology:
    """Start a primary, its replicas (``--replicaof``) and the sentinels (``--sentinel`` with a
    config file each: a sentinel rewrites its file), and wait until every sentinel sees the
    primary, all replicas and all its peers.

    ``down_after_ms``: how long the primary may be silent before a sentinel calls it down; the
    failover follows within about a second more on an idle machine.
    """
    quorum = sentinels // 2 + 1
    primary = start_redis_node(binaries, workdir, name="primary", role="primary")
    topology = SentinelTopology(
        primary,
        [],
        [],
        service=service,
        quorum=quorum,
        down_after_ms=down_after_ms,
        failover_timeout_ms=failover_timeout_ms,
    )
    try:
        for index in range(replicas):
            topology.replicas.append(
                start_redis_node(
                    binaries,
                    workdir,
                    name=f"replica-{index}",
                    role="replica",
                    args=("--replicaof", HOST, str(primary.port)),
                )
            )
        for index in range(sentinels):
            topology.sentinels.append(
                _start_sentinel(
                    binaries,
                    workdir / f"sentinel-{index}",
                    name=f"sentinel-{index}",
                    primary_port=primary.port,
                    service=service,
                    quorum=quorum,
                    down_after_ms=down_after_ms,
                    failover_timeout_ms=failover_timeout_ms,
                )
            )
        topology.wait_ready()
    except BaseException:
        topology.stop()
        raise
    return topology


def _start_sentinel(
    binaries: RedisBinaries,
    directory: Path,
    *,
    name: str,
    primary_port: int,
    service: str,
    quorum: int,
    down_after_ms: int,
    failover_timeout_ms: int,
) -> RedisNode:
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "sentinel.conf"

    def attempt() -> RedisNode:
        (port,) = free_ports(1)
        conf.write_text(
            _sentinel_config(
                port,
                directory,
                primary_port,
                service=service,
                quorum=quorum,
                down_after_ms=down_after_ms,
                failover_timeout_ms=failover_timeout_ms,
            )
        )
        argv = [binaries.server, str(conf), "--sentinel"]
        process = ServerProcess(argv, name=name, log_file=directory / "server.log", cwd=directory)
        node = RedisNode(name, port, directory, argv, process, "sentinel")
        node.start()
        return node

    return start_with_port_retry(attempt)
