from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Boolean, Date, DateTime, Index, String, Time, func, text
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, TimestampMixin
from db.models.enums import lang_type, sign_type
from db.types import DEFAULT_PUSH_TIME, Lang, Sign


class User(TimestampMixin, Base):
    """A Telegram user. The Telegram id is the primary key: no surrogate to keep in sync."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    is_bot: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    first_name: Mapped[str] = mapped_column(String(256))
    last_name: Mapped[str | None] = mapped_column(String(256))
    username: Mapped[str | None] = mapped_column(String(64))
    language_code: Mapped[str | None] = mapped_column(String(16))
    is_premium: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))

    zodiac_sign: Mapped[Sign | None] = mapped_column(sign_type())
    lang: Mapped[Lang | None] = mapped_column(lang_type())
    # IANA zone name; NULL means "the bot's zone" (BOT_TIMEZONE).
    timezone: Mapped[str | None] = mapped_column(String(64))
    push_enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    push_time: Mapped[dt.time] = mapped_column(
        Time, server_default=text(f"'{DEFAULT_PUSH_TIME:%H:%M}'")
    )
    last_push_date: Mapped[dt.date | None] = mapped_column(Date)
    # The daily push's claim (jobs/push.py): the instance that holds this user's push for
    # now, and until when. Set by a batch claim, cleared when the push is done; an expired
    # claim (its instance died) is taken over by any instance's next sweep.
    push_claimed_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    push_claimed_by: Mapped[str | None] = mapped_column(String(64))

    first_seen_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    last_seen_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())

    __table_args__ = (
        Index(
            "ix_users_username",
            "username",
            postgresql_where=text("username IS NOT NULL"),
        ),
        # The push query walks one zone at a time: subscribers whose push time has come and
        # who were not pushed on their local date yet. Only subscribers are indexed.
        Index(
            "ix_users_push_due",
            "timezone",
            "push_time",
            "last_push_date",
            postgresql_where=text("push_enabled"),
        ),
    )
