"""The envelope every cached value is stored in, and the one function that opens it.

Why an envelope: negative caching and early refresh must work from the GET reply alone (no
PTTL, no second key), so each value carries its kind, its hard expiry and how long it took to
load. Why a *self-identifying* one: Redis is shared ground. A value written by hand, by an
older schema or by another program must be recognised as "not ours" (a decode error: counted,
deleted, reloaded), never mistaken for a marker. The first format used a bare kind byte, so
any value of 13 bytes or more that started with ``N`` read as "not found", for good.

Layout (15-byte header, then the payload)::

    0xC1 0x01 | kind (1) | hard expiry, unix ms (8) | load time, ms (4) | payload

* ``0xC1`` is the one byte that starts neither UTF-8 text (it is never valid there) nor a
  msgpack value (the format leaves it unused), so text, JSON or a bare msgpack value written
  under our key can never pass for an envelope; ``0x01`` is the format version.
* kind ``V``: a value; the payload is the codec's encoding and is never empty (msgpack encodes
  everything, ``None`` included, in at least one byte).
* kind ``N``: "the loader found nothing"; exactly the header, nothing after it.

Anything else is undecodable: ``open_envelope`` raises CodecError, and so does the codec for
a payload of the wrong shape.
"""

from __future__ import annotations

import struct
import time
from typing import Final, TypeVar

from cache.codec import Codec, CodecError

__all__ = ["HEADER_SIZE", "NOT_FOUND", "NotFound", "open_envelope", "seal", "stamp"]

T = TypeVar("T")

_MAGIC: Final = b"\xc1\x01"
_HDR: Final = struct.Struct("!2sBQI")
HEADER_SIZE: Final = _HDR.size
_KIND_VALUE: Final = 0x56  # "V"
_KIND_NOT_FOUND: Final = 0x4E  # "N"
_MAX_DELTA_MS: Final = 0xFFFFFFFF


class NotFound:
    """Marker for "the loader found nothing" (distinct from a stored None and from errors)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NOT_FOUND"

    def __bool__(self) -> bool:
        return False


NOT_FOUND: Final = NotFound()


def seal(px: int, delta_ms: int, payload: bytes | None) -> bytes:
    """The envelope of ``payload`` (None: the not-found marker) expiring in ``px`` ms."""
    expiry = int(time.time() * 1000) + px
    delta = min(delta_ms, _MAX_DELTA_MS)
    if payload is None:
        return _HDR.pack(_MAGIC, _KIND_NOT_FOUND, expiry, delta)
    return _HDR.pack(_MAGIC, _KIND_VALUE, expiry, delta) + payload


def open_envelope(data: bytes, codec: Codec[T]) -> T | NotFound:
    """The value (or NOT_FOUND) in ``data``; CodecError for anything that is not ours.

    The hot path of every cache hit: a prefix compare, one length check, one decode.
    """
    if data.startswith(_MAGIC):
        size = len(data)
        kind = data[2] if size >= HEADER_SIZE else -1
        if kind == _KIND_VALUE and size > HEADER_SIZE:
            return codec.decode(memoryview(data)[HEADER_SIZE:])
        if kind == _KIND_NOT_FOUND and size == HEADER_SIZE:
            return NOT_FOUND
    raise CodecError(f"not a cache envelope ({len(data)} bytes, starting {bytes(data[:4])!r})")


def stamp(data: bytes) -> tuple[int, int]:
    """(hard expiry ms, load time ms) of an envelope ``open_envelope`` accepted."""
    _, _, expiry, delta = _HDR.unpack_from(data)
    return expiry, delta
