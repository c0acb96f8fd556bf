"""The small immutable values the repositories return and cache.

Why msgspec Structs and not ORM objects: these are what lives in Redis (msgpack, validated on
decode), they are safe to share between concurrent updates (frozen), and they carry no lazy
loading that could touch a database session after it is gone.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

import msgspec

from db.types import DEFAULT_PUSH_TIME, Lang, Sign

__all__ = [
    "FileRef",
    "FlushResult",
    "HoroscopeData",
    "LastSeenFlushResult",
    "PushTarget",
    "TelegramUserLike",
    "UserData",
]


class UserData(msgspec.Struct, frozen=True, kw_only=True):
    """A user as the bot needs it on every update.

    ``last_seen_at`` is deliberately absent: it changes on every update and is buffered in
    Redis, so caching it here would make every cached entry stale at once.
    """

    id: int
    is_bot: bool = False
    first_name: str
    last_name: str | None = None
    username: str | None = None
    language_code: str | None = None
    is_premium: bool = False
    zodiac_sign: Sign | None = None
    lang: Lang | None = None
    #: IANA zone name; None means "the bot's zone"
    timezone: str | None = None
    push_enabled: bool = False
    push_time: dt.time = DEFAULT_PUSH_TIME
    last_push_date: dt.date | None = None
    created_at: dt.datetime | None = None


class FileRef(msgspec.Struct, frozen=True, kw_only=True):
    """A Telegram file_id of one picture for one bot, with the hash of the uploaded file.

    The hash travels with the file_id so that a reader can tell a file_id of an older version
    of the picture (the file on disk changed) from a current one without asking Postgres.
    """

    file_id: str
    file_unique_id: str | None = None
    content_sha256: str


class HoroscopeData(msgspec.Struct, frozen=True, kw_only=True):
    """One horoscope text for (sign, date, lang).

    ``is_fallback`` marks the built-in text served because the configured generator failed:
    it is not stored in Postgres and is cached only briefly.
    """

    sign: Sign
    date: dt.date
    lang: Lang
    text: str
    generator: str
    model: str | None = None
    is_fallback: bool = False


class PushTarget(msgspec.Struct, frozen=True, kw_only=True):
    """A user due for the daily push, with the local date the push is for."""

    user: UserData
    local_date: dt.date


@dataclass(frozen=True, slots=True)
class FlushResult:
    """What a view-counter flush did: batches handled, (sign, date) rows upserted, views added,
    unreadable fields moved to the dead letters."""

    batches: int = 0
    rows: int = 0
    views: int = 0
    dead: int = 0


@dataclass(frozen=True, slots=True)
class LastSeenFlushResult:
    """What a last-seen flush did: batches handled, stamps read, user rows updated, unreadable
    fields moved to the dead letters."""

    batches: int = 0
    stamps: int = 0
    rows: int = 0
    dead: int = 0


class TelegramUserLike(Protocol):
    """The attributes of aiogram's ``User`` the repository reads (no aiogram import in db/)."""

    @property
    def id(self) -> int: ...
    @property
    def is_bot(self) -> bool: ...
    @property
    def first_name(self) -> str: ...
    @property
    def last_name(self) -> str | None: ...
    @property
    def username(self) -> str | None: ...
    @property
    def language_code(self) -> str | None: ...
    @property
    def is_premium(self) -> bool | None: ...
