"""Child processes for test servers: started on loopback, always stopped, never left behind.

Every server a test starts (valkey-server, a sentinel, nginx, haproxy, pgbouncer) goes through
``ServerProcess``. What makes the clean-up reliable, from the likeliest failure to the rarest:

- the fixture that started it stops it in its ``finally`` (a failing test still reaches it);
- ``atexit`` kills whatever is still registered when pytest exits normally (an interrupted
  session, a fixture whose teardown raised before reaching it);
- on Linux the child gets a parent-death signal (SIGKILL): a pytest process killed with -9
  takes its servers with it;
- each server runs in its own session/process group and is stopped by group, so a server
  that forks (nginx's workers, haproxy) leaves no child behind either.

Ports: ``free_ports`` asks the kernel for distinct free ports. Another process may take one
between our choice and the server's bind; starters therefore retry with new ports when the
server's log says the address is in use (``start_with_port_retry``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

HOST = "127.0.0.1"
#: How long a server may take to become ready; generous because the machine is shared.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
_BIND_ERRORS = ("address already in use", "could not bind", "cannot bind", "eaddrinuse")
_PR_SET_PDEATHSIG = 1


class ServerStartError(RuntimeError):
    """A test server did not come up; the message carries the tail of its log."""


class PortInUse(ServerStartError):
    """The server could not bind its port (taken after we chose it): choose again."""


def free_ports(count: int, *, host: str = HOST) -> list[int]:
    """``count`` distinct ports that are free right now (all sockets held until all chosen, so
    the kernel cannot hand out the same port twice)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            socks.append(sock)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port(*, host: str = HOST) -> int:
    return free_ports(1, host=host)[0]


def port_open(port: int, *, host: str = HOST, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    predicate: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.02,
    on_timeout: Callable[[], str] | None = None,
) -> None:
    """Poll ``predicate`` until it holds; raise TimeoutError naming ``what`` after ``timeout``.

    This waits for an observed state (a port answering, a replica linked), never for a fixed
    time: the deadline only bounds a failure, it is not how long the wait usually takes.
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            detail = on_timeout() if on_timeout is not None else ""
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}\n{detail}")
        time.sleep(interval)


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """A preexec_fn giving the child SIGKILL when the forking thread dies (Linux only).

    Only from the main thread: the signal follows the *thread* that forked, so a server started
    from a worker thread would die with that thread. prctl is resolved here, in the parent:
    the child must not load libraries between fork and exec.
    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


_LIVE: set[ServerProcess] = set()
_LIVE_LOCK = threading.Lock()


def _kill_all_at_exit() -> None:
    with _LIVE_LOCK:
        live = list(_LIVE)
    for proc in live:
        with contextlib.suppress(Exception):
            proc.kill()


atexit.register(_kill_all_at_exit)


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class ServerProcess:
    """One server process: its own process group, output appended to ``log_file``.

    ``stop()`` asks politely (``stop_signal`` to the group) and kills the group if that takes
    longer than STOP_TIMEOUT; ``kill()`` is SIGKILL at once (a crash, for failover tests);
    ``pause()``/``resume()`` are SIGSTOP/SIGCONT (a hung server that still holds its
    connections). All are idempotent and safe on a process that already died.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str,
        log_file: Path,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        stop_signal: int = signal.SIGTERM,
        popen_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.name = name
        self.log_file = log_file
        self.cwd = cwd
        self.env = env
        self.stop_signal = stop_signal
        self.popen_kwargs = popen_kwargs or {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        # Set once the group was stopped and reaped: signalling it again could reach a
        # process that reused the number.
        self._finished = True

    def __repr__(self) -> str:
        return f"<ServerProcess {self.name} pid={self.pid} running={self.running}>"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def spawn(self) -> None:
        """Start the process (not waiting for readiness: see ``wait_ready``)."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as out:
            self._log_offset = out.tell()
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=str(self.cwd) if self.cwd else None,
                env=self.env,
                start_new_session=True,
                preexec_fn=_pdeathsig_preexec(),
                **self.popen_kwargs,
            )
        self._finished = False
        with _LIVE_LOCK:
            _LIVE.add(self)

    def output_since_start(self) -> str:
        """What the process wrote to its log since the last spawn."""
        try:
            with self.log_file.open("rb") as fh:
                fh.seek(self._log_offset)
                return fh.read().decode(errors="replace")
        except OSError:
            return ""

    def wait_ready(self, ready: Callable[[], bool], *, timeout: float = START_TIMEOUT) -> None:
        """Wait until ``ready()``; raise PortInUse / ServerStartError (and stop the process)
        if it exits first or the timeout passes."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                break
            if ready():
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        output = self.output_since_start()
        self.kill()
        lowered = output.lower()
        if any(err in lowered for err in _BIND_ERRORS):
            raise PortInUse(f"{self.name}: port in use\n{output[-1500:]}")
        state = f"exited with {self.returncode}" if self.returncode is not None else "not ready"
        raise ServerStartError(
            f"{self.name} did not start ({state}); log {self.log_file}:\n{output[-3000:]}"
        )

    def _signal_group(self, sig: int) -> None:
        if self._proc is None or self._finished:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def _forget(self) -> None:
        self._finished = True
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop cleanly (``stop_signal``), escalating to SIGKILL after ``timeout``."""
        proc = self._proc
        if proc is None or self._finished:
            return
        if proc.poll() is None:
            self._signal_group(signal.SIGCONT)  # a paused server cannot act on SIGTERM
            self._signal_group(self.stop_signal)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                proc.wait(timeout=timeout)
        # The leader is gone; children that outlived it (nginx workers) go now.
        self._signal_group(signal.SIGKILL)
        self._forget()

    def kill(self) -> None:
        """SIGKILL the whole group at once and reap it: a crash, no shutdown work."""
        proc = self._proc
        if proc is None or self._finished:
            return
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_TIMEOUT)
        self._forget()

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing (a hung server)."""
        self._signal_group(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal_group(signal.SIGCONT)


def start_with_port_retry(start: Callable[[], T], *, attempts: int = 3) -> T:
    """Call ``start()`` (which chooses its ports afresh each time); when it raises PortInUse
    (a port we chose was taken meanwhile), try again, ``attempts`` times in all."""
    for attempt in range(attempts):
        try:
            return start()
        except PortInUse:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def unprivileged_user() -> tuple[int, int] | None:
    """(uid, gid) of ``nobody`` when we are root (for servers that refuse to run as root),
    else None."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    import grp
    import pwd

    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        return None
    gid = entry.pw_gid
    for group in ("nogroup", "nobody"):
        with contextlib.suppress(KeyError):
            gid = grp.getgrnam(group).gr_gid
            break
    return entry.pw_uid, gid


def make_world_readable(directory: Path) -> None:
    """Let an unprivileged server (``nobody``) traverse ``directory`` and read its files.

    Only the directory we created and what is in it; /tmp itself is already traversable.
    """
    directory.chmod(0o755)
    for path in directory.iterdir():
        if path.is_file():
            path.chmod(0o644)


def with_address(url: str, port: int, host: str = HOST) -> str:
    """``url`` with its host:port replaced (user, password, path and query kept): the same
    database or Redis reached through a proxy, a bouncer or a balancer."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{host}:{port}"))
