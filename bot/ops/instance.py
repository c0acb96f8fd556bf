"""Who this process is, for the Redis and Postgres records several instances share.

The daily push's claims (``users.push_claimed_by``), a webhook update's in-progress lease and
the push's rate-limit bookkeeping name the instance that holds them, so a log line or a row
can be traced back to a process, and a process can tell its own records from another's.
Host name + pid + a random suffix: a restarted process (same host, maybe the same pid in a
container) is a different instance, because it does not hold what its predecessor held.
"""

from __future__ import annotations

import functools
import os
import secrets
import socket

__all__ = ["instance_id"]


@functools.cache
def instance_id() -> str:
    """``host:pid:random``, at most 64 characters (the column's width); fixed per process."""
    host = socket.gethostname().split(".")[0][:40] or "host"
    return f"{host}:{os.getpid()}:{secrets.token_hex(3)}"
