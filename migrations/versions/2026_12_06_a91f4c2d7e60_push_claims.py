"""users.push_claimed_until, users.push_claimed_by: the daily push shared by all instances

Revision ID: a91f4c2d7e60
Revises: 7d3e9a41c2b5
Create Date: 2026-12-06 12:00:00

Generated with `alembic revision --autogenerate`, then reviewed. Two nullable columns without
a default: adding them rewrites no rows and takes the lock only for a moment. No index: a
claim reads the due users through ix_users_push_due and filters the claim on those rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a91f4c2d7e60"
down_revision: str | None = "7d3e9a41c2b5"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("push_claimed_until", sa.DateTime(timezone=True)))
    op.add_column("users", sa.Column("push_claimed_by", sa.String(length=64)))


def downgrade() -> None:
    op.drop_column("users", "push_claimed_by")
    op.drop_column("users", "push_claimed_until")
