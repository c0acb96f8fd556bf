"""A TCP fault proxy (asyncio, in-process) to put between the bot and Postgres or Redis.

Modes, switchable at any time from the test (thread-safe; takes effect before the call returns):

- ``pass``:   forward both ways (the default). Switching back to ``pass`` from ``hang`` releases
              everything that was held, in order, as a server resumed after SIGSTOP would.
- ``refuse``: stop listening, so new connections get ECONNREFUSED (a server that is down).
              Connections already open keep flowing; ``down()`` = refuse + ``cut()``.
- ``hang``:   keep accepting, forward nothing in either direction (new connections are held
              before the upstream is even dialled): a server that is alive but frozen. Clients
              see their own timeouts, never an error from us.

``cut()`` resets (RST) every open connection, on both sides, whatever the mode.

Counters (``accepted``, ``active``, ``bytes_up``, ``bytes_down``) let a test assert on traffic
rather than timing, and ``wait_accepted(n)`` / ``await_accepted(n)`` block until the proxy has
accepted ``n`` connections in total (e.g. "the client is now stuck on the hung server").

The proxy runs on its own ``BackgroundLoop`` thread, so it keeps serving while the test's loop
is blocked and works the same for a bot in this process or in a subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import struct
import threading
from types import TracebackType

from tests.servers.background import BackgroundLoop
from tests.servers.process import HOST, with_address

_CHUNK = 65536


class Mode(enum.StrEnum):
    PASS = "pass"
    REFUSE = "refuse"
    HANG = "hang"


def _reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets a RST, not an orderly FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class _Link:
    """One proxied connection: the accepted socket, its streams once made, the upstream's."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.client: asyncio.StreamWriter | None = None
        self.upstream: asyncio.StreamWriter | None = None
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True
        if self.client is None:
            _reset(self.sock)
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()


class FaultProxy:
    """Listens on 127.0.0.1:``port`` and forwards to ``upstream_host:upstream_port``."""

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        listen_port: int = 0,
        name: str = "fault-proxy",
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.name = name
        self.port = listen_port
        self._mode = Mode.PASS
        self._bg = BackgroundLoop(name)
        self._listener: socket.socket | None = None
        self._flowing: asyncio.Event | None = None
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = threading.Condition()
        self.accepted = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self.upstream_failures = 0
        #: connections reset because they were still in the backlog when ``refuse`` came
        self.refused = 0

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._bg.start()
        self._bg.run(self._start())
        return self

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._listen()

    def _listen(self) -> None:
        """Listen and accept in a reader callback of our own (not asyncio.start_server, not a
        task): a connection is ours the moment the kernel hands it over, synchronously, so
        ``refuse`` and ``cut`` can never miss one that was accepted but not yet wrapped.
        SO_REUSEADDR keeps the port ours across refuse -> pass with connections in TIME_WAIT.
        """
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, self.port))
        sock.listen(128)
        sock.setblocking(False)
        self._listener = sock
        self.port = int(sock.getsockname()[1])
        asyncio.get_running_loop().add_reader(sock.fileno(), self._accept_ready, sock)

    def _accept_ready(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # BlockingIOError: nothing more queued
                return
            conn.setblocking(False)
            link = _Link(conn)
            self._links.add(link)
            self.accepted += 1
            self._notify()
            task = loop.create_task(self._serve(link))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _stop_listening(self) -> None:
        """Stop accepting and close the listener. What the kernel already queued is reset
        (counted in ``refused``): a closed listener would leave those clients hanging."""
        if self._listener is None:
            return
        listener, self._listener = self._listener, None
        asyncio.get_running_loop().remove_reader(listener.fileno())
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # BlockingIOError: the backlog is empty
                break
            _reset(conn)
            self.refused += 1
        listener.close()

    def stop(self) -> None:
        """Close the listener and every connection; stop the thread. Idempotent."""
        if self._bg.loop.is_closed():
            return
        with contextlib.suppress(Exception):
            self._bg.call(self._close_all)
        self._bg.stop()

    def _close_all(self) -> None:
        self._stop_listening()
        if self._flowing is not None:
            self._flowing.set()
        for link in list(self._links):
            link.abort()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- where it is ----------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.port)

    def url_for(self, url: str) -> str:
        """``url`` (a Postgres or Redis URL of the upstream) pointed at this proxy instead."""
        return with_address(url, self.port)

    # -- modes ----------------------------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        return self._mode

    def set_mode(self, mode: Mode | str) -> None:
        mode = Mode(mode)
        self._bg.call(lambda: self._apply(mode))

    def _apply(self, mode: Mode) -> None:
        assert self._flowing is not None
        if mode == Mode.REFUSE:
            self._stop_listening()
            self._flowing.set()
        else:
            if self._listener is None:
                self._listen()
            if mode == Mode.HANG:
                self._flowing.clear()
            else:
                self._flowing.set()
        self._mode = mode

    def pass_through(self) -> None:
        self.set_mode(Mode.PASS)

    def refuse(self) -> None:
        self.set_mode(Mode.REFUSE)

    def hang(self) -> None:
        self.set_mode(Mode.HANG)

    def cut(self) -> int:
        """Reset every open connection (both sides); returns how many were cut."""

        def cut_all() -> int:
            links = list(self._links)
            for link in links:
                link.abort()
            return len(links)

        return self._bg.call(cut_all)

    def down(self) -> int:
        """A server that died: refuse new connections and cut the open ones."""
        self.refuse()
        return self.cut()

    # -- observing ------------------------------------------------------------------------------

    @property
    def active(self) -> int:
        return len(self._links)

    def wait_accepted(self, count: int, timeout: float = 30.0) -> None:
        """Block until ``count`` connections have been accepted in total."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.accepted >= count, timeout):
                raise TimeoutError(
                    f"{self.name}: {self.accepted} connections accepted, waited for {count}"
                )

    async def await_accepted(self, count: int, within: float = 30.0) -> None:
        await asyncio.to_thread(self.wait_accepted, count, within)

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    # -- forwarding -----------------------------------------------------------------------------

    async def _serve(self, link: _Link) -> None:
        assert self._flowing is not None
        try:
            reader, writer = await asyncio.open_connection(sock=link.sock)
            link.client = writer
            if link.aborted:  # cut while the streams were being made
                writer.transport.abort()
                return
            await self._flowing.wait()  # hang: not even dialled until released
            if link.aborted:
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            except OSError:
                self.upstream_failures += 1
                writer.transport.abort()
                return
            link.upstream = up_writer
            if link.aborted:
                link.abort()
                return
            await asyncio.gather(
                self._pump(link, reader, up_writer, up=True),
                self._pump(link, up_reader, writer, up=False),
            )
        except OSError:
            link.abort()
        finally:
            self._links.discard(link)
            for side in (link.client, link.upstream):
                if side is not None:
                    side.close()
            self._notify()

    async def _pump(
        self, link: _Link, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, up: bool
    ) -> None:
        assert self._flowing is not None
        try:
            while True:
                await self._flowing.wait()
                data = await src.read(_CHUNK)
                if not data:
                    break
                await self._flowing.wait()  # data read before a hang is held, not sent
                # Counted before it is written: whoever sees the data sees the count too.
                if up:
                    self.bytes_up += len(data)
                else:
                    self.bytes_down += len(data)
                dst.write(data)
                await dst.drain()
            if dst.can_write_eof():
                with contextlib.suppress(OSError):
                    dst.write_eof()  # half-close: pass the peer's EOF on
        except (OSError, RuntimeError):
            # One side reset or was cut: take the other down too, as a real network would.
            link.abort()
