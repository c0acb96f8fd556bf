"""Cache key construction.

Every key in Redis is built here so that key names stay tidy and predictable:
``{prefix}:{version}:{namespace}:{part}:...``. Bumping ``version`` orphans old entries (they
expire by TTL) instead of requiring a flush. Parts come from a small safe alphabet so that no
user-typed text can ever become (part of) a key: that rules out key injection, unbounded key
sizes and keys that are painful to inspect with redis-cli.
"""

from __future__ import annotations

import datetime as _dt
import enum
import re
from dataclasses import dataclass

__all__ = ["MAX_KEY_BYTES", "KeySpace", "make_key", "namespace_of"]

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


@dataclass(frozen=True, slots=True)
class KeySpace:
    """A prefix + schema version, so callers only name the namespace and the parts."""

    prefix: str
    version: str = "v1"

    def __post_init__(self) -> None:
        _part(self.prefix)
        _part(self.version)

    def key(self, namespace: str, *parts: object) -> str:
        """Build a key in this key space (same validation and result as make_key).

        Several keys are built per update; the prefix and version were checked once, here."""
        key = ":".join((self.prefix, self.version, _part(namespace), *map(_part, parts)))
        if len(key) > MAX_KEY_BYTES:  # parts are ASCII (checked above): chars == bytes
            raise ValueError(f"key longer than {MAX_KEY_BYTES} bytes: {key[:60]!r}...")
        return key
