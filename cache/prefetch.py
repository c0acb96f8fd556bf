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

from cache.aside import CacheAside, SideCommand
from cache.codec import Codec, CodecError
from cache.envelope import NOT_FOUND, open_envelope
from cache.keys import namespace_of

__all__ = ["Prefetch", "Reads", "mget"]


#: What a prefetch reads: (key, codec) pairs, as a ``Load`` names them.
Reads = Sequence[tuple[str, Codec[Any]]]


class Prefetch:
    """The MGET of ``reads`` (key, codec) as a side command (``command``) and its reply, once
    it came. ``reads`` may be shared between prefetches (a caller keeps them per key set)."""

    __slots__ = ("_cache", "_reads", "_reply", "command")

    def __init__(self, cache: CacheAside, reads: Reads, command: tuple[Any, ...] | None = None):
        """``command``: the MGET itself when the caller keeps it too (built from ``reads``
        otherwise)."""
        if not reads:
            raise ValueError("nothing to prefetch")
        self._cache = cache
        self._reads = reads
        self._reply: list[Any] | None = None
        if command is None:
            command = mget(reads)
        self.command = SideCommand(command, on_result=self._got)

    def _got(self, reply: Any) -> None:
        if isinstance(reply, list) and len(reply) == len(self._reads):
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
        for (_, codec), data in zip(self._reads, reply, strict=True):
            if data is None:
                return None
            try:
                value = open_envelope(data, codec)
            except CodecError:
                return None
            out.append(None if value is NOT_FOUND else value)
        metrics = self._cache.metrics
        for (key, _), value in zip(self._reads, out, strict=True):
            metrics.event(namespace_of(key), "hit" if value is not None else "negative_hit")
        return out


def mget(reads: Reads) -> tuple[Any, ...]:
    """The MGET command of ``reads``."""
    return ("MGET", *(key for key, _ in reads))
