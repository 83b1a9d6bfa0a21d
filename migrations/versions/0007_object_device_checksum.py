"""Record each object's device checksum, so a tensor changed in place on a GPU is checked there.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04

``device_checksum`` is ``weightstore.codec.devhash`` of the object's raw (decoded) bytes, a
signed 64-bit integer: torch ops compute it on any device, BLAKE3 (the object's name) runs on
the host only. Recorded when an object is written or received; objects from before this
revision have none, and a delta applied over one of them on a device is checked on the host.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("objects") as batch:
        batch.add_column(sa.Column("device_checksum", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("objects") as batch:
        batch.drop_column("device_checksum")
