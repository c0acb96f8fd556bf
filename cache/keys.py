"""Cache key construction.

Every key in Redis is built here so that key names stay tidy and predictable:
``{prefix}:{version}:{namespace}:{part}:...``. Bumping ``version`` orphans old entries (they
expire by TTL) instead of requiring a flush. Parts come from a small safe alphabet so that no
user-typed text can ever become (part of) a key: that rules out key injection, unbounded key
sizes and keys that are painful to inspect with redis-cli (and a part can never carry a ``{``).

**Redis Cluster.** Keys that one Lua script, MULTI or RENAME touches together must live in one
hash slot. A ``KeySpace(..., hash_tags=True)`` (what the bot builds for a ``redis-cluster://``
URL) wraps the parts after the namespace in a hash tag: ``horo:v1:user:{123}``,
``horo:v1:buf:{views}``. Every key the engine derives from such a key by a suffix (the load
lock ``…:{123}:lock``, its wake-up channel, a buffer's ``…:{views}:pending`` and
``…:{views}:batch:<id>``) hashes to the same slot, and the keys still start with the prefix, so
``SCAN MATCH horo:*`` finds them all. Without ``hash_tags`` (one server, Sentinel) the names are
exactly what they always were: nothing to migrate. ``related_key`` is the one rule for such a
suffix; on a cluster it also copes with a key that has no tag of its own (``{key}:suffix``).
"""

from __future__ import annotations

import datetime as _dt
import enum
import re
from dataclasses import dataclass

__all__ = ["MAX_KEY_BYTES", "KeySpace", "hash_tag", "make_key", "namespace_of", "related_key"]

#: Upper bound for a whole key. Redis allows 512 MB; we keep keys short so that memory and
#: network are spent on values, and so that a bug that stuffs data into keys fails loudly.
MAX_KEY_BYTES = 200

_SAFE = re.compile(r"[A-Za-z0-9._/-]+")


def _part(value: object) -> str:
    """Render one key part, or raise ValueError for anything outside the safe set.

    bool is rejected before int (bool is an int subclass and ``True`` as a key part is almost
    always a bug); datetime is rejected because its isoformat contains ``:``, the separator.
    """
    if type(value) is int:  # the hot cases first: ids, then plain strings
        return str(value)
    if type(value) is str:
        if _SAFE.fullmatch(value) is None:
            raise ValueError(f"unsafe key part: {value!r}")
        return value
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        raise ValueError(f"bool is not a valid key part: {value!r}")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, _dt.datetime):
        raise ValueError(f"datetime is not a valid key part (use a date): {value!r}")
    if isinstance(value, _dt.date):
        return value.isoformat()
    if isinstance(value, str):
        if _SAFE.fullmatch(value) is None:
            raise ValueError(f"unsafe key part: {value!r}")
        return value
    raise ValueError(f"unsupported key part type {type(value).__name__}: {value!r}")


def make_key(prefix: str, version: str, namespace: str, *parts: object) -> str:
    """Build ``{prefix}:{version}:{namespace}:{part}:...``; raise ValueError when unsafe."""
    rendered = [_part(prefix), _part(version), _part(namespace)]
    rendered.extend(_part(p) for p in parts)
    key = ":".join(rendered)
    if len(key.encode()) > MAX_KEY_BYTES:
        raise ValueError(f"key longer than {MAX_KEY_BYTES} bytes: {key[:60]!r}...")
    return key


def namespace_of(key: str) -> str:
    """Return the namespace (third segment) of a key built by make_key.

    Used for metric labels on every cache call, so it avoids ``split`` (no list allocation).
    A key that does not have three segments is labelled ``"?"`` rather than raising: metrics
    must never break a request.
    """
    i = key.find(":")
    j = key.find(":", i + 1) if i >= 0 else -1
    if j < 0:
        return "?"
    k = key.find(":", j + 1)
    return key[j + 1 :] if k < 0 else key[j + 1 : k]


def hash_tag(key: str) -> str | None:
    """The hash tag Redis Cluster hashes ``key`` by (its rule: the text between the first ``{``
    and the first ``}`` after it, when not empty), else None (the whole key is hashed)."""
    start = key.find("{")
    if start < 0:
        return None
    end = key.find("}", start + 1)
    if end <= start + 1:
        return None
    return key[start + 1 : end]


def related_key(key: str, suffix: str, *, cluster: bool) -> str:
    """A key that a script or transaction touches together with ``key``: ``key:suffix``.

    On a cluster it must hash to ``key``'s slot: a key with a hash tag keeps it (the suffix
    changes nothing), a key without one is wrapped whole (``{key}:suffix`` hashes exactly like
    ``key``). Off a cluster the name is always ``key:suffix`` (the historical names).
    """
    if not cluster or hash_tag(key) is not None:
        return f"{key}:{suffix}"
    return f"{{{key}}}:{suffix}"


@dataclass(frozen=True, slots=True)
class KeySpace:
    """A prefix + schema version, so callers only name the namespace and the parts.

    ``hash_tags``: wrap the parts in a Redis Cluster hash tag (``ns:{a:b}``), see the module
    docstring; off by default (one server or Sentinel: the names do not change).
    """

    prefix: str
    version: str = "v1"
    hash_tags: bool = False

    def __post_init__(self) -> None:
        _part(self.prefix)
        _part(self.version)

    def key(self, namespace: str, *parts: object) -> str:
        """Build a key in this key space (same validation and result as make_key).

        Several keys are built per update; the prefix and version were checked once, here."""
        if self.hash_tags and parts:
            rest = ":".join(map(_part, parts))
            key = f"{self.prefix}:{self.version}:{_part(namespace)}:{{{rest}}}"
        else:
            key = ":".join((self.prefix, self.version, _part(namespace), *map(_part, parts)))
        if len(key) > MAX_KEY_BYTES:  # parts are ASCII (checked above): chars == bytes
            raise ValueError(f"key longer than {MAX_KEY_BYTES} bytes: {key[:60]!r}...")
        return key
