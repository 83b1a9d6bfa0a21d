"""Index snapshots by (task, created_at, id) and by (created_at, id): the newest snapshots, of
one task or of all, in one index probe.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

Every "newest first" query orders by ``created_at`` and breaks ties by ``id``. With only
``(task_id, created_at)`` indexed, SQLite sorted a task's snapshots to find its latest, so
resolving a task's latest snapshot grew with the task's length (scripts/bench_scale.py: 5x
from 100 to 10,000 snapshots per task), and `log -n 1` over all tasks sorted every snapshot on
PostgreSQL (scripts/bench_listing.py: 32-44 ms at 10,000 snapshots).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_snapshots_task_id_created_at_id", "snapshots", ["task_id", "created_at", "id"]
    )
    op.drop_index("ix_snapshots_task_id_created_at", table_name="snapshots")
    op.create_index("ix_snapshots_created_at_id", "snapshots", ["created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_snapshots_created_at_id", table_name="snapshots")
    op.create_index("ix_snapshots_task_id_created_at", "snapshots", ["task_id", "created_at"])
    op.drop_index("ix_snapshots_task_id_created_at_id", table_name="snapshots")
