from __future__ import annotations

import msgspec
import pytest

from cache.codec import Codec, CodecError


class User(msgspec.Struct):
    id: int
    name: str
    sign: str | None = None


def test_round_trips() -> None:
    assert Codec(int).decode(Codec(int).encode(5)) == 5
    assert Codec(list[str]).decode(Codec(list[str]).encode(["a", "b"])) == ["a", "b"]
    user = User(1, "Ann", "aries")
    assert Codec(User).decode(Codec(User).encode(user)) == user
    opt: Codec[int | None] = Codec(int | None)
    assert opt.decode(opt.encode(None)) is None


def test_bad_data_raises_codec_error() -> None:
    with pytest.raises(CodecError):
        Codec(int).decode(b"\xc1garbage")
    with pytest.raises(CodecError):
        Codec(User).decode(Codec(str).encode("not a user"))
    with pytest.raises(CodecError):
        Codec(int).decode(Codec(str).encode("5"))  # validated, not coerced


def test_not_pickle() -> None:
    import pickle

    with pytest.raises(CodecError):
        Codec(int).decode(pickle.dumps(5))
    with pytest.raises(CodecError):
        Codec(int).encode(object())  # type: ignore[arg-type]
