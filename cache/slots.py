"""The auto-pipeline on a Redis Cluster: one shared pipeline per node.

``PipelineBatcher`` (cache/pipelining.py) talks to one server over redis-py's connections. On a
cluster every command goes to the primary that serves its key's hash slot, so ``ClusterBatcher``
splits a batch by node and hands each part to a ``PipelineBatcher`` of that node (the same wire
code, the same sharing between concurrent callers, the same "not sent" proof), then puts the
replies back in order:

- a single-key command (GET, HINCRBY, EVALSHA with its keys, ...) goes to the node of its key;
- a multi-key read or delete (MGET, DEL, UNLINK, EXISTS, TOUCH) whose keys span several slots
  is split into one command per slot and its replies merged (MGET in key order, the others
  summed), which is what one server would have answered;
- a command without a key (PUBLISH, PING) goes to any primary.

What a node failure costs, per command (the engine's side commands depend on it):

- a node that could not be reached (refused, pool empty, handshake timeout) or that answered
  CLUSTERDOWN / TRYAGAIN ran nothing: its commands get ``NotSentError`` in their place (the
  engine replays side commands into Postgres), and the client's slot map is refreshed;
- a node that failed after the write (a timeout, a reset) may have run them: the whole call
  raises that error, as one server would (the engine counts side commands as unknown and never
  replays them, so a count is never added twice);
- MOVED (the slot has a new owner, e.g. after a failover): the slot map is patched and the
  command is sent once more to the new owner; ASK (a slot being migrated) goes through
  redis-py's own redirect handling.

The node pools are redis-py's own (``ClusterNode``): nothing here opens connections redis-py
does not know of, and a topology refresh that replaces a node retires its batcher.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any, Final, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    RedisClusterException,
    RedisError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from cache.pipelining import NotSentError, PipelineBatcher

__all__ = ["ClusterBatcher", "command_slot"]

#: Multi-key commands whose keys may be split by slot, with how their replies merge.
_SPLIT_LIST: Final = frozenset({"MGET"})
_SPLIT_SUM: Final = frozenset({"DEL", "UNLINK", "EXISTS", "TOUCH"})
_SCRIPTS: Final = frozenset({"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"})
_KEYLESS: Final = frozenset({"PUBLISH", "PING", "ECHO", "TIME", "SCRIPT"})


def _as_bytes(key: Any) -> bytes:
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode()
    return str(key).encode()


def command_slot(command: Sequence[Any]) -> int | None:
    """The hash slot a command goes to (its first key's), None for a keyless command.

    Scripts name their keys after ``numkeys``; a script that touches keys of several slots is
    refused by the server (CROSSSLOT) in its reply slot, as on any cluster client.
    """
    name = str(command[0]).upper()
    if name in _SCRIPTS:
        if len(command) < 4 or int(command[2]) < 1:
            return None
        return key_slot(_as_bytes(command[3]))
    if name in _KEYLESS or len(command) < 2:
        return None
    return key_slot(_as_bytes(command[1]))


class _NodePool:
    """What ``PipelineBatcher`` needs of a pool, over a ``ClusterNode``'s own connections."""

    __slots__ = ("__weakref__", "connection_kwargs", "max_connections", "node")

    def __init__(self, node: ClusterNode) -> None:
        self.node = node
        self.connection_kwargs = node.connection_kwargs
        self.max_connections = node.max_connections

    async def get_connection(self) -> Any:
        node = self.node
        conn = node.acquire_connection()  # MaxConnectionsError: a ConnectionError, not sent
        try:
            await node.disconnect_if_needed(conn)
            await conn.connect()  # type: ignore[no-untyped-call]
        except BaseException:
            node.release(conn)
            raise
        return conn

    async def release(self, conn: Any) -> None:
        self.node.release(conn)


class _NodeClient:
    """Stands for a client of one node (PipelineBatcher reads ``connection_pool``)."""

    __slots__ = ("connection_pool",)

    def __init__(self, node: ClusterNode) -> None:
        self.connection_pool = _NodePool(node)


class _Part:
    """The commands of one call that go to one node, and where each reply belongs."""

    __slots__ = ("commands", "node", "targets")

    def __init__(self, node: ClusterNode) -> None:
        self.node = node
        self.commands: list[tuple[Any, ...]] = []
        #: per command: (index of the caller's command, index within a split command or -1)
        self.targets: list[tuple[int, int]] = []


class ClusterBatcher:
    """``PipelineBatcher``'s interface (execute / execute_one / aclose / pipelines) for a
    ``RedisCluster``: one batcher per primary, see the module docstring."""

    def __init__(self, *, timeout: float, max_in_flight: int = 4, max_batch: int = 1024) -> None:
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self.max_batch = max_batch
        self._nodes: dict[str, tuple[ClusterNode, Redis, PipelineBatcher]] = {}
        self._retired = 0
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def pipelines(self) -> int:
        """Pipelines executed, over every node (for tests and metrics)."""
        return self._retired + sum(b.pipelines for _, _, b in self._nodes.values())

    def _for_node(self, node: ClusterNode) -> tuple[Redis, PipelineBatcher]:
        found = self._nodes.get(node.name)
        if found is not None and found[0] is node:
            return found[1], found[2]
        if found is not None:  # the topology refresh made a new node object: retire the old
            self._retire(found[2])
        client = cast(Redis, _NodeClient(node))
        batcher = PipelineBatcher(
            timeout=self.timeout, max_in_flight=self.max_in_flight, max_batch=self.max_batch
        )
        self._nodes[node.name] = (node, client, batcher)
        return client, batcher

    def _retire(self, batcher: PipelineBatcher) -> None:
        self._retired += batcher.pipelines
        task = asyncio.get_running_loop().create_task(batcher.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @staticmethod
    def _refresh(redis: RedisCluster, node: ClusterNode | None, exc: BaseException) -> None:
        """Ask redis-py for a new slot map (run by the next command that needs one), and
        have the node's idle connections reconnected after a connection error."""
        if node is not None and isinstance(exc, RedisConnectionError):
            node._mark_free_connections_for_reconnect_on_error(exc)
        redis._request_refresh(last_failed_node_name=node.name if node is not None else None)

    async def execute_one(self, redis: Redis, command: tuple[Any, ...]) -> Any:
        """One command; its reply (an error reply is raised)."""
        reply = (await self.execute(redis, (command,)))[0]
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def execute(self, redis: Redis, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Replies in order, error replies (and ``NotSentError`` for a node that ran nothing)
        in place; raises ``NotSentError`` when nothing ran anywhere, or the error of a node
        that failed after the write (its commands' outcome is unknown)."""
        cluster = cast(RedisCluster, redis)
        if cluster._initialize:
            try:
                await cluster.initialize()
            except (RedisError, RedisClusterException, OSError) as exc:
                raise NotSentError(f"no cluster topology: {exc!r}") from exc
        try:
            parts, splits = self._route(cluster, commands)
        except (RedisError, RedisClusterException) as exc:  # a slot without a node: not sent
            self._refresh(cluster, None, exc)
            raise NotSentError(f"no node for a slot: {exc!r}") from exc
        unknown: BaseException | None = None
        if len(parts) == 1:
            outcomes: list[Any] = [await self._send_part(cluster, parts[0])]
        else:
            outcomes = list(
                await asyncio.gather(
                    *(self._send_part(cluster, part) for part in parts), return_exceptions=True
                )
            )
        replies: list[Any] = [None] * len(commands)
        split_replies: dict[int, list[Any]] = {
            i: [None] * (max(subs) + 1) for i, subs in splits.items()
        }
        ran = False
        for part, outcome in zip(parts, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, NotSentError):
                    unknown = unknown or outcome
                    continue
                outcome = [outcome] * len(part.commands)
            else:
                ran = True
            for (index, sub), reply in zip(part.targets, outcome, strict=True):
                if sub < 0:
                    replies[index] = reply
                else:
                    split_replies[index][sub] = reply
        if unknown is not None:
            raise unknown
        if not ran:
            raise next(o for o in outcomes if isinstance(o, NotSentError))
        for index, subs in split_replies.items():
            replies[index] = self._merge(commands[index], subs, splits[index])
        return replies

    def _route(
        self, redis: RedisCluster, commands: Sequence[tuple[Any, ...]]
    ) -> tuple[list[_Part], dict[int, list[int]]]:
        """Group the commands by the primary of their slot; split multi-key ones by slot
        (``splits``: per split command, the sub-command each of its keys went to)."""
        by_node: dict[str, _Part] = {}
        splits: dict[int, list[int]] = {}
        manager = redis.nodes_manager

        def part_for(slot: int | None) -> _Part:
            if slot is None:
                node = redis.get_default_node() or redis.get_random_node()
            else:
                node = manager.get_node_from_slot(slot)
            part = by_node.get(node.name)
            if part is None:
                part = by_node[node.name] = _Part(node)
            return part

        for index, command in enumerate(commands):
            name = str(command[0]).upper()
            if (name in _SPLIT_LIST or name in _SPLIT_SUM) and len(command) > 2:
                sub_of: dict[int, int] = {}  # slot -> its sub-command
                groups: list[tuple[int, list[Any]]] = []  # per sub-command: (slot, keys)
                key_subs: list[int] = []  # per key: its sub-command
                for key in command[1:]:
                    slot = key_slot(_as_bytes(key))
                    sub = sub_of.get(slot)
                    if sub is None:
                        sub = sub_of[slot] = len(groups)
                        groups.append((slot, []))
                    groups[sub][1].append(key)
                    key_subs.append(sub)
                if len(groups) > 1:
                    splits[index] = key_subs
                    for sub, (slot, keys) in enumerate(groups):
                        part = part_for(slot)
                        part.commands.append((command[0], *keys))
                        part.targets.append((index, sub))
                    continue
            part = part_for(command_slot(command))
            part.commands.append(command)
            part.targets.append((index, -1))
        return list(by_node.values()), splits

    async def _send_part(self, redis: RedisCluster, part: _Part) -> list[Any]:
        client, batcher = self._for_node(part.node)
        try:
            replies = await batcher.execute(client, part.commands)
        except (RedisError, OSError) as exc:  # NotSentError included
            self._refresh(redis, part.node, exc)
            raise
        for i, reply in enumerate(replies):
            if isinstance(reply, RedisError):
                replies[i] = await self._redirected(redis, part.node, part.commands[i], reply)
        return replies

    async def _redirected(
        self, redis: RedisCluster, node: ClusterNode, command: tuple[Any, ...], reply: RedisError
    ) -> Any:
        """The reply of a command that a node refused as not its own (or could not serve)."""
        if isinstance(reply, MovedError):
            if not reply.host:  # "MOVED 3999 :6381": the host is the one that answered
                reply.host = node.host
            await redis.nodes_manager.move_slot(reply)
            owner = redis.nodes_manager.get_node_from_slot(reply.slot_id)
            if owner.name == node.name:
                return reply
            client, batcher = self._for_node(owner)
            try:
                return (await batcher.execute(client, (command,)))[0]
            except NotSentError as exc:
                self._refresh(redis, owner, exc)
                return exc
        if isinstance(reply, AskError):
            try:
                return await redis.execute_command(*command)
            except RedisError as exc:
                return exc
        if isinstance(reply, ClusterDownError | TryAgainError):
            self._refresh(redis, node, reply)
            sent = NotSentError(f"{type(reply).__name__}: {reply}")
            sent.__cause__ = reply
            return sent
        return reply

    @staticmethod
    def _merge(command: tuple[Any, ...], subs: list[Any], key_subs: list[int]) -> Any:
        """One reply for a command split by slot (the first error, if any); ``key_subs``: the
        sub-command each key went to, as ``_route`` split it."""
        for reply in subs:
            if isinstance(reply, Exception):
                return reply
        if str(command[0]).upper() in _SPLIT_SUM:
            return sum(int(r) for r in subs)
        # MGET: the values in the order of the keys (each sub-command kept its keys in order)
        values = [iter(reply) for reply in subs]
        return [next(values[sub]) for sub in key_subs]

    async def aclose(self) -> None:
        nodes, self._nodes = self._nodes, {}
        for _, _, batcher in nodes.values():
            self._retired += batcher.pipelines
            with contextlib.suppress(Exception):
                await batcher.aclose()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
