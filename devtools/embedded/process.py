"""What both embedded servers share: the server handle, ports, data folders, logs, and the
process care (own session, parent-death signal, orphans of a crashed run found and stopped)."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    import psutil  # type: ignore[import-untyped]

log = structlog.get_logger("devtools.embedded")

HOST = "127.0.0.1"
_START_TIMEOUT = 60.0  # crash recovery after a kill -9 replays WAL; normally < 1 s
_STOP_TIMEOUT = 30.0  # fast shutdown writes a checkpoint; escalate only if it hangs
_LOG_ROTATE_BYTES = 5 * 1024 * 1024
_BIND_ERRORS = ("address already in use", "could not bind", "could not create any tcp/ip sockets")
# Parents that mean "nobody owns this server any more" (it was re-parented to init or a reaper).
_REAPERS = frozenset({"init", "systemd", "tini", "dumb-init", "docker-init", "launchd"})


class EmbeddedError(RuntimeError):
    """An embedded server could not be started; the message says why and where the log is."""


@dataclass
class EmbeddedServer:
    """Handle for one running server: its URL, data dir, and a stop() that waits for the exit."""

    url: str
    data_dir: Path
    kind: str = "server"  # "postgres" | "valkey": prefixes the log events
    port: int = 0
    pid: int | None = None
    log_file: Path | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _stop_signal: int = field(default=signal.SIGTERM, repr=False)
    _kill_signal: int = field(default=signal.SIGKILL, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _stopped: bool = field(default=False, repr=False)

    def stop(self) -> None:
        """Ask the server to shut down cleanly and wait until the process is gone.

        Idempotent (called by __exit__ and again by atexit). Postgres gets SIGINT (fast shutdown:
        roll back open transactions, checkpoint, exit), Valkey SIGTERM (final RDB save, AOF fsync).
        If that does not finish within the timeout the process is killed, because leaving a
        half-stopped server around is worse: the next start recovers from a crash anyway.
        """
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            proc = self._process
            if proc is None:
                return
            started = time.monotonic()
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, self._stop_signal)
                try:
                    proc.wait(timeout=_STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    log.warning(f"embedded_{self.kind}_stop_timeout", pid=proc.pid)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, self._kill_signal)
                    proc.wait(timeout=_STOP_TIMEOUT)
            log.info(
                f"embedded_{self.kind}_stopped",
                url=self.url,
                pid=proc.pid,
                returncode=proc.returncode,
                seconds=round(time.monotonic() - started, 3),
            )

    @property
    def running(self) -> bool:
        """True while the server process is alive (it may have died on its own)."""
        return self._process is not None and self._process.poll() is None


def _psutil() -> Any:
    """psutil comes with both wheels (the `local` extra); imported lazily so that importing this
    module never fails on a machine that uses real servers."""
    return importlib.import_module("psutil")


def _port_is_free(port: int) -> bool:
    """Can a server listen on 127.0.0.1:port right now?

    SO_REUSEADDR like both servers use, so a port whose last connections sit in TIME_WAIT after
    the previous run counts as free (it is, for them), while a live listener does not.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _random_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _choose_port(kind: str, port: int | None, default: int | None) -> tuple[int, bool]:
    """Return (port, may_retry): the explicit port, else the stable default if free, else random.

    A stable default gives a developer the same URL on every run (handy for psql / redis-cli);
    tests pass default=None so a throwaway server never takes the developer's port.
    """
    if port is not None:
        return port, False
    if default is not None:
        if _port_is_free(default):
            return default, True
        chosen = _random_free_port()
        log.info(f"embedded_{kind}_port_busy", port=default, fallback=chosen)
        return chosen, True
    return _random_free_port(), True


def _prepare_dir(kind: str, data_dir: Path) -> Path:
    """Create data_dir and fail with a message (not a PermissionError deep inside) if we cannot
    write there, e.g. a ./.data made by an earlier run as root."""
    data_dir = Path(data_dir).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(data_dir, os.W_OK | os.X_OK):
        raise EmbeddedError(
            f"cannot write to the embedded {kind} data dir {data_dir} "
            f"(owned by uid {data_dir.stat().st_uid}); chown it to yourself or remove it"
        )
    return data_dir


def _wait_port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        try:
            sock.connect((HOST, port))
        except OSError:
            return False
    return True


def _log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _open_log(path: Path) -> Any:
    """Append to the server log, keeping one rotated copy so it cannot grow without bound."""
    with contextlib.suppress(OSError):
        if path.stat().st_size > _LOG_ROTATE_BYTES:
            path.replace(path.with_suffix(path.suffix + ".1"))
    return path.open("ab")


