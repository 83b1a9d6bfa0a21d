"""Checking what callers hand in, before anything is written.

Every limit here exists because something downstream breaks without it, and breaks the same
way on SQLite and PostgreSQL only if it is checked up front: PostgreSQL text cannot hold NUL,
a btree key holds at most ~2.7 KB (tensor names are part of a key), BIGINT ends at 2**63-1,
and Python's JSON code recurses, so a deeply nested document fails with RecursionError when it
is parsed or printed, possibly long after it was stored. docs/design.md ("Bad input and
destinations") lists the rules.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from weightstore.errors import InvalidInput, InvalidRef
from weightstore.refs import check_name, looks_like_id

INT64_MAX = 2**63 - 1
MAX_TENSOR_NAME = 1024
"""Bytes (UTF-8) in a tensor name; well under PostgreSQL's btree key limit."""
MAX_MESSAGE_BYTES = 64 * 1024
MAX_METADATA_BYTES = 1 << 20
"""Bytes of a snapshot's metadata as compact JSON."""
MAX_JSON_DEPTH = 64
"""Nesting of lists and objects in metadata."""
MAX_GRACE_SECONDS = 100 * 365 * 24 * 3600.0


def check_new_task(task: object) -> str:
    """A name a snapshot may be saved under: a valid task name that cannot be mistaken for
    a snapshot id prefix (refs read a bare word as a task first, so such a task would shadow
    the snapshot whose id starts that way)."""
    name = check_name(task)  # type: ignore[arg-type]
    if looks_like_id(name):
        raise InvalidRef(
            f"task name {name!r} reads as a snapshot id (4-64 hex digits): add a letter "
            f"outside a-f or a '-', e.g. 'task-{name}'"
        )
    return name


def check_step(step: object) -> int | None:
    """``step`` if it is None or an integer that the index's BIGINT column holds."""
    if step is None:
        return None
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= INT64_MAX:
        raise InvalidInput(f"step must be an integer from 0 to {INT64_MAX}, not {step!r}")
    return step


def check_tags(tags: Iterable[str]) -> list[str]:
    """Valid, distinct tag names; a single string is refused rather than read as its letters."""
    if isinstance(tags, (str, bytes)):
        raise InvalidInput(
            f"tags must be a list of names, not the string {tags!r}: pass [{tags!r}]"
        )
    return [check_name(t, "tag") for t in dict.fromkeys(tags)]


def check_text(value: object, what: str, max_bytes: int) -> str:
    """``value`` if it is a string the index can store: no NUL, at most ``max_bytes`` UTF-8."""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string, not {type(value).__name__}")
    if "\x00" in value:
        raise InvalidInput(f"{what} {_short(value)} contains a NUL character")
    try:
        size = len(value.encode())
    except UnicodeEncodeError as e:
        raise InvalidInput(f"{what} {_short(value)} is not valid Unicode ({e.reason})") from e
    if size > max_bytes:
        raise InvalidInput(f"{what} {_short(value)} is {size} bytes; the limit is {max_bytes}")
    return value


def check_tensor_name(name: object) -> str:
    """A tensor name the index can store."""
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"tensor names must be non-empty strings, got {_short(name)}")
    return check_text(name, "tensor name", MAX_TENSOR_NAME)


def check_message(message: object) -> str:
    return check_text(message, "message", MAX_MESSAGE_BYTES)


def check_metadata(metadata: object) -> tuple[dict[str, Any], str]:
    """The metadata as a dict and as compact JSON, if it is a JSON object the index can store
    and read back: string keys, finite numbers, no NUL, bounded nesting and size."""
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, Mapping):
        raise InvalidInput(
            f"metadata must be a mapping of names to JSON values, not {type(metadata).__name__}"
        )
    _check_json_value(metadata)
    text = json.dumps(metadata, allow_nan=False, separators=(",", ":"))
    if len(text.encode()) > MAX_METADATA_BYTES:
        raise InvalidInput(
            f"metadata is {len(text.encode())} bytes as JSON; the limit is {MAX_METADATA_BYTES}"
        )
    return dict(metadata), text


def _check_json_value(root: object) -> None:
    # Iterative, so that a deep (or self-containing) value cannot exhaust the stack.
    stack: list[tuple[object, int]] = [(root, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (Mapping, list, tuple)):
            if depth > MAX_JSON_DEPTH:
                raise InvalidInput(f"metadata is nested more than {MAX_JSON_DEPTH} levels deep")
            if isinstance(value, Mapping):
                for key, item in value.items():
                    if not isinstance(key, str):
                        raise InvalidInput(f"metadata keys must be strings, not {key!r}")
                    check_text(key, "metadata key", MAX_METADATA_BYTES)
                    stack.append((item, depth + 1))
            else:
                stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            check_text(value, "metadata value", MAX_METADATA_BYTES)
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidInput(f"metadata numbers must be finite, not {value}")
        elif value is not None and not isinstance(value, (bool, int)):
            raise InvalidInput(
                f"metadata values must be JSON (objects, lists, strings, numbers, booleans, "
                f"null), not {type(value).__name__}"
            )


def check_grace(seconds: object) -> float:
    """A gc grace period: a finite number of seconds from 0 to about a century."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise InvalidInput(f"grace must be a number of seconds, not {seconds!r}")
    if not 0 <= seconds <= MAX_GRACE_SECONDS:  # also false for NaN
        raise InvalidInput(
            f"grace must be from 0 to {MAX_GRACE_SECONDS:.0f} seconds, not {seconds}"
        )
    return float(seconds)


def load_json(text: str | bytes, what: str, error: type[InvalidInput] = InvalidInput) -> Any:
    """Parse JSON from outside, raising ``error`` (never RecursionError) if it does not parse."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        reason = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise error(f"{what} is not valid JSON: {reason}") from e


def load_json_object(
    text: str | bytes, what: str, error: type[InvalidInput] = InvalidInput
) -> dict[str, Any]:
    """:func:`load_json` for a document that must be a JSON object."""
    value = load_json(text, what, error)
    if not isinstance(value, dict):
        raise error(f"{what} must hold a JSON object, not a {type(value).__name__}")
    return value


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}...({len(text)} characters)"
