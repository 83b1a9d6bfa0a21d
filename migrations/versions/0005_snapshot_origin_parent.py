"""Keep the parent a snapshot was saved against after that parent is deleted.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03

A snapshot's id is the digest of its manifest, parent included, and receivers re-derive it to
refuse altered manifests. Deleting a parent sets ``parent_id`` to NULL (the foreign key), which
lost the parent the id was derived with. ``origin_parent_id`` keeps it: the parent's id, or ""
for a snapshot saved without one. Rows from before this revision get their current parent; a
row whose parent was already deleted keeps NULL (unknown: ``verify`` cannot re-derive its id).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("snapshots") as batch:
        batch.add_column(sa.Column("origin_parent_id", sa.String(64), nullable=True))
    op.execute("UPDATE snapshots SET origin_parent_id = parent_id WHERE parent_id IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("snapshots") as batch:
        batch.drop_column("origin_parent_id")
