"""Reads that ride another read's round trip: an MGET sent as a side command, opened later.

``load_many`` costs a round trip of its own. When a caller can guess, before a first read,
which keys it will read next (the bot knows a person's sign before it has read the person),
the MGET of those keys can travel in the first read's pipeline as a ``SideCommand``; its reply
is kept here and opened when the caller knows whether the guess was right.

``values()`` gives the decoded values only when every key was a readable hit (NOT_FOUND is
None, as ``load_many`` returns it), and counts those hits. Anything else (a miss, a value that
is not an envelope, no reply because Redis was unavailable) gives None and counts nothing: the
caller then reads the ordinary way (``load_many``), which counts, deletes and loads as always.
A guess that turned out wrong is simply never opened.

Additive: nothing else in the engine depends on this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cache.aside import CacheAside, Load, SideCommand
from cache.codec import CodecError
from cache.envelope import NOT_FOUND, open_envelope
from cache.keys import namespace_of

__all__ = ["Prefetch"]


class Prefetch:
    """The MGET of ``loads`` as a side command (``command``) and its reply, once it came."""

    __slots__ = ("_cache", "_loads", "_reply", "command")

    def __init__(self, cache: CacheAside, loads: Sequence[Load[Any]]) -> None:
        if not loads:
            raise ValueError("nothing to prefetch")
        self._cache = cache
        self._loads = tuple(loads)
        self._reply: list[Any] | None = None
        self.command = SideCommand(("MGET", *(ld.key for ld in loads)), on_result=self._got)

    def _got(self, reply: Any) -> None:
        if isinstance(reply, list) and len(reply) == len(self._loads):
            self._reply = reply

    @property
    def answered(self) -> bool:
        """Whether the MGET's reply arrived (it ran in the other read's pipeline)."""
        return self._reply is not None

    def values(self) -> list[Any] | None:
        """The values when all were readable hits (counted as hits); None otherwise."""
        reply = self._reply
        if reply is None:
            return None
        out: list[Any] = []
        for ld, data in zip(self._loads, reply, strict=True):
            if data is None:
                return None
            try:
                value = open_envelope(data, ld.codec)
            except CodecError:
                return None
            out.append(None if value is NOT_FOUND else value)
        metrics = self._cache.metrics
        for ld, value in zip(self._loads, out, strict=True):
            metrics.event(namespace_of(ld.key), "hit" if value is not None else "negative_hit")
        return out