def _libc_prctl() -> Callable[[int, int], int] | None:
    """Resolve prctl in the parent: the child between fork and exec must not import or dlopen."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def call(option: int, arg: int) -> int:
        return int(prctl(option, arg, 0, 0, 0))

    return call


_PR_SET_PDEATHSIG = 1


def _pdeathsig_preexec(sig: int) -> Callable[[], None] | None:
    """A preexec_fn that makes the child get `sig` when this thread dies (Linux only).

    Runs after subprocess has switched uid/gid (a credential change would clear the setting).
    Only from the main thread: the signal fires when the *thread* that forked exits, so a server
    started from a worker thread would die with that thread.
    """
    prctl = _libc_prctl()
    if prctl is None or threading.current_thread() is not threading.main_thread():
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sig)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return preexec


def _process_holding(directory: Path, names: Iterable[str]) -> list[psutil.Process]:
    """Live processes named like `names` whose working directory is `directory`.

    Both servers chdir into their data dir, and Postgres backends rewrite their cmdline, so the
    cwd is the one reliable way to find every process that still uses a data dir.
    """
    ps = _psutil()
    wanted = set(names)
    found: list[psutil.Process] = []
    for proc in ps.process_iter(["name"]):
        try:
            if proc.info["name"] not in wanted:
                continue
            if Path(proc.cwd()) == directory:
                found.append(proc)
        except (ps.NoSuchProcess, ps.AccessDenied, ps.ZombieProcess, OSError):
            continue
    return found


def _is_orphan(proc: psutil.Process) -> bool:
    """Has the process that started this server gone away (re-parented to init or a reaper)?"""
    ps = _psutil()
    try:
        ppid = proc.ppid()
        if ppid <= 1:
            return True
        return ps.Process(ppid).name() in _REAPERS
    except ps.NoSuchProcess:
        return True
    except ps.AccessDenied:
        return False


def _owner_description(proc: psutil.Process) -> str:
    ps = _psutil()
    try:
        parent = proc.parent()
        if parent is None:
            return "unknown"
        return f"pid {parent.pid} ({' '.join(parent.cmdline())[:120]})"
    except (ps.NoSuchProcess, ps.AccessDenied):
        return "unknown"


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until the processes have exited; return those still alive after `timeout`.

    A zombie counts as exited: these are not our children, and in containers whose init does not
    reap, psutil.wait_procs would wait for a zombie until the timeout.
    """
    ps = _psutil()
    deadline = time.monotonic() + timeout
    alive = list(procs)
    while True:
        still = []
        for proc in alive:
            try:
                if proc.status() != ps.STATUS_ZOMBIE:
                    still.append(proc)
            except ps.NoSuchProcess:
                pass
        alive = still
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.02)


def _terminate_and_wait(procs: list[psutil.Process], sig: int, timeout: float) -> None:
    ps = _psutil()
    for proc in procs:
        with contextlib.suppress(ps.NoSuchProcess):
            proc.send_signal(sig)
    for proc in _wait_gone(procs, timeout):
        with contextlib.suppress(ps.NoSuchProcess):
            proc.kill()
    _wait_gone(procs, 5)


def _child_env() -> dict[str, str]:
    """Environment for the servers: no PG* variables that could redirect them, C locale."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    env["LANG"] = "C"
    return env


def _spawn_until_ready(
    kind: str,
    chosen: int,
    may_retry: bool,
    *,
    argv: Callable[[int], list[str]],
    url: Callable[[int], str],
    ready: Callable[[int, int], bool],
    data_dir: Path,
    cwd: Path,
    log_file: Path,
    stop_signal: int,
    kill_signal: int,
    started: float,
    popen_kwargs: dict[str, Any],
    **log_fields: Any,
) -> EmbeddedServer:
    """Spawn ``argv(port)`` and wait until ``ready(port, pid)``; the server's output goes to
    log_file. When it dies on a bind error (the port was taken after we chose it) and the port
    was not asked for explicitly, try again (twice at most) on a random free port; otherwise
    raise EmbeddedError with the tail of its log."""
    name = {"postgres": "Postgres", "valkey": "Valkey"}[kind]
    for attempt in range(3):
        with _open_log(log_file) as out:
            offset = out.tell()
            proc = subprocess.Popen(
                argv(chosen),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_child_env(),
                cwd=str(cwd),
                start_new_session=True,
                preexec_fn=_pdeathsig_preexec(stop_signal),
                **popen_kwargs,
            )
        server = EmbeddedServer(
            url=url(chosen),
            data_dir=data_dir,
            kind=kind,
            port=chosen,
            pid=proc.pid,
            log_file=log_file,
            _process=proc,
            _stop_signal=stop_signal,
            _kill_signal=kill_signal,
        )
        deadline = time.monotonic() + _START_TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            if ready(chosen, proc.pid):
                log.info(
                    f"embedded_{kind}_started",
                    url=server.url,
                    data_dir=str(data_dir),
                    pid=proc.pid,
                    **log_fields,
                    seconds=round(time.monotonic() - started, 3),
                )
                return server
            time.sleep(0.02)
        output = _read_from(log_file, offset)
        server.stop()
        if may_retry and attempt < 2 and any(e in output.lower() for e in _BIND_ERRORS):
            new_port = _random_free_port()
            log.info(f"embedded_{kind}_port_busy", port=chosen, fallback=new_port)
            chosen = new_port
            continue
        raise EmbeddedError(f"{name} did not start, see {log_file}:\n{output[-3000:]}")
    raise AssertionError("unreachable")  # pragma: no cover


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace")
    except OSError:
        return ""
