from __future__ import annotations

import datetime as dt
import enum

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cache.keys import MAX_KEY_BYTES, KeySpace, make_key, namespace_of

SAFE = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/"


class Sign(enum.Enum):
    ARIES = "aries"


class Num(enum.IntEnum):
    ONE = 1


def test_make_key_layout() -> None:
    key = make_key("horo", "v1", "horoscope", dt.date(2026, 11, 21), Sign.ARIES, "ru")
    assert key == "horo:v1:horoscope:2026-11-21:aries:ru"
    assert make_key("horo", "v1", "user", 123456) == "horo:v1:user:123456"
    assert make_key("horo", "v1", "n", Num.ONE, -5) == "horo:v1:n:1:-5"
    assert make_key("horo", "v1", "fileid", 42, "cosmic/nebula-03.jpg").endswith(
        ":42:cosmic/nebula-03.jpg"
    )


def test_keyspace_and_namespace_of() -> None:
    ks = KeySpace("horo")
    key = ks.key("user", 7)
    assert key == "horo:v1:user:7"
    assert namespace_of(key) == "user"
    assert namespace_of("horo:v1:ns") == "ns"
    assert namespace_of("junk") == "?"
    assert KeySpace("p", "v2").key("x") == "p:v2:x"
    with pytest.raises(ValueError):
        KeySpace("bad prefix")
    with pytest.raises(AttributeError):
        ks.prefix = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    "part",
    [
        "",
        "a b",
        "a:b",
        "привет",
        "a\nb",
        "*",
        True,
        False,
        1.5,
        None,
        b"bytes",
        dt.datetime(2026, 1, 1, 12, 0),
        object(),
    ],
)
def test_forbidden_parts_raise(part: object) -> None:
    with pytest.raises(ValueError):
        make_key("p", "v1", "ns", part)


def test_forbidden_in_fixed_segments() -> None:
    with pytest.raises(ValueError):
        make_key("p:x", "v1", "ns")
    with pytest.raises(ValueError):
        make_key("p", "v1", "a b")


def test_length_limit() -> None:
    make_key("p", "v1", "ns", "a" * (MAX_KEY_BYTES - len("p:v1:ns:")))
    with pytest.raises(ValueError):
        make_key("p", "v1", "ns", "a" * (MAX_KEY_BYTES - len("p:v1:ns:") + 1))


@given(st.lists(st.text(alphabet=SAFE, min_size=1, max_size=20), max_size=6))
def test_safe_parts_round_trip(parts: list[str]) -> None:
    key = make_key("p", "v1", "ns", *parts)
    assert key.split(":")[3:] == parts
    assert namespace_of(key) == "ns"


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_int_parts_round_trip(n: int) -> None:
    assert make_key("p", "v1", "ns", n).split(":")[3] == str(n)


@given(
    st.text(alphabet=SAFE, max_size=10),
    st.characters(blacklist_characters=SAFE),
    st.text(alphabet=SAFE, max_size=10),
)
def test_any_forbidden_char_raises(before: str, bad: str, after: str) -> None:
    with pytest.raises(ValueError):
        make_key("p", "v1", "ns", before + bad + after)


_ANY_PART = st.one_of(
    st.text(max_size=12),
    st.text(alphabet=SAFE, min_size=1, max_size=80),
    st.integers(),
    st.booleans(),
    st.dates(),
    st.sampled_from([Sign.ARIES, Num.ONE]),
    st.none(),
    st.floats(allow_nan=False),
)


@given(st.text(alphabet=SAFE, min_size=1, max_size=8), st.lists(_ANY_PART, max_size=4))
def test_keyspace_key_agrees_with_make_key(namespace: str, parts: list[object]) -> None:
    """KeySpace.key (the hot path, prefix checked once) builds or refuses exactly like make_key."""
    try:
        expected: str | type[ValueError] = make_key("p", "v1", namespace, *parts)
    except ValueError:
        expected = ValueError
    if expected is ValueError:
        with pytest.raises(ValueError):
            KeySpace("p", "v1").key(namespace, *parts)
    else:
        assert KeySpace("p", "v1").key(namespace, *parts) == expected
