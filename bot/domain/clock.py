"""Time as the bot sees it: an injectable clock and "today" in a named zone.

"Today" is never the server's local date: a user in Vladivostok and one in Kaliningrad have
different todays at 23:00 Moscow time. Everything asks ``local_date(now(), zone)`` with an
aware UTC ``now`` from the app's clock, which tests replace to pin the date.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["Clock", "local_date", "local_now", "parse_zone", "utc_now", "zone"]

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def zone(name: str | None, default: str) -> ZoneInfo:
    """The user's zone (a NULL or no-longer-valid name means the bot's zone)."""
    found = _zone(name) if name else None
    if found is None:
        found = _zone(default)
    return found if found is not None else ZoneInfo("UTC")


def local_now(now: dt.datetime, name: str | None, default: str) -> dt.datetime:
    if now.tzinfo is None:  # a naive clock is taken as UTC, never as server-local time
        now = now.replace(tzinfo=dt.UTC)
    return now.astimezone(zone(name, default))


def local_date(now: dt.datetime, name: str | None, default: str) -> dt.date:
    return local_now(now, name, default).date()


def parse_zone(text: str | None) -> str | None:
    """A valid IANA zone name from what a user typed ("europe/berlin" works), else None.

    Only names with a "/" (or UTC) are accepted: a bare word like "Moscow" or "EST" is either
    unknown or an obsolete alias, and accepting any word would turn chat messages into zones.
    """
    if not text:
        return None
    value = text.strip()
    if not value or len(value) > 64 or " " in value:
        return None
    if value.upper() in {"UTC", "ETC/UTC"}:
        return "UTC"
    if "/" not in value or value.startswith(("/", ".")) or ".." in value:
        return None
    candidates = [value, "/".join(part[:1].upper() + part[1:] for part in value.split("/"))]
    candidates.append("/".join(_title(part) for part in value.split("/")))
    for candidate in candidates:
        if _zone(candidate) is not None:
            return candidate
    return None


def _title(part: str) -> str:
    # "new_york" -> "New_York", "port-au-prince" -> "Port-Au-Prince" (tz uses Port-au-Prince;
    # the exact spelling is tried first, this is only a forgiving second guess).
    return "_".join(w[:1].upper() + w[1:].lower() for w in part.split("_"))
