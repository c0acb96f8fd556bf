from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    Identity,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base
from db.models.enums import lang_type, sign_type
from db.types import Lang, Sign


class Horoscope(Base):
    """One text per (sign, date, language): generated once, read by everyone."""

    __tablename__ = "horoscopes"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    zodiac_sign: Mapped[Sign] = mapped_column(sign_type())
    horoscope_date: Mapped[dt.date] = mapped_column(Date)
    lang: Mapped[Lang] = mapped_column(lang_type())
    content: Mapped[str] = mapped_column(Text)
    generator: Mapped[str] = mapped_column(String(32))
    model: Mapped[str | None] = mapped_column(String(128))
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    cost_usd: Mapped[Decimal | None] = mapped_column(Numeric(12, 6))
    generated_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())

    __table_args__ = (
        UniqueConstraint("zodiac_sign", "horoscope_date", "lang"),
        CheckConstraint("length(content) > 0", name="content_not_empty"),
    )


class HoroscopeView(Base):
    """Views per sign and day: only a person's request counts (not precompute, warm-up, push)."""

    __tablename__ = "horoscope_views"

    zodiac_sign: Mapped[Sign] = mapped_column(sign_type(), primary_key=True)
    view_date: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    view_count: Mapped[int] = mapped_column(BigInteger, server_default="0")
    updated_at: Mapped[dt.datetime] = mapped_column(server_default=func.now(), onupdate=func.now())

    __table_args__ = (CheckConstraint("view_count >= 0", name="view_count_non_negative"),)


class AppliedBatch(Base):
    """Ids of counter batches already applied: makes buffer flushes exactly-once.

    A flush inserts its batch id in the same transaction as the counts; a retry of a batch whose
    commit went through finds the id here and only deletes the leftover Redis batch key.
    """

    __tablename__ = "applied_batches"

    batch_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    item_count: Mapped[int] = mapped_column(Integer, server_default="0")
    applied_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())


class GenerationClaim(Base):
    """Who is generating a text right now: one row per key, with a lease.

    Taken in a short transaction before an LLM call and deleted in the one that stores the text,
    so one generation per key happens across processes without holding a Postgres connection
    (or an advisory lock, which needs one) while the model thinks. A holder that dies leaves a
    row whose lease runs out; the next claimant takes it over. See HoroscopeRepository.
    """

    __tablename__ = "generation_claims"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    token: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[dt.datetime] = mapped_column()
