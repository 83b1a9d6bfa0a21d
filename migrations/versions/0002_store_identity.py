"""Store identity and damaged-object flags.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

``store_meta`` holds the store's id (also written beside the objects), so that an index and an
object location that do not belong together are refused instead of gc deleting every object.
``damaged_objects`` remembers what ``verify`` found broken, so that a later save of the same
content rewrites the object instead of deduplicating against it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "store_meta",
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_store_meta")),
    )
    op.create_table(
        "damaged_objects",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("problem", sa.Text(), nullable=False),
        sa.Column("found_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_damaged_objects")),
    )


def downgrade() -> None:
    op.drop_table("damaged_objects")
    op.drop_table("store_meta")
