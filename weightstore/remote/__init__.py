"""The HTTP client store (:class:`RemoteStore`) and :func:`open_store` for a path or URL."""

from weightstore.remote.store import RemoteStore, default_cache_dir, open_store, raise_for_problem

__all__ = ["RemoteStore", "default_cache_dir", "open_store", "raise_for_problem"]
