"""cache_invalidations: the outbox of after-commit cache invalidations (issue 12.7)

Revision ID: 5c1e0f7a93d2
Revises: b0799d0f78ae
Create Date: 2026-12-05 10:30:00

Generated with `alembic revision --autogenerate`, then reviewed.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5c1e0f7a93d2"
down_revision: str | None = "b0799d0f78ae"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cache_invalidations",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("cache_key", sa.String(length=200), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cache_invalidations")),
    )


def downgrade() -> None:
    op.drop_table("cache_invalidations")
