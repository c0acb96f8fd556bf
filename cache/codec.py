"""Typed binary codecs for cached values.

msgspec's msgpack is compact and fast and, unlike pickle, decoding cannot execute code: a
value in Redis is data, never a program. Decoding validates against the declared type, so a
value written by an older schema (or garbage) becomes a CodecError, which the engine turns into
a miss (counted, deleted, reloaded) instead of handing a wrong-shaped object to the caller.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import msgspec

__all__ = ["Codec", "CodecError"]

T = TypeVar("T")


class CodecError(ValueError):
    """Raised when bytes cannot be decoded into the codec's type."""


class Codec(Generic[T]):
    """Encode/decode one type with msgpack, e.g. ``Codec(MyStruct)``, ``Codec(list[str])``."""

    __slots__ = ("_decoder", "_encoder", "type")

    def __init__(self, type_: Any) -> None:
        # ``type_`` is Any because typing special forms (list[str], int | None) are not ``type``.
        self.type = type_
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder: msgspec.msgpack.Decoder[T] = msgspec.msgpack.Decoder(type_)

    def encode(self, value: T) -> bytes:
        """Serialize ``value``; raises CodecError when it does not fit msgpack."""
        try:
            return self._encoder.encode(value)
        except (TypeError, msgspec.EncodeError) as exc:
            raise CodecError(str(exc)) from exc

    def decode(self, data: bytes | memoryview) -> T:
        """Deserialize and validate; any malformed or wrong-typed input raises CodecError."""
        try:
            return self._decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise CodecError(str(exc)) from exc

    def __repr__(self) -> str:
        return f"Codec({self.type!r})"
