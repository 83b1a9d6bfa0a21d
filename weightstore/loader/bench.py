"""Measure swaps: per tier and per pair of refs, beside ``safetensors`` and a raw copy.

Targets are built from the snapshots' manifests (empty tensors of the right dtype and shape on
the device), so no model class is needed. Each figure is the p50 / p95 of ``iterations`` timed
runs; GB/s is bytes written into the target per second at the p50 (10^9 bytes).

- ``store cold``: the first full swap of a fresh loader with no caches (the OS page cache may
  already hold the objects; nothing here can drop it);
- ``store warm``: the following full swaps, still without caches: decode from the store;
- ``host cache``: full swaps from the host cache (pinned when CUDA is present);
- ``gpu cache``: full swaps from the GPU cache (CUDA only);
- ``pair a -> b``: swapping from ``a`` to ``b`` and back with warm caches: only what differs;
- ``pair (delta in place)``: ``a`` -> ``b`` with the caches off: what ``b`` stores as deltas of
  what the model holds (``a``) is applied to it, only the compressed deltas read (``read``);
- ``load_file``: ``safetensors.torch.load_file(path, device)`` of the same snapshot exported
  (``+ clone`` on the CPU, where load_file only maps the file);
- ``raw copy``: one copy of as many bytes: pinned host to device on CUDA, one single-threaded
  memcpy on the CPU.
"""

from __future__ import annotations

import functools
import itertools
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from weightstore.dtypes import dtype_info
from weightstore.errors import InvalidInput
from weightstore.loader.core import TaskLoader
from weightstore.store import WeightStore
from weightstore.transfer import host_copy
from weightstore.types import Snapshot

_BIG = 1 << 50  # "unbounded" budget for the tiers under test


@dataclass(frozen=True)
class SwapTiming:
    """One measured row."""

    kind: str  # "store cold", "store warm", "host cache", "gpu cache", "pair", "load_file", ...
    refs: str
    bytes: int
    iterations: int
    p50_ms: float
    p95_ms: float
    min_ms: float  # the best run: what the code can do when the machine lets it
    read_bytes: int = 0  # compressed bytes read for deltas applied in place

    @property
    def gb_per_s(self) -> float:
        return self.bytes / (self.p50_ms / 1e3) / 1e9 if self.p50_ms > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "gb_per_s": self.gb_per_s}


def percentile(times: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``times``, nearest rank."""
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def timing_row(kind: str, refs: str, nbytes: int, times: list[float], read: int = 0) -> SwapTiming:
    """A row from ``times`` in seconds (reported in ms)."""
    ms = [t * 1e3 for t in times]
    return SwapTiming(
        kind, refs, nbytes, len(ms), percentile(ms, 0.5), percentile(ms, 0.95), min(ms), read
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds ``fn`` takes, with ``device``'s queued work finished before and after."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def build_target(snaps: list[Snapshot], device: torch.device) -> dict[str, torch.Tensor]:
    """Empty tensors for every name in the snapshots' manifests (the first one's wins)."""
    target: dict[str, torch.Tensor] = {}
    for snap in snaps:
        for e in snap.weights:
            if e.name not in target:
                dt = dtype_info(e.dtype).torch_dtype
                target[e.name] = torch.empty(e.shape, dtype=dt, device=device)
    return target


BASELINES = ("load_file", "load_file + clone", "raw copy")
"""Rows that measure something other than weightstore, to compare against."""

TIERS = {
    "store cold": "the first swap of a fresh loader with empty caches: decoded from the store "
    "(objects possibly in the OS page cache)",
    "store warm": "later swaps, caches still off: decoded from the store again",
    "host cache": "swaps from decoded tensors kept in host memory (pinned with CUDA)",
    "gpu cache": "swaps from copies kept in GPU memory",
    "pair": "a -> b with warm caches: only the tensors that differ move",
    "pair (delta in place)": "a -> b, caches off: b's deltas of a applied to the model's own "
    "bytes ('read': compressed bytes read)",
    "load_file": "baseline: safetensors.torch.load_file of the same snapshot exported",
    "raw copy": "baseline: one plain copy of as many bytes",
}
"""What each row's measure means (the report's caption)."""


def phase_count(refs: int, cuda: bool) -> int:
    """How many phases :func:`measure_swaps` reports for ``refs`` refs."""
    return refs * (3 + cuda) + max(0, refs - 1)


def measure_swaps(
    store: WeightStore,
    refs: list[str],
    device: str = "cpu",
    iterations: int = 5,
    on_phase: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every figure above for ``refs`` on ``device``, as a JSON-able dict. ``on_phase`` is
    called as each phase starts (:func:`phase_count` of them), with what it measures."""
    phase = on_phase or (lambda what: None)
    if not refs:
        raise InvalidInput("name at least one ref to measure")
    if iterations < 1:
        raise InvalidInput("iterations must be >= 1")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInput("--device cuda was asked for but CUDA is not available here")
    snaps = [store.show(r) for r in refs]
    target = build_target(snaps, dev)
    rows: list[SwapTiming] = []

    def loader(gpu: int, host: int) -> TaskLoader:
        return TaskLoader(
            store, target, device=dev, gpu_cache=gpu, host_cache=host, strict=False, staging=_BIG
        )

    def full_swaps(ld: TaskLoader, ref: str, n: int) -> tuple[int, list[float]]:
        times, moved = [], 0
        for _ in range(n):
            ld.invalidate()
            start = time.perf_counter()
            moved = ld.activate(ref).bytes_moved
            _sync(dev)
            times.append(time.perf_counter() - start)
        return moved, times

    for ref in refs:
        phase(f"store, cold and warm: {ref}")
        with loader(0, 0) as ld:
            nbytes, times = full_swaps(ld, ref, iterations + 1)
        rows.append(timing_row("store cold", ref, nbytes, times[:1]))
        rows.append(timing_row("store warm", ref, nbytes, times[1:]))
        phase(f"host cache: {ref}")
        with loader(0, _BIG) as ld:
            ld.prefetch(ref).result()
            rows.append(timing_row("host cache", ref, *full_swaps(ld, ref, iterations)))
        if dev.type == "cuda":
            phase(f"gpu cache: {ref}")
            with loader(_BIG, _BIG) as ld:
                ld.prefetch(ref).result()
                rows.append(timing_row("gpu cache", ref, *full_swaps(ld, ref, iterations)))
    rows.extend(_pairs(store, refs, dev, iterations, loader, phase))
    rows.extend(_baselines(store, dict(zip(refs, snaps, strict=True)), dev, iterations, phase))
    return {
        "device": str(dev),
        "cuda": dev.type == "cuda",
        "note": ""
        if dev.type == "cuda"
        else "no GPU measured: CPU tiers only (host cache, store); the raw copy is a memcpy",
        "rows": [r.as_json() for r in rows],
    }


