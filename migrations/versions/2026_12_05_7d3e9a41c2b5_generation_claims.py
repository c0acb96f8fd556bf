"""generation claims: one generation per key across processes without holding a connection

Revision ID: 7d3e9a41c2b5
Revises: 5c1e0f7a93d2
Create Date: 2026-12-06 10:00:00

A row per key being generated right now, with a lease (HoroscopeRepository takes it in a short
transaction before calling the model and deletes it with the INSERT of the text).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7d3e9a41c2b5"
down_revision: str | None = "5c1e0f7a93d2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "generation_claims",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_generation_claims")),
    )


def downgrade() -> None:
    op.drop_table("generation_claims")
