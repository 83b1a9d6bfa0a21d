"""The one ref parser, shared by the API, the CLI and the service.

Grammar (task and tag names: letters, digits and ``._-/``; no leading ``-`` or ``/``)::

    task            the task's latest snapshot
    task@1200       the task's snapshot saved with step=1200
    task:best       the snapshot the task's tag "best" points at
    3fa9c1          a unique prefix (4 to 64 hex digits) of a snapshot id

A bare word is tried as a task name first and as an id prefix second, like git tries a branch
before an abbreviated commit.

Names become URL path segments (``/v1/snapshots/{ref}/tags/{tag}``, the Hub routes'
``/{repo}/resolve/{revision}/...``), and routes that take a name with ``/`` in it match
greedily. So a segment of a name may not be one of the words those routes put after a name
(:data:`RESERVED_SEGMENTS`): every URL then has one reading.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from weightstore.errors import InvalidRef

_NAME = r"[A-Za-z0-9_.][A-Za-z0-9_./-]{0,199}"
_NAME_RE = re.compile(_NAME)
_REF_RE = re.compile(rf"(?P<task>{_NAME})(?:@(?P<step>-?[0-9]+)|:(?P<tag>{_NAME}))?")
_HEX_RE = re.compile(r"[0-9a-f]{4,64}")

RefKind = Literal["latest", "step", "tag"]

#: Words the REST and Hub routes put after a name; no segment of a task or tag name may be one.
RESERVED_SEGMENTS = frozenset(
    {"tags", "diff", "safetensors", "tensors", "snapshots", "resolve", "revision", "tree"}
    | {"paths-info"}
)


@dataclass(frozen=True)
class Ref:
    """A parsed ref. ``id_prefix`` is set when the text could also be an id prefix."""

    text: str
    kind: RefKind
    task: str
    step: int | None = None
    tag: str | None = None
    id_prefix: str | None = None

    def __str__(self) -> str:
        return self.text


def _bad_path(name: str) -> bool:
    # Names may become path segments (URLs, export folders): no empty, "." or ".." segments.
    return any(seg in ("", ".", "..") for seg in name.split("/"))


def _reserved(name: str) -> str | None:
    return next((seg for seg in name.split("/") if seg in RESERVED_SEGMENTS), None)


def check_name(name: str, what: str = "task") -> str:
    """Return ``name`` if it is a valid task or tag name, else raise :class:`InvalidRef`."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or _bad_path(name):
        shown = repr(name) if len(repr(name)) <= 80 else f"{repr(name)[:60]}... ({len(name)} long)"
        raise InvalidRef(
            f"invalid {what} name {shown}: use 1-200 letters, digits or '._-/', "
            "not starting with '-' or '/', without empty, '.' or '..' path segments"
        )
    if what == "tag" and name.isdigit():
        raise InvalidRef(f"invalid tag name {name!r}: a tag cannot be all digits")
    if "/" in name and (word := _reserved(name)) is not None:
        raise InvalidRef(
            f"invalid {what} name {name!r}: {word!r} is reserved as a segment of a name with "
            "'/' (it is a word of the service's URLs)"
        )
    return name


def looks_like_id(name: str) -> bool:
    """Whether ``name`` would also read as a snapshot id prefix (4 to 64 hex digits)."""
    return _HEX_RE.fullmatch(name) is not None


def parse_ref(text: str) -> Ref:
    """Parse ``text`` into a :class:`Ref` or raise :class:`InvalidRef` saying what is accepted."""
    if not isinstance(text, str):
        raise InvalidRef(f"a ref must be a string, not {type(text).__name__}")
    m = _REF_RE.fullmatch(text)
    if m is None or _bad_path(m.group("task")):
        raise InvalidRef(
            f"invalid ref {text!r}: expected 'task', 'task@STEP', 'task:TAG' or an id prefix"
        )
    task = m.group("task")
    if "/" in task and (word := _reserved(task)) is not None:
        raise InvalidRef(
            f"invalid ref {text!r}: {word!r} is reserved as a segment of a task name with '/'"
        )
    if m.group("step") is not None:
        return Ref(text, "step", task, step=int(m.group("step")))
    if m.group("tag") is not None:
        return Ref(text, "tag", task, tag=check_name(m.group("tag"), "tag"))
    return Ref(text, "latest", task, id_prefix=task if _HEX_RE.fullmatch(task) else None)
