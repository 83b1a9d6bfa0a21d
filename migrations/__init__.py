"""Alembic migrations of the weightstore index (installed as ``weightstore_migrations``)."""
