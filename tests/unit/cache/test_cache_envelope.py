"""The stored envelope (cache/envelope.py): self-identifying, strict, one decoder."""

from __future__ import annotations

import struct
import time

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cache import NOT_FOUND, Codec, CodecError
from cache.envelope import HEADER_SIZE, open_envelope, seal, stamp

INT = Codec(int)
NONE_OR_INT: Codec[int | None] = Codec(int | None)


def test_value_and_not_found_round_trip_with_their_header() -> None:
    before = int(time.time() * 1000)
    data = seal(60_000, 1234, INT.encode(7))
    assert open_envelope(data, INT) == 7
    expiry, delta = stamp(data)
    assert before + 60_000 <= expiry <= int(time.time() * 1000) + 60_000 and delta == 1234
    marker = seal(30_000, 5, None)
    assert len(marker) == HEADER_SIZE
    assert open_envelope(marker, INT) is NOT_FOUND
    assert open_envelope(seal(1, 0, NONE_OR_INT.encode(None)), NONE_OR_INT) is None  # a value


def test_load_time_is_capped_not_overflowing() -> None:
    assert stamp(seal(1, 10**12, None))[1] == 0xFFFFFFFF


@pytest.mark.parametrize(
    "data",
    [
        b"Nonsense written by hand",  # used to be read as NOT_FOUND (kind byte "N", >= 13 bytes)
        b"N" + bytes(12),  # the first format's exact not-found marker
        struct.pack("!BQI", 0x56, 2**40, 0) + INT.encode(1),  # the first format's value
        msgspec.msgpack.encode(1),  # a bare codec value
        b"",
        b"\xc1",
        b"\xc1\x01",
        seal(1, 0, None)[:-1],  # a truncated marker
        seal(1, 0, None) + b"\x00",  # a marker with something after it
        seal(1, 0, None)[:2] + b"X" + seal(1, 0, None)[3:],  # an unknown kind
        seal(1, 0, b""),  # a value without payload (never written: msgpack is never empty)
        b"\xc1\x02" + seal(1, 0, INT.encode(1))[2:],  # another format version
    ],
)
def test_anything_else_is_undecodable(data: bytes) -> None:
    with pytest.raises(CodecError):
        open_envelope(data, INT)


def test_a_wrong_shape_inside_a_valid_envelope_is_undecodable() -> None:
    with pytest.raises(CodecError):
        open_envelope(seal(1, 0, Codec(str).encode("text")), INT)


@given(st.binary(max_size=64).filter(lambda b: not b.startswith(b"\xc1\x01")))
def test_no_bytes_without_the_magic_ever_decode(data: bytes) -> None:
    with pytest.raises(CodecError):
        open_envelope(data, NONE_OR_INT)


@given(st.text(max_size=64))
def test_text_can_never_pass_for_an_envelope(text: str) -> None:
    """0xC1 never occurs in UTF-8: whatever text lands under a key is not ours."""
    with pytest.raises(CodecError):
        open_envelope(text.encode(), NONE_OR_INT)
