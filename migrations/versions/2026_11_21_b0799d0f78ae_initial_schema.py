"""initial schema: users, image_assets, horoscopes, horoscope_views, applied_batches

Revision ID: b0799d0f78ae
Revises:
Create Date: 2026-11-21 21:28:05

Generated with `alembic revision --autogenerate`, then tidied by hand: the enum types are
spelled once, tables are created in dependency-free order and dropped in reverse.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b0799d0f78ae"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SIGNS = (
    "aries", "taurus", "gemini", "cancer", "leo", "virgo",
    "libra", "scorpio", "sagittarius", "capricorn", "aquarius", "pisces",
)  # fmt: skip
LANGS = ("ru", "en")


def _sign() -> sa.Enum:
    # VARCHAR + CHECK (named ck_<table>_zodiac_sign by the naming convention).
    return sa.Enum(*SIGNS, name="zodiac_sign", native_enum=False, create_constraint=True, length=16)


def _lang() -> sa.Enum:
    return sa.Enum(*LANGS, name="lang", native_enum=False, create_constraint=True, length=8)


def _now() -> sa.TextClause:
    return sa.text("now()")


def _timestamp(name: str) -> sa.Column[sa.DateTime]:
    return sa.Column(name, sa.DateTime(timezone=True), server_default=_now(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("is_bot", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("first_name", sa.String(length=256), nullable=False),
        sa.Column("last_name", sa.String(length=256), nullable=True),
        sa.Column("username", sa.String(length=64), nullable=True),
        sa.Column("language_code", sa.String(length=16), nullable=True),
        sa.Column("is_premium", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("zodiac_sign", _sign(), nullable=True),
        sa.Column("lang", _lang(), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column("push_enabled", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("push_time", sa.Time(), server_default=sa.text("'09:00'"), nullable=False),
        sa.Column("last_push_date", sa.Date(), nullable=True),
        _timestamp("first_seen_at"),
        _timestamp("last_seen_at"),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
    )
    op.create_index(
        "ix_users_username",
        "users",
        ["username"],
        postgresql_where=sa.text("username IS NOT NULL"),
    )
    op.create_index(
        "ix_users_push_due",
        "users",
        ["timezone", "push_time", "last_push_date"],
        postgresql_where=sa.text("push_enabled"),
    )

    op.create_table(
        "image_assets",
        sa.Column("bot_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("asset_key", sa.String(length=200), nullable=False),
        sa.Column("file_id", sa.String(length=255), nullable=False),
        sa.Column("file_unique_id", sa.String(length=64), nullable=True),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("bot_id", "asset_key", name=op.f("pk_image_assets")),
    )

    op.create_table(
        "horoscopes",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("zodiac_sign", _sign(), nullable=False),
        sa.Column("horoscope_date", sa.Date(), nullable=False),
        sa.Column("lang", _lang(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("generator", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("cost_usd", sa.Numeric(precision=12, scale=6), nullable=True),
        _timestamp("generated_at"),
        sa.CheckConstraint("length(content) > 0", name=op.f("ck_horoscopes_content_not_empty")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_horoscopes")),
        sa.UniqueConstraint(
            "zodiac_sign",
            "horoscope_date",
            "lang",
            name=op.f("uq_horoscopes_zodiac_sign_horoscope_date_lang"),
        ),
    )

    op.create_table(
        "horoscope_views",
        sa.Column("zodiac_sign", _sign(), nullable=False),
        sa.Column("view_date", sa.Date(), nullable=False),
        sa.Column("view_count", sa.BigInteger(), server_default="0", nullable=False),
        _timestamp("updated_at"),
        sa.CheckConstraint(
            "view_count >= 0", name=op.f("ck_horoscope_views_view_count_non_negative")
        ),
        sa.PrimaryKeyConstraint("zodiac_sign", "view_date", name=op.f("pk_horoscope_views")),
    )

    op.create_table(
        "applied_batches",
        sa.Column("batch_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("item_count", sa.Integer(), server_default="0", nullable=False),
        _timestamp("applied_at"),
        sa.PrimaryKeyConstraint("batch_id", name=op.f("pk_applied_batches")),
    )


def downgrade() -> None:
    op.drop_table("applied_batches")
    op.drop_table("horoscope_views")
    op.drop_table("horoscopes")
    op.drop_table("image_assets")
    op.drop_index("ix_users_push_due", table_name="users", postgresql_where=sa.text("push_enabled"))
    op.drop_index(
        "ix_users_username", table_name="users", postgresql_where=sa.text("username IS NOT NULL")
    )
    op.drop_table("users")
