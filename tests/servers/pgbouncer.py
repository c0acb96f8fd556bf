"""PgBouncer on loopback in front of a Postgres server, transaction pooling by default.

Auth is ``trust`` on both sides (the machine's Postgres and the embedded one trust local
connections), so PgBouncer only needs the user names in its auth file. Every database name is
forwarded (``* = host=... port=...``), so the run's own temporary database is reachable through
it: ``PgBouncer.url_for(database_url)`` turns a direct URL into one through the bouncer.

``default_pool_size`` is small on purpose (3): several client connections must share one server
connection for the transaction-pooling hazards (a prepared statement created on one server
connection and used on another) to show up at all. ``show()`` reads PgBouncer's
console (``SHOW POOLS``, ``SHOW STATS``, ``SHOW SERVERS``) to assert on what it did.

PgBouncer refuses to run as root; when we are root it is started with ``-u nobody`` and its
directory made readable for that user.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from tests.servers.process import (
    HOST,
    ServerProcess,
    free_ports,
    make_world_readable,
    port_open,
    start_with_port_retry,
    unprivileged_user,
    with_address,
)


@dataclass
class PgBouncer:
    """A running PgBouncer: ``port``, the ``pool_mode``, and helpers to reach it."""

    port: int
    pool_mode: str
    user: str
    workdir: Path
    process: ServerProcess

    def url_for(self, database_url: str) -> str:
        """``database_url`` (any driver, same credentials) redirected through this bouncer."""
        return with_address(database_url, self.port)

    def show(self, what: str) -> list[dict[str, str | None]]:
        """``SHOW <what>`` on the admin console (POOLS, STATS, SERVERS, CLIENTS...) as dicts of
        text values; synchronous (a local round trip)."""
        return simple_query(HOST, self.port, self.user, "pgbouncer", f"SHOW {what}")

    def stop(self) -> None:
        self.process.stop()

    def kill(self) -> None:
        self.process.kill()


def simple_query(
    host: str, port: int, user: str, database: str, sql: str, *, timeout: float = 5.0
) -> list[dict[str, str | None]]:
    """One query over the PostgreSQL simple-query protocol, trust auth, rows as text.

    PgBouncer's admin console speaks only the simple protocol, which asyncpg never uses (it
    always prepares), hence these few lines of wire protocol instead of a driver.
    """

    def message(kind: bytes, body: bytes) -> bytes:
        return kind + struct.pack("!I", len(body) + 4) + body

    startup_body = struct.pack("!I", 196608)  # protocol 3.0
    startup_body += b"user\0" + user.encode() + b"\0database\0" + database.encode() + b"\0\0"
    rows: list[dict[str, str | None]] = []
    columns: list[str] = []
    with socket.create_connection((host, port), timeout=timeout) as sock:
        stream = sock.makefile("rb")
        sock.sendall(struct.pack("!I", len(startup_body) + 4) + startup_body)
        query_sent = False
        while True:
            header = stream.read(5)
            if len(header) < 5:
                raise ConnectionError("connection closed by the server")
            kind, length = header[:1], struct.unpack("!I", header[1:])[0]
            body = stream.read(length - 4)
            if kind == b"E":
                fields = dict(
                    (part[:1].decode(), part[1:].decode(errors="replace"))
                    for part in body.split(b"\0")
                    if part
                )
                raise RuntimeError(f"{sql}: {fields.get('M') or body!r}")
            if kind == b"R" and struct.unpack("!I", body[:4])[0] != 0:
                raise RuntimeError("the server asks for a password: only trust auth is supported")
            if kind == b"Z":  # ReadyForQuery
                if query_sent:
                    return rows
                sock.sendall(message(b"Q", sql.encode() + b"\0"))
                query_sent = True
            elif kind == b"T":  # RowDescription
                count = struct.unpack("!H", body[:2])[0]
                offset, columns = 2, []
                for _ in range(count):
                    end = body.index(b"\0", offset)
                    columns.append(body[offset:end].decode())
                    offset = end + 1 + 18
            elif kind == b"D":  # DataRow
                count = struct.unpack("!H", body[:2])[0]
                offset = 2
                values: list[str | None] = []
                for _ in range(count):
                    size = struct.unpack("!i", body[offset : offset + 4])[0]
                    offset += 4
                    if size < 0:
                        values.append(None)
                    else:
                        values.append(body[offset : offset + size].decode(errors="replace"))
                        offset += size
                rows.append(dict(zip(columns, values, strict=False)))


def _ini(
    *,
    port: int,
    upstream_host: str,
    upstream_port: int,
    workdir: Path,
    pool_mode: str,
    default_pool_size: int,
    max_client_conn: int,
    user: str,
    extra: dict[str, str],
) -> str:
    settings = {
        "listen_addr": HOST,
        "listen_port": str(port),
        "unix_socket_dir": "",
        "auth_type": "trust",
        "auth_file": str(workdir / "userlist.txt"),
        "admin_users": user,
        "stats_users": user,
        "pool_mode": pool_mode,
        "default_pool_size": str(default_pool_size),
        "max_client_conn": str(max_client_conn),
        "ignore_startup_parameters": "extra_float_digits",
        "server_check_delay": "0",
        "logfile": "",
        "log_connections": "0",
        "log_disconnections": "0",
        **extra,
    }
    lines = [
        "[databases]",
        f"* = host={upstream_host} port={upstream_port}",
        "[pgbouncer]",
        *(f"{key} = {value}" for key, value in settings.items()),
        "",
    ]
    return "\n".join(lines)


def start_pgbouncer(
    binary: str,
    workdir: Path,
    *,
    upstream_host: str,
    upstream_port: int,
    user: str = "postgres",
    password: str | None = None,
    pool_mode: str = "transaction",
    default_pool_size: int = 3,
    max_client_conn: int = 200,
    extra_settings: dict[str, str] | None = None,
) -> PgBouncer:
    """Start PgBouncer on a free port forwarding every database to upstream_host:port.

    ``user`` is the role the clients log in as (put in the auth file; PgBouncer logs in to
    Postgres with the same name and ``password``, if the server wants one).
    ``extra_settings`` go into the [pgbouncer] section as-is.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "userlist.txt").write_text(f'"{user}" "{password or ""}"\n')
    run_as = unprivileged_user()

    def attempt() -> PgBouncer:
        (port,) = free_ports(1)
        ini = workdir / "pgbouncer.ini"
        ini.write_text(
            _ini(
                port=port,
                upstream_host=upstream_host,
                upstream_port=upstream_port,
                workdir=workdir,
                pool_mode=pool_mode,
                default_pool_size=default_pool_size,
                max_client_conn=max_client_conn,
                user=user,
                extra=extra_settings or {},
            )
        )
        argv = [binary]
        if run_as is not None:
            make_world_readable(workdir)
            argv += ["-u", "nobody"]
        argv.append(str(ini))
        process = ServerProcess(
            argv, name="pgbouncer", log_file=workdir / "pgbouncer.log", cwd=workdir
        )
        process.spawn()
        process.wait_ready(lambda: port_open(port))
        return PgBouncer(port, pool_mode, user, workdir, process)

    return start_with_port_retry(attempt)


def stop_quietly(bouncer: PgBouncer | None) -> None:
    if bouncer is not None:
        with contextlib.suppress(Exception):
            bouncer.stop()
