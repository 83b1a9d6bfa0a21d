"""The index: metadata rows of tasks, snapshots, tensors, objects, tags and locks in SQL.

It knows nothing of bytes, tensors or blob storage. SQLite (one file, WAL) and PostgreSQL are
supported; the schema is versioned with Alembic (see :mod:`weightstore.index.schema`).
"""

from weightstore.index.engine import IndexSettings, make_engine
from weightstore.index.repository import Index, SnapshotUsageRow

__all__ = ["Index", "IndexSettings", "SnapshotUsageRow", "make_engine"]
