"""Time as the bot sees it: an injectable clock and "today" in a named zone.

"Today" is never the server's local date: a user in Vladivostok and one in Kaliningrad have
different todays at 23:00 Moscow time. Everything asks ``local_date(now(), zone)`` with an
aware UTC ``now`` from the app's clock, which tests replace to pin the date.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from functools import cache, lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

__all__ = [
    "Clock",
    "local_date",
    "local_now",
    "looks_like_zone",
    "parse_zone",
    "utc_now",
    "zone",
    "zone_for_place",
]

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


# "Area/Location" as people type an IANA name: a word, a slash, more. Such a text is meant as a
# zone even when no such zone exists ("Mars/Olympus"), so it earns the zone error, not a hint.
_ZONE_SHAPE = re.compile(r"[A-Za-z][A-Za-z_+-]+(?:/[A-Za-z0-9_+-]+)+")
# The areas of the canonical IANA names; the legacy ones (US/, Canada/, SystemV/...) are aliases.
_AREAS = frozenset(
    {
        "Africa",
        "America",
        "Antarctica",
        "Arctic",
        "Asia",
        "Atlantic",
        "Australia",
        "Europe",
        "Indian",
        "Pacific",
    }
)


def looks_like_zone(text: str | None) -> bool:
    """Whether ``text`` has the shape of an IANA name ("Mars/Olympus"), valid or not."""
    value = (text or "").strip()
    return len(value) <= 64 and _ZONE_SHAPE.fullmatch(value) is not None


@cache
def _places() -> dict[str, str]:
    """City (last part of a canonical zone name, folded) -> zone, for unambiguous cities only."""
    found: dict[str, set[str]] = {}
    for name in available_timezones():
        area, _, place = name.partition("/")
        if area in _AREAS and place:
            key = place.rsplit("/", 1)[-1].replace("_", " ").casefold()
            found.setdefault(key, set()).add(name)
    return {key: names.pop() for key, names in found.items() if len(names) == 1}


def zone_for_place(text: str | None) -> str | None:
    """The zone named by its city ("Moscow", "new york" -> America/New_York), else None.

    Only for a text that answers the bot's question for a zone: in chat, a bare word is not a
    zone (see ``parse_zone``).
    """
    value = " ".join((text or "").replace("_", " ").split()).casefold()
    if not value or len(value) > 64:
        return None
    return parse_zone(value) or _places().get(value)


def _title(part: str) -> str:
    # "new_york" -> "New_York", "port-au-prince" -> "Port-Au-Prince" (tz uses Port-au-Prince;
    # the exact spelling is tried first, this is only a forgiving second guess).
    return "_".join(w[:1].upper() + w[1:].lower() for w in part.split("_"))
