"""Pure parts of the repositories: key names, TTLs, codecs, validation (no servers)."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cache import CacheAside, Codec, KeySpace
from cache.buffers import new_batch_id
from db.repositories import (
    DataContext,
    FileRef,
    HoroscopeData,
    HoroscopeRepository,
    HoroscopeViewRepository,
    ImageAssetRepository,
    UserData,
    UserRepository,
    validate_timezone,
)
from db.repositories.horoscopes import FALLBACK_TTL, MIN_TTL
from db.repositories.users import LAST_SEEN, _profile, _profile_changed
from db.repositories.views import VIEWS, _field
from db.types import Lang, Sign
from tests.helpers import FakeGenerator, TgUser

TZ = ZoneInfo("Europe/Moscow")


@pytest.fixture
def ctx() -> DataContext:
    return DataContext(CacheAside(None), KeySpace("horo"), None, TZ)  # type: ignore[arg-type]


def test_key_names(ctx: DataContext) -> None:
    none: Any = None
    assert UserRepository(none, ctx).key(123456) == "horo:v1:user:123456"
    assert UserRepository(none, ctx).last_seen_key == "horo:v1:buf:lastseen"
    assert (
        ImageAssetRepository(none, ctx).key(42, "cosmic/cosmic-03.jpg")
        == "horo:v1:fileid:42:cosmic/cosmic-03.jpg"
    )
    repo = HoroscopeRepository(ctx, FakeGenerator())
    assert repo.key(Sign.ARIES, dt.date(2026, 11, 21), Lang.RU) == (
        "horo:v1:horoscope:2026-11-21:aries:ru"
    )
    assert HoroscopeViewRepository(ctx).buffer_key == "horo:v1:buf:views"
    with pytest.raises(ValueError):
        ImageAssetRepository(none, ctx).key(42, "bad key with spaces.jpg")


def test_horoscope_ttl(ctx: DataContext) -> None:
    repo = HoroscopeRepository(ctx, FakeGenerator())
    today = ctx.today()
    value = HoroscopeData(sign=Sign.LEO, date=today, lang=Lang.RU, text="x", generator="t")
    end = dt.datetime.combine(today + dt.timedelta(days=2), dt.time(), TZ)
    expected = (end - dt.datetime.now(dt.UTC)).total_seconds()
    assert abs(repo.ttl(value) - expected) < 5
    assert 86_400 <= repo.ttl(value) <= 2 * 86_400 + 60
    old = HoroscopeData(
        sign=Sign.LEO, date=dt.date(2020, 1, 1), lang=Lang.RU, text="x", generator="t"
    )
    assert repo.ttl(old) == MIN_TTL
    fallback = HoroscopeData(
        sign=Sign.LEO, date=today, lang=Lang.RU, text="x", generator="t", is_fallback=True
    )
    assert repo.ttl(fallback) == FALLBACK_TTL


def test_today_is_computed_in_the_bots_zone(ctx: DataContext) -> None:
    # 22:30 UTC on the 21st is already the 22nd in Moscow
    assert ctx.today(dt.datetime(2026, 11, 21, 22, 30, tzinfo=dt.UTC)) == dt.date(2026, 11, 22)


@pytest.mark.parametrize("name", ["Europe/Moscow", "Asia/Tokyo", "UTC", "America/New_York"])
def test_valid_zones(name: str) -> None:
    assert validate_timezone(name) == name


@pytest.mark.parametrize("name", ["", "Mars/Olympus", "../../etc/passwd", "posix/UTC", "utc "])
def test_invalid_zones(name: str) -> None:
    with pytest.raises(ValueError):
        validate_timezone(name)


def test_values_round_trip_through_codecs() -> None:
    user = UserData(
        id=1,
        first_name="Ann",
        zodiac_sign=Sign.LEO,
        lang=Lang.EN,
        timezone="Asia/Tokyo",
        push_enabled=True,
        push_time=dt.time(8, 30),
        last_push_date=dt.date(2026, 11, 20),
        created_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )
    codec = Codec(UserData)
    assert codec.decode(codec.encode(user)) == user
    ref = FileRef(file_id="F", content_sha256="a" * 64)
    assert Codec(FileRef).decode(Codec(FileRef).encode(ref)) == ref
    horo = HoroscopeData(
        sign=Sign.LEO, date=dt.date(2026, 11, 21), lang=Lang.RU, text="<b>&", generator="t"
    )
    assert Codec(HoroscopeData).decode(Codec(HoroscopeData).encode(horo)) == horo
    assert len(codec.encode(user)) < 200  # small: this is read on every update


def test_profile_change_detection() -> None:
    data = UserData(id=1, first_name="Ann", username="ann", language_code="ru")
    assert not _profile_changed(data, _profile(TgUser(1, "Ann")))
    assert not _profile_changed(data, _profile(TgUser(1, "Ann", is_premium=False)))
    assert _profile_changed(data, _profile(TgUser(1, "Anna")))
    assert _profile_changed(data, _profile(TgUser(1, "Ann", is_premium=True)))
    assert _profile_changed(data, _profile(TgUser(1, "Ann", language_code="en")))


def test_view_fields() -> None:
    day = dt.date(2026, 11, 21)
    assert _field(Sign.LEO, day) == "2026-11-21:leo"
    assert VIEWS.parse(b"2026-11-21:leo", b"3") == ((Sign.LEO, day), 3)
    assert VIEWS.parse(b"2026-11-21:leo", b"-1") == ((Sign.LEO, day), -1)  # a view taken back
    for field, value in [
        (b"2026-11-21:dragon", b"1"),
        (b"garbage", b"1"),
        (b"\xff", b"1"),
        (b"2026-11-21:leo", b"abc"),
        (b"2026-11-21:leo", b" 1"),
        (b"2026-11-21:leo", b"1.5"),
        (b"2026-11-21:leo", b"99999999999999999999"),  # would overflow the upsert
    ]:
        assert VIEWS.parse(field, value) is None, (field, value)
    items, bad = VIEWS.read({b"2026-11-21:leo": b"2", b"2026-11-21:leo:x": b"1", b"x": b"y"})
    assert items == {(Sign.LEO, day): 2} and bad == {b"2026-11-21:leo:x": b"1", b"x": b"y"}


def test_last_seen_fields() -> None:
    assert LAST_SEEN.parse(b"42", b"1764000000") == (42, 1764000000.0)
    for field, value in [
        (b"abc", b"1764000000"),
        (b"0", b"1764000000"),
        (b"99999999999999999999", b"1764000000"),
        (b"42", b"abc"),
        (b"42", b"nan"),
        (b"42", b"inf"),
        (b"42", b"-5"),
        (b"42", b"1e30"),
    ]:
        assert LAST_SEEN.parse(field, value) is None, (field, value)
    items, bad = LAST_SEEN.read({b"1": b"1764000000", b"2": b"x"})
    assert items == {1: 1764000000.0} and bad == {b"2": b"x"}


def test_batch_ids_sort_by_time_and_are_unique() -> None:
    ids = [new_batch_id() for _ in range(100)]
    assert len(set(ids)) == 100
    stamps = [i[:13] for i in ids]
    assert stamps == sorted(stamps)
    assert all(len(i) <= 64 for i in ids)


async def test_fake_generator_is_deterministic() -> None:
    gen = FakeGenerator(html=True)
    a = await gen.generate(Sign.LEO, dt.date(2026, 11, 21), Lang.RU)
    b = await gen.generate(Sign.LEO, dt.date(2026, 11, 21), Lang.RU)
    assert a == b and "<b>&" in a.text and len(gen.calls) == 2
