"""The one error tree of weightstore.

Every error a user can cause or meet derives from :class:`WeightstoreError` and also from the
built-in exception it resembles, so ``except LookupError`` keeps working for callers who do not
know this library. The CLI maps each class to an exit code (``exit_code``), the service to an HTTP
status (``http_status``). Messages say what happened and what to do.
"""

from __future__ import annotations


class WeightstoreError(Exception):
    """Root of every error raised on purpose by weightstore."""

    exit_code = 1
    http_status = 500


class NotFound(WeightstoreError, LookupError):
    """A task, snapshot, tag or object that does not exist."""

    exit_code = 3
    http_status = 404


class RefNotFound(NotFound):
    """A ref that names no snapshot."""


class ObjectNotFound(NotFound):
    """An object missing from the object backend."""


class InvalidRef(WeightstoreError, ValueError):
    """A ref, task or tag name that does not parse."""

    exit_code = 2
    http_status = 400


class AmbiguousRef(InvalidRef):
    """An id prefix that matches more than one snapshot."""

    http_status = 409


class InvalidInput(WeightstoreError, ValueError):
    """Input that cannot be stored or used: bad files, dtypes, shapes, arguments."""

    exit_code = 2
    http_status = 400


class CorruptFile(InvalidInput):
    """A weights file that is truncated or not in the format it claims."""


class PayloadTooLarge(InvalidInput):
    """A request body or upload over the service's size limit."""

    http_status = 413


class Unauthorized(WeightstoreError, PermissionError):
    """A request without a valid token where one is needed."""

    exit_code = 8
    http_status = 401


class Forbidden(Unauthorized):
    """A valid token whose scope does not allow the request."""

    http_status = 403


class UnsupportedDtype(InvalidInput):
    """A tensor dtype weightstore cannot store losslessly."""


class IncompatibleTensor(InvalidInput):
    """A stored tensor that does not fit the ``restore(into=...)`` target: name, shape, dtype."""


class UnsupportedLocation(InvalidInput):
    """A store location (URL scheme) that no object backend serves."""


class IndexRequired(InvalidInput):
    """An object location (``s3://...``) opened without the index URL it needs."""


class InputChanged(InvalidInput):
    """Weights that changed while they were being saved: the snapshot would not be what was read."""


class RequestTimeout(InvalidInput):
    """A request body that stopped arriving: a client holding a request without sending."""

    http_status = 408


class ObjectsMissing(InvalidInput):
    """A manifest sent before every object it names is stored at the receiver (never sent, or
    collected by a gc since it was sent): send them, then the manifest again."""


class Conflict(WeightstoreError, ValueError):
    """The request contradicts what is stored, such as a step saved twice in one task."""

    exit_code = 4
    http_status = 409


class StoreMismatch(Conflict):
    """An index and an object location that do not belong to the same store."""


class CorruptObject(WeightstoreError, IOError):
    """A stored object whose header, frames or digest do not check out. ``tensor`` and
    ``digest``: the tensor being read when it was found, and its object (set by the reader)."""

    exit_code = 5
    http_status = 500
    tensor: str | None = None
    digest: str | None = None


class ManifestMismatch(CorruptObject):
    """A snapshot manifest whose content does not hash to the id it carries: altered in
    transit or at rest. A server answers 400 to a client that sends one."""

    http_status = 400


class StorageError(WeightstoreError, OSError):
    """The object backend or the index failed for a reason outside weightstore's control."""

    exit_code = 5
    http_status = 503


class TransientStorageError(StorageError):
    """A storage failure that may pass if the call is tried again: a 5xx or throttling answer,
    a timeout, a reset connection. Retries have already been spent when a caller sees it."""


class SchemaOutdated(WeightstoreError, RuntimeError):
    """The index schema is older (or newer) than this version of weightstore expects."""

    exit_code = 6
    http_status = 503


class LockHeld(WeightstoreError, RuntimeError):
    """Another process holds a lock this operation needs (for example a running gc)."""

    exit_code = 7
    http_status = 423


class SwapFailed(WeightstoreError, RuntimeError):
    """A swap failed after it began writing into the model: the model holds a mix of old and
    new weights and ``TaskLoader.active`` is None until a swap succeeds."""

    exit_code = 5
    http_status = 500


class PendingSaveFailed(WeightstoreError, RuntimeError):
    """Raised by ``wait()`` / ``close()``: a background save failed (its Future holds why; the
    first failure is the cause). It committed nothing."""


class InterruptedAfterCommit(KeyboardInterrupt):
    """Ctrl-C arrived once a save had committed: the snapshot ``snapshot_id`` is stored.

    A KeyboardInterrupt (so the interrupt still stops the caller), not a WeightstoreError."""

    def __init__(self, snapshot_id: str) -> None:
        super().__init__(f"interrupted after snapshot {snapshot_id[:12]} was committed")
        self.snapshot_id = snapshot_id
