"""Where a store lives and what belongs to it: its folder, its config file, its index URL, and
the identity that binds an index to its objects.

Rules (docs/design.md, "Store identity"):

- URLs are built with SQLAlchemy's ``URL.create``, never by pasting a path into a string, so a
  ``?`` or ``%`` in a folder name stays part of the path.
- A relative SQLite URL in the config resolves against the store's folder, not the cwd.
- An ``index_url`` given by the caller is remembered only after the index opened and passed
  the identity check: a failing URL is never written to the config.
- The store's id is written into both the index and the object location. Two different ids, an
  empty index beside stored objects, or an index whose objects are not these, are refused.
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from weightstore.errors import (
    IndexRequired,
    InvalidInput,
    NotFound,
    StoreMismatch,
    UnsupportedLocation,
)
from weightstore.index import Index
from weightstore.inputs import load_json_object
from weightstore.objects import ObjectBackend
from weightstore.objects.s3config import S3Settings, parse_s3_url

CONFIG_FILE = "weightstore.json"
INDEX_FILE = "index.sqlite"
OBJECTS_DIR = "objects"

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
#: URL schemes of object locations that a backend serves (a store's index is then elsewhere).
OBJECT_SCHEMES = ("s3",)
# How many stored objects are looked up in the index to decide whether the two belong together
# when one of them carries no id yet (a store made before ids, or a crash while creating one).
_SAMPLE = 64


@dataclass(frozen=True)
class StoreLocation:
    """A store's folder and the index URL to open; ``remember`` is the URL to write into the
    config once the store opened (None: the config stays as it is)."""

    root: Path
    index_url: str
    remember: str | None = None

    @property
    def objects_dir(self) -> Path:
        return self.root / OBJECTS_DIR

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    def sqlite_files(self) -> list[Path]:
        """The files of a SQLite index (database, WAL, shared memory); none for a server."""
        url = make_url(self.index_url)
        if url.get_backend_name() != "sqlite" or not url.database:
            return []
        name = url.database
        if name.startswith("file:"):
            name = urllib.parse.unquote(name[5:])
        if name == ":memory:":
            return []
        return [Path(name + suffix) for suffix in ("", "-wal", "-shm", "-journal")]


def sqlite_url(path: Path, *, read_only: bool = False) -> str:
    """The SQLAlchemy URL of the SQLite file ``path``; ``read_only`` opens it immutable, for
    a store on a read-only filesystem (no lock or WAL files can be made there)."""
    if not read_only:
        url = URL.create("sqlite", database=str(path))
    else:
        uri = "file:" + urllib.parse.quote(str(path))
        url = URL.create(
            "sqlite", database=uri, query={"mode": "ro", "immutable": "1", "uri": "true"}
        )
    return url.render_as_string(hide_password=False)


def locate(
    path: str | os.PathLike[str],
    index_url: str | None = None,
    *,
    create: bool = True,
    read_only: bool = False,
) -> StoreLocation:
    """Find the store at ``path`` (a folder) and the index URL to open, creating nothing."""
    text = os.fspath(path)
    if not isinstance(text, str) or not text:
        raise InvalidInput(f"a store path must be a non-empty folder path, not {path!r}")
    if _SCHEME.match(text):
        scheme = text.split("://", 1)[0]
        if scheme in ("http", "https"):
            raise UnsupportedLocation(
                f"cannot open {text!r} as a local store: a weightstore service is opened with "
                "weightstore.remote.open_store(url, token=...) (the CLI's push / pull take it)"
            )
        raise UnsupportedLocation(
            f"cannot open {text!r}: no object backend serves {scheme}://; a store is a local "
            "folder path, or s3://bucket/prefix with --index-url"
        )
    root = Path(os.path.abspath(text))
    if root.exists() and not root.is_dir():
        raise InvalidInput(f"{root} is not a folder: a store is a folder")
    if not root.is_dir() and not create:
        raise NotFound(f"no store at {root}: run `weightstore init {text}` first")
    saved = read_config(root)
    if index_url is not None:
        given = _absolute_sqlite(_check_url(index_url), Path.cwd())
        remember = given if given != saved.get("index_url") else None
        return StoreLocation(root, given, remember)
    if saved.get("index_url"):
        return StoreLocation(root, _absolute_sqlite(_check_url(saved["index_url"]), root))
    index_file = root / INDEX_FILE
    if not create and not index_file.is_file():
        raise NotFound(
            f"no store at {root}: it has no {INDEX_FILE} (run `weightstore init {text}` to "
            "make one, or pass --index-url if its index lives elsewhere)"
        )
    writable = os.access(root, os.W_OK)
    return StoreLocation(root, sqlite_url(index_file, read_only=read_only and not writable))


def object_url(path: str | os.PathLike[str]) -> str | None:
    """``path`` if it is the URL of an object location a backend serves (``s3://...``),
    checked; None for a folder path (which :func:`locate` handles)."""
    text = os.fspath(path)
    if isinstance(text, str) and text.startswith(tuple(f"{s}://" for s in OBJECT_SCHEMES)):
        parse_s3_url(text)
        return text
    return None


def url_index(url: str, index_url: str | None) -> str:
    """The index URL for the object location ``url``: required, as a bucket holds no index."""
    if index_url is None:
        raise IndexRequired(
            f"{url} holds only objects: pass the index database too, with --index-url (or "
            "WEIGHTSTORE_INDEX_URL), e.g. postgresql+psycopg://user@host/db"
        )
    return _absolute_sqlite(_check_url(index_url), Path.cwd())


def url_backend(url: str, s3: S3Settings | None = None) -> ObjectBackend:
    """The object backend serving ``url``: ``s3`` (its location replaced by ``url``), or
    settings from the AWS environment variables, read now."""
    settings = s3.with_location(url) if s3 is not None else S3Settings.from_environ(url)
    try:
        from weightstore.objects.s3 import S3Backend
    except ImportError as e:
        raise UnsupportedLocation(
            f"cannot open {url}: the S3 backend needs boto3 (pip install 'weightstore[s3]')"
        ) from e
    return S3Backend(settings)


def read_config(root: Path) -> dict[str, Any]:
    """The store's config (empty when it has none); a config that is not a JSON object with a
    string ``index_url`` is refused."""
    config = root / CONFIG_FILE
    if not config.is_file():
        return {}
    try:
        text = config.read_bytes()
    except OSError as e:
        raise InvalidInput(f"{config} cannot be read: {e}") from e
    saved = load_json_object(text, str(config))
    if "index_url" in saved and not isinstance(saved["index_url"], str):
        raise InvalidInput(f"{config}: index_url must be a string")
    return saved


def remember_index_url(location: StoreLocation) -> None:
    """Write the caller's index URL into the config (call once the store opened)."""
    if location.remember is None:
        return
    saved = read_config(location.root)
    write_atomically(
        location.config, json.dumps({**saved, "index_url": location.remember}, indent=2)
    )


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` so that a crash leaves the old or the new file, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with tmp.open("w") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _check_url(url: str) -> str:
    try:
        make_url(url)
    except ArgumentError as e:
        raise InvalidInput(f"invalid index URL {url!r}: {e}") from e
    return url


def _absolute_sqlite(url: str, against: Path) -> str:
    """A SQLite URL with a relative file path made absolute against ``against``."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return url
    if parsed.database == ":memory:" or parsed.database.startswith("file:"):
        return url
    if os.path.isabs(parsed.database):
        return url
    return parsed.set(database=str(against / parsed.database)).render_as_string(hide_password=False)


# ----------------------------------------------------------------------------------- identity


def bind(index: Index, objects: ObjectBackend, *, write: bool) -> str | None:
    """Check that ``index`` and ``objects`` belong to one store and return its id; with
    ``write``, record the id on whichever side lacks it (a new store gets a new id).

    Raises :class:`StoreMismatch` when they do not belong together; changes nothing then.
    """
    index_id, objects_id = index.store_id(), objects.read_store_id()
    where = f"the index at {_describe(index)} and the objects at {objects.describe()}"
    if index_id is not None and objects_id is not None:
        if index_id != objects_id:
            raise StoreMismatch(
                f"{where} belong to different stores (ids {index_id[:12]} and "
                f"{objects_id[:12]}): open the store with the index it was created with "
                "(--index-url, or the store's weightstore.json); nothing was changed"
            )
        return index_id
    _check_unbound(index, objects, index_id, objects_id, where)
    store_id = index_id or objects_id
    if not write:
        return store_id
    store_id = index.claim_store_id(store_id or uuid.uuid4().hex)
    objects.write_store_id(store_id)
    return store_id


def require_bound(index: Index, objects: ObjectBackend) -> str:
    """The store's id, when both sides carry it and agree (gc runs only then)."""
    index_id, objects_id = index.store_id(), objects.read_store_id()
    if index_id is None or index_id != objects_id:
        raise StoreMismatch(
            f"the index at {_describe(index)} (store id {index_id}) and the objects at "
            f"{objects.describe()} (store id {objects_id}) are not known to belong together: "
            "refusing to delete anything; open the store normally once to record its id"
        )
    return index_id


def _check_unbound(
    index: Index,
    objects: ObjectBackend,
    index_id: str | None,
    objects_id: str | None,
    where: str,
) -> None:
    """One side (or both) has no id yet: accept only evidence that they belong together."""
    has_rows, has_blobs = index.holds_data(), not objects.is_empty()
    if not has_blobs:
        if has_rows and index_id is not None:
            raise StoreMismatch(
                f"{where} do not belong together: the index belongs to store "
                f"{index_id[:12]}, whose objects are elsewhere; pass the matching store path"
            )
        return
    if not has_rows:
        raise StoreMismatch(
            f"{where} do not belong together: the index is empty but the objects are not (was "
            "the index deleted or replaced? restore it from a backup, or pass the --index-url "
            "the store was created with); refusing to use it, as gc would delete every object"
        )
    sample = []
    for info in objects.iterate():
        sample.append(info.key)
        if len(sample) >= _SAMPLE:
            break
    known = index.get_objects(sample)
    if 2 * len(known) < len(sample):
        raise StoreMismatch(
            f"{where} do not belong together: {len(sample) - len(known)} of {len(sample)} "
            "sampled objects are unknown to the index; pass the index the store was created with"
        )


def _describe(index: Index) -> str:
    return index.engine.url.render_as_string(hide_password=True)