def _pairs(
    store: WeightStore,
    refs: list[str],
    dev: torch.device,
    iterations: int,
    make: Callable[[int, int], TaskLoader],
    phase: Callable[[str], None],
) -> list[SwapTiming]:
    """Swaps between consecutive refs (a -> b and back), caches warm: only what differs."""
    rows = []
    tier = "gpu cache" if dev.type == "cuda" else "host cache"
    for a, b in itertools.pairwise(refs):
        phase(f"pair: {a} -> {b}")
        with make(_BIG if dev.type == "cuda" else 0, _BIG) as ld:
            for r in (a, b):
                ld.prefetch(r).result()
            ld.activate(a)
            there: list[float] = []
            moved = 0
            for i in range(2 * iterations):
                ref = b if i % 2 == 0 else a
                start = time.perf_counter()
                report = ld.activate(ref)
                _sync(dev)
                if i % 2 == 0:
                    there.append(time.perf_counter() - start)
                    moved = report.bytes_moved
            rows.append(timing_row(f"pair ({tier})", f"{a} -> {b}", moved, there))
        if dev.type == "cpu":
            with make(0, 0) as ld:
                times = []
                for _ in range(iterations):
                    ld.activate(a)
                    start = time.perf_counter()
                    report = ld.activate(b)
                    times.append(time.perf_counter() - start)
                if report.bytes_delta_in_place:
                    rows.append(
                        timing_row(
                            "pair (delta in place)",
                            f"{a} -> {b}",
                            report.bytes_moved,
                            times,
                            report.delta_bytes_read,
                        )
                    )
    return rows


def _baselines(
    store: WeightStore,
    snaps: dict[str, Snapshot],
    dev: torch.device,
    iterations: int,
    phase: Callable[[str], None],
) -> list[SwapTiming]:
    """``load_file`` of each exported snapshot (+ ``clone`` on the CPU, where load_file only
    maps the file: the clone makes it read the bytes into memory of its own) and one raw
    copy of its size."""
    from safetensors.torch import load_file

    def load(path: Path) -> object:
        sd = load_file(str(path), device=str(dev))
        return sd if dev.type == "cuda" else {k: v.clone() for k, v in sd.items()}

    name = "load_file" if dev.type == "cuda" else "load_file + clone"
    rows = []
    with tempfile.TemporaryDirectory(prefix="weightstore-swap-") as tmp:
        for ref, snap in snaps.items():
            phase(f"baselines: {ref}")
            path = Path(tmp) / f"{snap.id}.safetensors"
            store.export(snap.id, path)
            nbytes = sum(e.nbytes for e in snap.weights)
            times = [timed(functools.partial(load, path), dev) for _ in range(iterations)]
            rows.append(timing_row(name, ref, nbytes, times))
            path.unlink()
            rows.append(timing_row("raw copy", ref, nbytes, _raw_copy(nbytes, dev, iterations)))
    return rows


def _raw_copy(nbytes: int, dev: torch.device, iterations: int) -> list[float]:
    """Times of one copy of ``nbytes``: pinned host -> device on CUDA, else one memcpy
    (``host_copy``: numpy's, single-threaded)."""
    cuda = dev.type == "cuda"
    src = torch.ones(nbytes, dtype=torch.uint8, pin_memory=cuda)
    dst = torch.zeros(nbytes, dtype=torch.uint8, device=dev)
    if cuda:
        dst.copy_(src)
        return [timed(lambda: dst.copy_(src, non_blocking=True), dev) for _ in range(iterations)]
    host_copy(src, dst)  # first touch of fresh pages is not what is measured
    return [timed(lambda: host_copy(src, dst), dev) for _ in range(iterations)]


__all__ = [
    "BASELINES",
    "TIERS",
    "SwapTiming",
    "build_target",
    "measure_swaps",
    "percentile",
    "phase_count",
]
