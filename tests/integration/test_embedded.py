"""devtools.embedded: real embedded Postgres and Valkey in a temporary directory.

What `make run` relies on: data survives a stop/start and a kill -9 of the servers, a killed run
leaves no server behind (or one that the next start stops), stale pid files and busy ports are
recovered with a log line, and a throwaway stack removes its data. Ports are random
(default_port=None) so the tests never take a developer's 54329 / 63799.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import pytest
import redis
from structlog.testing import capture_logs

from devtools import embedded
from devtools.embedded import (
    EmbeddedError,
    EmbeddedServer,
    EmbeddedStack,
    start_postgres,
    start_valkey,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

ROOT = Path(__file__).resolve().parents[2]


def _dsn(server: EmbeddedServer) -> str:
    return server.url.replace("postgresql+asyncpg://", "postgresql://")


def _gone(pid: int, timeout: float = 10.0) -> bool:
    """True once pid has exited (a zombie left for a non-reaping init counts as exited)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _servers_using(directory: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name"]):
        try:
            if proc.info["name"] in {"postgres", "valkey-server"} and Path(
                proc.cwd()
            ).is_relative_to(directory):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _events(logs: list[dict[str, Any]]) -> set[str]:
    return {str(entry["event"]) for entry in logs}


@pytest.fixture
def base(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    for proc in _servers_using(tmp_path):  # never leave a server behind, even on failure
        proc.kill()


async def test_persist_restart_and_crash_recovery(base: Path) -> None:
    pg_dir, vk_dir = base / "postgres", base / "valkey"

    with capture_logs() as first_start:
        pg = start_postgres(pg_dir, default_port=None)
    assert "embedded_postgres_initdb" in _events(first_start)
    vk = start_valkey(vk_dir, default_port=None)
    try:
        conn = await asyncpg.connect(_dsn(pg))
        assert await conn.fetchval("SELECT 1") == 1
        await conn.execute("CREATE TABLE t (v text)")
        await conn.execute("INSERT INTO t VALUES ('one')")
        await conn.close()
        client = redis.Redis.from_url(vk.url)
        client.set("k1", "v1")
        client.close()
    finally:
        vk.stop()
        pg.stop()
    pg.stop()  # idempotent
    assert pg.pid is not None and vk.pid is not None
    assert _gone(pg.pid) and _gone(vk.pid)
    assert _servers_using(base) == []

    # Second start: no initdb (the log says so, not a stopwatch), the data is found again.
    with capture_logs() as second_start:
        pg = start_postgres(pg_dir, default_port=None)
    assert "embedded_postgres_initdb" not in _events(second_start)
    vk = start_valkey(vk_dir, default_port=None)
    conn = await asyncpg.connect(_dsn(pg))
    assert await conn.fetchval("SELECT v FROM t") == "one"
    await conn.execute("INSERT INTO t VALUES ('two')")  # committed: must survive kill -9
    await conn.close()
    client = redis.Redis.from_url(vk.url)
    assert client.get("k1") == b"v1"
    client.set("k2", "v2")
    # appendfsync everysec: wait until the write is fsynced to the local AOF before the crash.
    assert client.execute_command("WAITAOF", 1, 0, 2000)[0] == 1
    client.close()

    # Crash both servers; their pid files stay behind.
    assert pg.pid is not None and vk.pid is not None
    os.kill(pg.pid, signal.SIGKILL)
    os.kill(vk.pid, signal.SIGKILL)
    pg.stop()  # reaps the killed processes
    vk.stop()
    assert (pg_dir / "pgdata" / "postmaster.pid").exists()
    assert (vk_dir / "valkey.pid").exists()

    with capture_logs() as logs:
        pg = start_postgres(pg_dir, default_port=None)
        vk = start_valkey(vk_dir, default_port=None)
    try:
        assert {
            "embedded_postgres_stale_pid_recovered",
            "embedded_valkey_stale_pid_recovered",
        } <= _events(logs)
        conn = await asyncpg.connect(_dsn(pg))
        assert sorted(await conn.fetch("SELECT v FROM t")) == [("one",), ("two",)]
        await conn.close()
        client = redis.Redis.from_url(vk.url)
        assert client.mget("k1", "k2") == [b"v1", b"v2"]
        client.close()
    finally:
        vk.stop()
        pg.stop()
    assert _servers_using(base) == []


_CHILD = """
import json, sys, threading, time
from pathlib import Path
from devtools.embedded import start_postgres, start_valkey

def start():
    base = Path(sys.argv[1])
    pg = start_postgres(base / "postgres", default_port=None)
    vk = start_valkey(base / "valkey", default_port=None)
    print("PIDS " + json.dumps({"pg": pg.pid, "vk": vk.pid}), flush=True)

if sys.argv[2] == "thread":  # no parent-death signal from a worker thread: servers get orphaned
    worker = threading.Thread(target=start)
    worker.start()
    worker.join()
else:
    start()
time.sleep(600)
"""


def _run_child_and_kill(base: Path, mode: str) -> dict[str, int]:
    """Start the servers in a child python, then SIGKILL that child (no atexit, no cleanup)."""
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(base), mode],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert child.stdout is not None
        for line in child.stdout:  # structlog's default output goes to stdout too
            if line.startswith("PIDS "):
                break
        pids: dict[str, int] = json.loads(line.removeprefix("PIDS "))
    finally:
        child.kill()
        child.wait()
    return pids


def test_killed_parent_leaves_no_server(base: Path) -> None:
    pids = _run_child_and_kill(base, "main")
    # Linux parent-death signal: postgres gets SIGINT (fast shutdown), valkey SIGTERM (save).
    assert _gone(pids["pg"]) and _gone(pids["vk"])
    assert not (base / "postgres" / "pgdata" / "postmaster.pid").exists()
    pg = start_postgres(base / "postgres", default_port=None)
    pg.stop()


def test_orphaned_servers_are_stopped_at_next_start(base: Path) -> None:
    pids = _run_child_and_kill(base, "thread")
    assert psutil.pid_exists(pids["pg"]) and psutil.pid_exists(pids["vk"])  # orphans, alive

    with capture_logs() as logs:
        pg = start_postgres(base / "postgres", default_port=None)
        vk = start_valkey(base / "valkey", default_port=None)
    try:
        assert {"embedded_postgres_orphan_stopped", "embedded_valkey_orphan_stopped"} <= _events(
            logs
        )
        assert _gone(pids["pg"], 0) and _gone(pids["vk"], 0)
        client = redis.Redis.from_url(vk.url)
        assert client.ping()
        client.close()
    finally:
        vk.stop()
        pg.stop()


def test_data_dir_of_a_live_run_is_refused(base: Path) -> None:
    vk = start_valkey(base / "valkey", default_port=None)
    try:
        with pytest.raises(EmbeddedError, match="in use by a running server"):
            start_valkey(base / "valkey", default_port=None)
        assert vk.running
    finally:
        vk.stop()


def test_busy_default_port_falls_back(base: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        with capture_logs() as logs:
            vk = start_valkey(base / "valkey", default_port=busy, persist=False)
        try:
            assert vk.port != busy
            assert any(
                e["event"] == "embedded_valkey_port_busy" and e["port"] == busy for e in logs
            )
        finally:
            vk.stop()


async def test_throwaway_stack_cleans_up(tmp_path: Path) -> None:
    base = tmp_path / "stack"
    with EmbeddedStack(base, need_postgres=True, need_redis=True, persist=False) as stack:
        assert stack.postgres_url is not None and stack.redis_url is not None
        assert stack.postgres_url.startswith("postgresql+asyncpg://postgres@127.0.0.1:")
        assert stack.redis_url.startswith("redis://127.0.0.1:")
        conn = await asyncpg.connect(stack.postgres_url.replace("+asyncpg", ""))
        assert await conn.fetchval("SELECT 1") == 1
        await conn.close()
        client = redis.Redis.from_url(stack.redis_url)
        assert client.set("k", "v") and client.get("k") == b"v"
        client.close()
        assert stack.postgres is not None and stack.valkey is not None
        pids = [stack.postgres.pid, stack.valkey.pid]
    assert all(pid is not None and _gone(pid, 0) for pid in pids)
    assert not base.exists()


def test_stack_stops_what_started_when_a_start_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object, **_kwargs: object) -> EmbeddedServer:
        raise EmbeddedError("postgres exploded")

    monkeypatch.setattr(embedded, "start_postgres", broken)
    stack = EmbeddedStack(tmp_path / "stack", need_postgres=True, need_redis=True, persist=False)
    with pytest.raises(EmbeddedError, match="exploded"):
        stack.__enter__()
    assert stack.valkey is not None and stack.valkey.pid is not None
    assert _gone(stack.valkey.pid, 0)
    assert not (tmp_path / "stack").exists()
