"""Explicit settings objects: everything tunable is passed in, nothing is read at import."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from weightstore.errors import InvalidInput

DECODERS = ("auto", "numpy")
DeviceDecode = Literal["auto", "always", "never"]
DECODER_ENV = "WEIGHTSTORE_DECODER"


@dataclass(frozen=True)
class CodecSettings:
    """How objects are encoded.

    ``frame_size``: uncompressed bytes per independent zstd frame; 64 KiB keeps GPU batched
    decoding fast (see docs/design.md). ``level``: zstd level, or ``None`` for the tuned fast
    parameters. ``max_chain_depth``: longest delta chain a new object may end; past it the
    object deltas against the root of its base's chain instead (docs/design.md has the
    measurements behind the default). ``delta_accept_ratio``: a delta at most this fraction
    of the raw size is kept without also trying a plain encoding. ``decoder``: ``"auto"``
    decodes with the compiled kernel when it was built, ``"numpy"`` always with the numpy
    fallback (the environment variable ``WEIGHTSTORE_DECODER`` overrides it).
    ``plane_min_saving``: a byte plane whose sampled frames zstd does not shrink by this
    fraction is stored uncompressed, which costs nothing to decode (docs/design.md,
    "Decoding speed", measures 0.10 against the default).
    """

    frame_size: int = 64 * 1024
    level: int | None = None
    max_chain_depth: int = 4
    delta_accept_ratio: float = 0.5
    decoder: str = "auto"
    plane_min_saving: float = 0.01


@dataclass(frozen=True)
class StoreSettings:
    """Settings of a :class:`weightstore.WeightStore`.

    ``threads``: worker threads for encoding, decoding and hashing (default: every core).
    ``gc_grace_seconds``: default age below which gc spares unreferenced objects.
    ``fsync``: make object writes durable before the index commits (turn off only for tests).
    ``verify_reads``: re-derive every tensor's digest on restore, so a flipped bit on disk is
    an error, never silently wrong weights (headers and frame sizes are checked always).
    ``restore_staging_bytes``: ``restore(into=...)`` decodes a snapshot up to this size into
    staging memory before writing any target, so a corrupt object cannot leave a model half
    restored; larger ones are decoded straight into their targets.
    ``max_pending_saves`` / ``max_pending_bytes``: how many ``save_async`` saves may be captured
    and not yet committed, and how many bytes their copies may hold, before the next waits.
    ``device_decode``: where tensors bound for a device are decoded: "auto" (on a CUDA device
    by nvCOMP when ``weightstore[gpu]`` is installed and the tensor has at least
    ``device_decode_min_bytes``; else by the CPU codec and copied), "always" (torch ops and the
    batched decompressor wherever the target is, the CPU included: how the tests run the GPU
    path here) or "never".
    """

    codec: CodecSettings = CodecSettings()
    threads: int = 0
    gc_grace_seconds: float = 3600.0
    fsync: bool = True
    verify_reads: bool = True
    restore_staging_bytes: int = 1 << 30
    max_pending_saves: int = 2
    max_pending_bytes: int = 8 << 30
    device_decode: DeviceDecode = "auto"
    device_decode_min_bytes: int = 4 << 20

    def __post_init__(self) -> None:
        if self.device_decode not in ("auto", "always", "never"):
            raise InvalidInput(
                f"device_decode must be auto, always or never, not {self.device_decode!r}"
            )

    def worker_count(self) -> int:
        return self.threads if self.threads > 0 else max(1, os.cpu_count() or 1)
