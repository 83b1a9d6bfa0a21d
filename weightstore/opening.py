"""Opening a store's parts, written once: a folder, an ``s3://`` URL, read-only or not.

:func:`open_parts` gives the index and the object backend that :meth:`WeightStore.open` and
:meth:`Catalog.open` build on; :func:`schema_engine` an engine on the same index for migrations.
A refused open changes nothing: no empty index is left beside the objects.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy import Engine

from weightstore import location
from weightstore.index import Index, IndexSettings, make_engine
from weightstore.objects import LocalBackend, ObjectBackend
from weightstore.objects.s3config import S3Settings

T = TypeVar("T")


def open_parts(
    path: str | os.PathLike[str],
    build: Callable[[Index, ObjectBackend], T],
    *,
    index_url: str | None = None,
    create: bool = True,
    read_only: bool = False,
    fsync: bool = True,
    s3: S3Settings | None = None,
) -> T:
    """``build(index, objects)`` over the store at ``path``: a folder (SQLite inside it unless
    ``index_url`` names another database) or ``s3://bucket/prefix`` (the index at
    ``index_url``). Whatever ``build`` raises closes both parts and undoes what was created."""
    create = create and not read_only
    url = location.object_url(path)
    if url is not None:
        backend = location.url_backend(url, s3)
        try:
            index = Index.open(IndexSettings(url=location.url_index(url, index_url)), create=create)
            try:
                return build(index, backend)
            except BaseException:
                index.close()
                raise
        except BaseException:
            backend.close()
            raise
    where = location.locate(path, index_url, create=create, read_only=read_only)
    made = [] if where.root.is_dir() else [where.root]
    if create:
        where.root.mkdir(parents=True, exist_ok=True)
    made += [p for p in where.sqlite_files() if not p.exists()]
    try:
        index = Index.open(IndexSettings(url=where.index_url), create=create)
        try:
            built = build(index, LocalBackend(where.objects_dir, fsync=fsync))
        except BaseException:
            index.close()
            raise
    except BaseException:
        for p in reversed(made):
            with contextlib.suppress(OSError):
                p.rmdir() if p.is_dir() else p.unlink()
        raise
    if not read_only:
        location.remember_index_url(where)
    return built


@contextmanager
def schema_engine(path: str | os.PathLike[str], index_url: str | None) -> Iterator[Engine]:
    """An engine on the store's index that does not check its schema, for migrations."""
    url = location.object_url(path)
    if url is not None:
        index_url = location.url_index(url, index_url)
    else:
        index_url = location.locate(path, index_url, create=False).index_url
    engine = make_engine(IndexSettings(url=index_url))
    try:
        yield engine
    finally:
        engine.dispose()
