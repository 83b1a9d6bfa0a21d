"""The contract every object backend keeps: opaque byte blobs stored under validated string keys."""

from __future__ import annotations

import abc
import operator
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

from weightstore.errors import InvalidInput

# A TypeVar rather than typing.Self, which Python 3.10 lacks.
_Backend = TypeVar("_Backend", bound="ObjectBackend")

__all__ = [
    "KEY_PATTERN",
    "ObjectBackend",
    "ObjectInfo",
    "byte_view",
    "validate_key",
    "validate_range",
]

#: Keys are object digests in practice; the wider alphabet leaves room for other names while
#: ruling out separators, "." and ".." and leading dots, so a key can never be a path trick.
KEY_PATTERN = re.compile(r"[0-9a-z][0-9a-z._-]{0,127}")

_KEY_RULE = (
    "keys are 1 to 128 characters of lowercase letters, digits, '.', '_' or '-', "
    "starting with a letter or digit"
)


def _short_repr(value: object, limit: int = 80) -> str:
    # A hostile or buggy caller may pass a megabyte-long key; the message must stay readable.
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_key(key: object) -> str:
    """Return ``key`` unchanged if it is a valid object key, else raise ``InvalidInput``."""
    # fullmatch, not ``^...$``: "$" also matches before a trailing newline.
    if not isinstance(key, str) or KEY_PATTERN.fullmatch(key) is None:
        raise InvalidInput(f"invalid object key {_short_repr(key)}: {_KEY_RULE}")
    return key


def validate_range(start: int, length: int) -> tuple[int, int]:
    """Return ``(start, length)`` as ints if both are non-negative integers, else raise."""
    try:
        checked = (operator.index(start), operator.index(length))
    except TypeError:
        raise InvalidInput(
            f"byte range start and length must be integers, got {_short_repr(start)} "
            f"and {_short_repr(length)}"
        ) from None
    if checked[0] < 0 or checked[1] < 0:
        raise InvalidInput(
            f"byte range start and length must not be negative, got start={checked[0]} "
            f"length={checked[1]}"
        )
    return checked


def byte_view(data: bytes | bytearray | memoryview) -> memoryview:
    """Return a flat unsigned-byte view of ``data``; raise ``InvalidInput`` if it is not bytes-like.

    The caller should release the view (``with byte_view(data) as view:``) so a bytearray passed
    in can be resized again afterwards.
    """
    try:
        view = memoryview(data)
    except TypeError:
        raise InvalidInput(
            f"object data must be bytes, bytearray or memoryview, got {type(data).__name__}"
        ) from None
    with view:
        if view.c_contiguous:
            return view.cast("B")
        # Strided views cannot be cast in place; one copy is the price of accepting them.
        return memoryview(view.tobytes())


@dataclass(frozen=True)
class ObjectInfo:
    """What a backend knows about one stored object."""

    key: str
    size: int  #: length in bytes
    modified: float  #: POSIX seconds of the last write (``put``) of this key


class ObjectBackend(abc.ABC):
    """A store of opaque byte blobs under string keys; this class's docstrings are the contract.

    Every method that takes a key first checks it with :func:`validate_key` and raises
    :class:`~weightstore.errors.InvalidInput` for a bad one, changing nothing. Methods that
    need the object to exist raise :class:`~weightstore.errors.ObjectNotFound` (also a
    ``LookupError``) naming the key. Failures outside weightstore's control (disk full,
    permissions, a broken mount) raise :class:`~weightstore.errors.StorageError`.
    Backends are safe to use from several threads at once.
    """

    @abc.abstractmethod
    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        """Store ``data`` under ``key``.

        When this returns, the object is durable and readable in full. Readers never see a
        partial object. Putting an existing key replaces it atomically (callers only ever
        re-put identical bytes) and refreshes its ``modified`` time. The bytes are copied:
        changing ``data`` afterwards does not change the stored object.
        """

    def put_many(self, items: Sequence[tuple[str, bytes | bytearray | memoryview]]) -> None:
        """:meth:`put` for several objects; backends may batch the durability work. When it
        returns every object is durable; if it raises, each object is there whole or absent.
        A bad key anywhere in ``items`` is rejected before anything is written."""
        for key, data in [(validate_key(key), data) for key, data in items]:
            self.put(key, data)

    @abc.abstractmethod
    def get(self, key: str) -> bytes:
        """Return the whole object; raise ``ObjectNotFound`` if there is none."""

    def get_view(self, key: str) -> bytes | memoryview:
        """Return the whole object as a read-only buffer, like :meth:`get`.

        Backends may return a memory map instead of a copy (valid for as long as it is
        referenced), which saves a copy of every byte on restore. Same errors as ``get``.
        """
        return self.get(key)

    @abc.abstractmethod
    def get_range(self, key: str, start: int, length: int) -> bytes:
        """Return bytes ``[start, start + length)`` of the object, clipped at its end.

        Like an HTTP Range request: a range running past the end returns what there is, and a
        ``start`` at or beyond the end returns ``b""``. A negative (or non-integer) ``start`` or
        ``length`` raises ``InvalidInput``; a missing object raises ``ObjectNotFound``.
        Only the requested bytes are read.
        """

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """Return whether an object is stored under ``key``."""

    def exists_many(self, keys: Iterable[str]) -> set[str]:
        """Return the keys of ``keys`` under which an object is stored; every key is checked
        before any is looked up. Backends where each lookup is a request batch them."""
        checked = {validate_key(key) for key in keys}
        return {key for key in checked if self.exists(key)}

    def size(self, key: str) -> int:
        """Return the object's length in bytes; raise ``ObjectNotFound`` if there is none."""
        return self.stat(key).size

    @abc.abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Return the object's :class:`ObjectInfo`; raise ``ObjectNotFound`` if there is none."""

    @abc.abstractmethod
    def delete(self, key: str) -> bool:
        """Remove the object; return True if it existed, False if it was already absent."""

    @abc.abstractmethod
    def iterate(self) -> Iterator[ObjectInfo]:
        """Yield an :class:`ObjectInfo` for every stored object, in no particular order.

        Half-written objects of puts still in flight (or of crashed writers) are never listed.
        Objects put or deleted while the iteration runs may or may not appear.
        """

    @abc.abstractmethod
    def describe(self) -> str:
        """Return where the objects live, for messages: ``"local:/path"``, ``"memory"``."""

    @abc.abstractmethod
    def read_store_id(self) -> str | None:
        """Return the id of the store these objects belong to, or None if none was written.

        The id lives beside the objects but outside the key space: it is never listed by
        :meth:`iterate` and no key can overwrite it.
        """

    @abc.abstractmethod
    def write_store_id(self, store_id: str) -> None:
        """Record the store's id durably (replacing any), creating the location if needed."""

    def is_empty(self) -> bool:
        """Return whether no object is stored."""
        return next(iter(self.iterate()), None) is None

    def cleanup_temp(self, older_than_seconds: float = 3600) -> int:
        """Remove leftovers of puts that died (temp files, unfinished uploads) last touched over
        ``older_than_seconds`` ago; return how many. The default has none to remove."""
        return 0

    def close(self) -> None:  # noqa: B027 - a deliberate no-op default, not a forgotten abstract
        """Release resources the backend holds; the default holds none and does nothing."""

    def __enter__(self: _Backend) -> _Backend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
