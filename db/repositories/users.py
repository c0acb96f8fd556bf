"""Users: Redis first, Postgres second; writes in the unit of work, invalidation after commit.

The hot path is ``get_or_create_from_telegram``, called for every update. For a known user
whose Telegram profile did not change it costs one Redis round trip (the GET, with the
last-seen HSET in the same pipeline) and no SQL at all: the unit-of-work session is lazy, so
it never even checks out a connection.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import time
import zoneinfo
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, func, literal_column, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cache import Codec, SideCommand
from cache.repair import drop_wrong_type
from db.models import User
from db.repositories.batches import BufferKind, flush_buffer, unflushed
from db.repositories.coalesce import writer_for
from db.repositories.context import DataContext
from db.repositories.values import (
    LastSeenFlushResult,
    PushTarget,
    TelegramUserLike,
    UserData,
)
from db.types import Lang, Sign

__all__ = ["USER_NEGATIVE_TTL", "USER_TTL", "UserNotFoundError", "UserRepository"]

log = logging.getLogger(__name__)

#: A day: user rows change rarely, and every change invalidates the entry after its commit.
USER_TTL: Final = 86_400.0
#: "No such user" is remembered briefly: a new user's INSERT invalidates it after commit anyway.
USER_NEGATIVE_TTL: Final = 60.0

_CODEC: Final[Codec[UserData]] = Codec(UserData)

#: The columns that make a UserData, in the struct's field order.
_COLUMNS: Final = (
    User.id,
    User.is_bot,
    User.first_name,
    User.last_name,
    User.username,
    User.language_code,
    User.is_premium,
    User.zodiac_sign,
    User.lang,
    User.timezone,
    User.push_enabled,
    User.push_time,
    User.last_push_date,
    User.created_at,
)

# Keeps the newest stamp: batches may arrive out of order, and a direct fallback write may
# already have stored a later one.
_APPLY_LAST_SEEN = text(
    """
    UPDATE users AS u
    SET last_seen_at = greatest(u.last_seen_at, to_timestamp(v.ts))
    FROM unnest(CAST(:ids AS bigint[]), CAST(:stamps AS double precision[])) AS v(id, ts)
    WHERE u.id = v.id
    """
)


#: Bounds of a readable buffered stamp: a user id fits the BIGINT key, a stamp is a finite
#: time between 2000 and 2200 (``to_timestamp`` of anything else would poison the column).
_MAX_USER_ID: Final = 2**63 - 1
_STAMP_RANGE: Final = (946_684_800.0, 7_258_118_400.0)


def _parse_last_seen(field: bytes, value: bytes) -> tuple[int, float] | None:
    """``{user_id}`` -> epoch seconds, or None for anything a flush could not apply."""
    try:
        user_id, stamp = int(field), float(value)
    except ValueError:
        return None
    if not (0 < user_id <= _MAX_USER_ID and _STAMP_RANGE[0] <= stamp <= _STAMP_RANGE[1]):
        return None  # also NaN and inf, which compare False
    return user_id, stamp


async def _apply_stamps(session: AsyncSession, batch: dict[int, float]) -> int:
    result = await session.execute(
        _APPLY_LAST_SEEN, {"ids": list(batch), "stamps": list(batch.values())}
    )
    return int(getattr(result, "rowcount", 0) or 0)


#: The last-seen buffer: ``{user_id}`` -> epoch seconds; the newest stamp of a user wins.
LAST_SEEN: Final[BufferKind[int, float]] = BufferKind(
    name="last_seen", parse=_parse_last_seen, merge=max, apply=_apply_stamps
)


async def _apply_last_seen(
    factory: async_sessionmaker[AsyncSession], batch: dict[int, float]
) -> None:
    """Stamps that could not reach Redis, straight into Postgres in one statement."""
    async with factory() as s, s.begin():
        await _apply_stamps(s, batch)


# The daily push's completions, many users per statement (jobs/push.py group-commits them).
_COMPLETE_PUSHES = text(
    """
    UPDATE users AS u
    SET last_push_date = v.d, push_claimed_until = NULL, push_claimed_by = NULL,
        updated_at = now()
    FROM unnest(CAST(:ids AS bigint[]), CAST(:dates AS date[])) AS v(id, d)
    WHERE u.id = v.id AND (u.last_push_date IS NULL OR u.last_push_date < v.d)
    RETURNING u.id
    """
)

# Loose index scan over the partial push index: one index probe per distinct zone instead of
# reading every subscriber just to learn which zones exist.
_SUBSCRIBER_ZONES = text(
    """
    WITH RECURSIVE z(tz) AS (
        (SELECT timezone FROM users WHERE push_enabled AND timezone IS NOT NULL
         ORDER BY timezone LIMIT 1)
        UNION ALL
        SELECT (SELECT u.timezone FROM users u
                WHERE u.push_enabled AND u.timezone > z.tz
                ORDER BY u.timezone LIMIT 1)
        FROM z WHERE z.tz IS NOT NULL
    )
    SELECT tz FROM z WHERE tz IS NOT NULL
    """
)


class UserNotFoundError(LookupError):
    """A setter was called for a user id that has no row."""


@functools.cache
def _known_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def validate_timezone(name: str) -> str:
    """Return ``name`` if it is an IANA zone name this machine knows; ValueError otherwise.

    ``available_timezones`` rather than just ``ZoneInfo(name)``: the latter also accepts file
    paths inside the tz database (``posix/...``, ``right/...``) that are not zone names.
    """
    if name not in _known_zones():
        raise ValueError(f"unknown time zone: {name!r}")
    ZoneInfo(name)
    return name


def _to_data(row: Any) -> UserData:
    m = row._mapping
    return UserData(
        id=m["id"],
        is_bot=m["is_bot"],
        first_name=m["first_name"],
        last_name=m["last_name"],
        username=m["username"],
        language_code=m["language_code"],
        is_premium=m["is_premium"],
        zodiac_sign=m["zodiac_sign"],
        lang=m["lang"],
        timezone=m["timezone"],
        push_enabled=m["push_enabled"],
        push_time=m["push_time"],
        last_push_date=m["last_push_date"],
        created_at=m["created_at"],
    )


#: Column lengths of the Telegram profile strings (db/models/user.py), in characters.
FIRST_NAME_MAX: Final = 256
LAST_NAME_MAX: Final = 256
USERNAME_MAX: Final = 64
LANGUAGE_CODE_MAX: Final = 16


def clean_text(value: str | None, limit: int) -> str | None:
    """``value`` without U+0000 (Postgres text cannot hold it), cut to ``limit`` characters."""
    if value is None:
        return None
    return value.replace("\x00", "")[:limit]


def _profile(tg: TelegramUserLike) -> dict[str, Any]:
    """The Telegram profile as stored: NULs removed and strings capped to the columns, so one
    odd profile (Telegram's limits are not a promise the database should rely on) can never
    fail every update of its user. An empty first name is stored as "?" (the column is NOT
    NULL and the bot greets people by it)."""
    return {
        "is_bot": bool(tg.is_bot),
        "first_name": clean_text(tg.first_name, FIRST_NAME_MAX) or "?",
        "last_name": clean_text(tg.last_name, LAST_NAME_MAX),
        "username": clean_text(tg.username, USERNAME_MAX),
        "language_code": clean_text(tg.language_code, LANGUAGE_CODE_MAX),
        "is_premium": bool(tg.is_premium),
    }


def _profile_changed(data: UserData, profile: dict[str, Any]) -> bool:
    return any(getattr(data, name) != value for name, value in profile.items())


class UserRepository:
    """Users of the bot. Methods never commit: the caller's unit of work does.

    ``session`` is the update's unit-of-work session (writes), or a function returning it:
    then it is asked for only when a method writes or queries, so a warm update (the user
    read from Redis) never creates one. Reads through the cache load with their own short
    sessions from ``ctx.session_factory``.
    """

    __slots__ = ("_ctx", "_session_source")

    def __init__(
        self, session: AsyncSession | Callable[[], AsyncSession], ctx: DataContext
    ) -> None:
        self._session_source = session
        self._ctx = ctx

    @property
    def _session(self) -> AsyncSession:
        source = self._session_source
        return source if isinstance(source, AsyncSession) else source()

    # ------------------------------------------------------------------ keys and loaders

    def key(self, user_id: int) -> str:
        return self._ctx.keys.key("user", user_id)

    @property
    def last_seen_key(self) -> str:
        return self._ctx.keys.key("buf", "lastseen")

    def _loader(self, user_id: int) -> Callable[[], Awaitable[UserData | None]]:
        cache, key = self._ctx.cache, self.key(user_id)

        async def query() -> UserData | None:
            async with self._ctx.session_factory() as s:
                row = (await s.execute(select(*_COLUMNS).where(User.id == user_id))).first()
            return _to_data(row) if row is not None else None

        async def load() -> UserData | None:
            # A miss may be an entry of the wrong type (WRONGTYPE on every GET, forever):
            # checked next to the query, so it costs no latency and heals at the next read.
            data, _ = await asyncio.gather(query(), drop_wrong_type(cache, key))
            return data

        return load

    async def _cached(self, user_id: int, also: Sequence[SideCommand] = ()) -> UserData | None:
        return await self._ctx.cache.get_or_load(
            self.key(user_id),
            self._loader(user_id),
            ttl=USER_TTL,
            codec=_CODEC,
            negative_ttl=USER_NEGATIVE_TTL,
            also=also,
        )

    # ------------------------------------------------------------------ reads

    async def get(self, user_id: int) -> UserData | None:
        """The user, or None: Redis, then Postgres (a miss is remembered for a minute)."""
        return await self._cached(user_id)

    async def get_or_create_from_telegram(
        self,
        tg_user: TelegramUserLike,
        *,
        seen_at: float | None = None,
        also: Sequence[SideCommand] = (),
        stamp_last_seen: bool = True,
    ) -> tuple[UserData, bool]:
        """The user behind an update, created on first contact; ``(user, created)``.

        The profile strings are cleaned first (NULs removed, capped to the column lengths)
        and compared with the stored user in that form.

        Known and unchanged: one Redis round trip (GET + last-seen HSET), no SQL. Changed
        profile or new user: one upsert in the unit of work, the cache entry (or its
        NOT_FOUND) deleted after the commit. The upsert (``ON CONFLICT (id) DO UPDATE``)
        means two concurrent first updates of one user cannot fail; ``created`` is true only
        for the one whose INSERT actually inserted the row (``xmax = 0``).

        ``also``: more side commands (e.g. the throttle's script) sent in the same
        pipeline as the GET, after the last-seen HSET; each command's ``on_result`` gets its
        reply and its ``fallback`` runs when it could not be sent, as for any side command.
        They are sent exactly once, on the cold path too (the upsert adds no Redis trip).

        ``stamp_last_seen=False``: the caller knows it stamped this user very recently (the
        bot re-stamps a person at most once a minute), so no last-seen HSET is sent.
        """
        if stamp_last_seen:
            stamp = time.time() if seen_at is None else seen_at
            also = (self.last_seen_command(tg_user.id, stamp), *also)
        data = await self._cached(tg_user.id, also=also)
        profile = _profile(tg_user)
        if data is not None and not _profile_changed(data, profile):
            return data, False
        ins = insert(User).values(id=tg_user.id, **profile)
        stmt = ins.on_conflict_do_update(
            index_elements=[User.id],
            set_={**{name: ins.excluded[name] for name in profile}, "updated_at": func.now()},
        ).returning(*_COLUMNS, literal_column("(xmax = 0)").label("inserted"))
        row = (await self._session.execute(stmt)).one()
        self._ctx.cache.invalidate_after_commit(self._session, self.key(tg_user.id))
        return _to_data(row), bool(row._mapping["inserted"])

    # ------------------------------------------------------------------ settings

    async def _update(
        self, user_id: int, where: Sequence[ColumnElement[bool]] = (), **values: Any
    ) -> Any | None:
        stmt = (
            update(User)
            .where(User.id == user_id, *where)
            .values(**values)
            .returning(*_COLUMNS)
            .execution_options(synchronize_session=False)
        )
        row = (await self._session.execute(stmt)).first()
        if row is not None:
            self._ctx.cache.invalidate_after_commit(self._session, self.key(user_id))
        return row

    async def _set(self, user_id: int, **values: Any) -> UserData:
        row = await self._update(user_id, **values)
        if row is None:
            raise UserNotFoundError(user_id)
        return _to_data(row)

    async def set_sign(self, user_id: int, sign: Sign | None) -> UserData:
        return await self._set(user_id, zodiac_sign=sign)

    async def set_lang(self, user_id: int, lang: Lang | None) -> UserData:
        return await self._set(user_id, lang=lang)

    async def set_timezone(self, user_id: int, timezone: str | None) -> UserData:
        """Set the user's IANA zone (None: back to the bot's zone); ValueError if unknown."""
        return await self._set(
            user_id, timezone=None if timezone is None else validate_timezone(timezone)
        )

    async def set_push(
        self, user_id: int, enabled: bool, push_time: dt.time | None = None
    ) -> UserData:
        """Turn the daily push on/off, optionally moving its local time (whole minutes)."""
        values: dict[str, Any] = {"push_enabled": enabled}
        if push_time is not None:
            if push_time.tzinfo is not None:
                raise ValueError("push_time is a local wall-clock time: pass a naive time")
            values["push_time"] = push_time.replace(second=0, microsecond=0)
        return await self._set(user_id, **values)

    # ------------------------------------------------------------------ last seen

    def last_seen_command(self, user_id: int, stamp: float) -> SideCommand:
        """HSET of the user's last-seen stamp into the buffer, to ride along the user GET.

        The fallback (Redis unavailable) writes the stamp directly, in its own transaction,
        so "active users" stays right while Redis is down.
        """

        factory = self._ctx.session_factory

        async def fallback() -> None:
            await writer_for(factory, "last_seen", _apply_last_seen, max).add(user_id, stamp)

        return SideCommand(
            ("HSET", self.last_seen_key, str(user_id), str(int(stamp))), fallback=fallback
        )

    async def flush_last_seen(
        self, *, checkpoint: Callable[[str], Awaitable[None]] | None = None
    ) -> LastSeenFlushResult:
        """Write buffered last-seen stamps with one UPDATE per batch, exactly once.

        The same flush as the view counters (db/repositories/batches.py). Exactly-once
        matters less here (``greatest`` makes a replay harmless) but sharing one protocol
        means one thing to get right. Uses its own transactions: this is a job, not part of
        an update.
        """
        done = await flush_buffer(self._ctx, self.last_seen_key, LAST_SEEN, checkpoint=checkpoint)
        return LastSeenFlushResult(
            batches=done.batches, stamps=done.items, rows=done.rows, dead=done.dead
        )

    # ------------------------------------------------------------------ statistics

    async def count_total(self) -> int:
        return int(await self._session.scalar(select(func.count()).select_from(User)) or 0)

    async def count_push_subscribers(self) -> int:
        stmt = select(func.count()).select_from(User).where(User.push_enabled)
        return int(await self._session.scalar(stmt) or 0)

    async def count_seen_since(self, since: dt.datetime) -> int:
        """Users seen at or after ``since``: flushed stamps plus those still in Redis."""
        threshold = since.timestamp()
        buffered = await unflushed(self._ctx, self.last_seen_key, LAST_SEEN, self._session)
        recent = [uid for uid, ts in buffered.items() if ts >= threshold]
        stmt = select(func.count()).select_from(User).where(User.last_seen_at >= since)
        if recent:
            stmt = stmt.where(User.id.not_in(recent))
        flushed = int(await self._session.scalar(stmt) or 0)
        return flushed + len(recent)

    # ------------------------------------------------------------------ push

    async def disable_push(self, user_id: int) -> bool:
        """Turn the push off (the user blocked the bot); False when there is no such user."""
        return await self._update(user_id, push_enabled=False) is not None

    # ------------------------------------------------------------------ shared push claims

    def _zone_due(self, name: str | None, now_utc: dt.datetime) -> tuple[Any, dt.date] | None:
        """The due condition of one zone (an equality on the index's leading column plus a
        range on push_time) and that zone's local date; None for a zone this machine lacks."""
        try:
            zone = self._ctx.tz if name is None else ZoneInfo(name)
        except (ValueError, zoneinfo.ZoneInfoNotFoundError):
            log.warning("skipping subscribers with unknown zone %r", name)
            return None
        local = now_utc.astimezone(zone)
        today, now_time = local.date(), local.time().replace(tzinfo=None)
        zone_cond = User.timezone.is_(None) if name is None else User.timezone == name
        cond = (
            User.push_enabled,
            zone_cond,
            User.push_time <= now_time,
            (User.last_push_date.is_(None)) | (User.last_push_date < today),
            User.zodiac_sign.is_not(None),
        )
        return cond, today

    async def claim_push_batch(
        self, now_utc: dt.datetime, *, owner: str, until: dt.datetime, limit: int
    ) -> list[PushTarget]:
        """Claim up to ``limit`` due users for ``owner`` until ``until``; returns them.

        Due (push on, the local push time reached, not pushed today in the user's zone; a zone
        at a time, so every query uses the partial index ``ix_users_push_due``), and not claimed
        by anyone (no claim, or one that expired at ``now_utc``: its instance died or gave the
        user back). One statement per zone:
        ``WITH due AS MATERIALIZED (SELECT id ... LIMIT n FOR UPDATE SKIP LOCKED) UPDATE ...
        RETURNING``: concurrent claimers never wait for each other and never get the same row
        (a row another claimer holds is skipped; one it has committed no longer matches). The
        caller commits; the claim columns are not in the cached UserData, so nothing is
        invalidated.
        """
        if now_utc.tzinfo is None or until.tzinfo is None:
            raise ValueError("now_utc and until must be timezone-aware")
        zones: list[str | None] = [None]
        zones += list((await self._session.execute(_SUBSCRIBER_ZONES)).scalars())
        found: list[PushTarget] = []
        for name in zones:
            if len(found) >= limit:
                break
            due = self._zone_due(name, now_utc)
            if due is None:
                continue
            cond, today = due
            free = (User.push_claimed_until.is_(None)) | (User.push_claimed_until <= now_utc)
            picked = (
                select(User.id)
                .where(*cond, free)
                .limit(limit - len(found))
                .with_for_update(skip_locked=True)
                .cte("due")
                .prefix_with("MATERIALIZED")
            )
            stmt = (
                update(User)
                .where(User.id == picked.c.id)
                .values(push_claimed_until=until, push_claimed_by=owner)
                .returning(*_COLUMNS)
                .execution_options(synchronize_session=False)
            )
            for row in await self._session.execute(stmt):
                found.append(PushTarget(user=_to_data(row), local_date=today))
        found.sort(key=lambda t: t.user.id)
        return found

    async def move_push_claims(
        self, user_ids: Sequence[int], *, owner: str, until: dt.datetime
    ) -> int:
        """Move ``owner``'s claims on ``user_ids`` to expire at ``until`` (only those still its
        own): later to keep them, now to give them back."""
        if not user_ids:
            return 0
        stmt = (
            update(User)
            .where(User.id.in_(list(user_ids)), User.push_claimed_by == owner)
            .values(push_claimed_until=until)
            .execution_options(synchronize_session=False)
        )
        result = await self._session.execute(stmt)
        return int(getattr(result, "rowcount", 0) or 0)

    async def complete_pushes(self, done: dict[int, dt.date]) -> set[int]:
        """These users' pushes reached them (user id -> local date): record each and drop
        its claim, in one statement. Returns the ids recorded now; an id missing from the
        result was recorded already (then somebody else sent it too: a claim was lost, which
        the sender's lease margin is there to prevent). Invalidates their cached users after
        commit.
        """
        if not done:
            return set()
        rows = await self._session.execute(
            _COMPLETE_PUSHES, {"ids": list(done), "dates": list(done.values())}
        )
        recorded = {int(row[0]) for row in rows}
        self._ctx.cache.invalidate_after_commit(self._session, *(self.key(uid) for uid in recorded))
        return recorded

    async def release_push_claim(
        self, user_id: int, *, owner: str, retry_at: dt.datetime | None = None
    ) -> bool:
        """Give the user back: due again for anyone from ``retry_at`` (None: at once).

        A retriable failure gives the user back with a delay, so the next sweep (not this
        run, over and over) tries again. Only ``owner``'s own claim is touched.
        """
        stmt = (
            update(User)
            .where(User.id == user_id, User.push_claimed_by == owner)
            .values(
                push_claimed_until=retry_at, push_claimed_by=None if retry_at is None else owner
            )
            .execution_options(synchronize_session=False)
        )
        result = await self._session.execute(stmt)
        return bool(getattr(result, "rowcount", 0))
