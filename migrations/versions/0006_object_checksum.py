"""Record a checksum of each object's stored bytes, so dedup can prove an object sound.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

A save that finds an object already stored reuses it. Its header and size were checked, but a
flipped payload byte went unseen and the new snapshot could not be read back. ``checksum`` is
the BLAKE3 digest of the object's stored (encoded) bytes, recorded once its blob is written:
checking it costs a read at disk speed, not a decode. Objects from before this revision have
none: the first save that reuses one decodes and verifies it, then records it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("objects") as batch:
        batch.add_column(sa.Column("checksum", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("objects") as batch:
        batch.drop_column("checksum")
