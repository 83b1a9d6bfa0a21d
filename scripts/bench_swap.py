"""Swap benchmark: TaskLoader swaps into a live model beside safetensors and a raw copy.

Models: the real all-MiniLM-L6-v2 with its fine-tunes from ``scripts/_finetune.py`` (cached
under ``--cache``), and a synthetic transformer-shaped model of ``--synthetic-mb`` from
``scripts/bench_restore.py`` (a "fine-tune" nudges every weight; the frozen-backbone variant
changes only a new ``head.weight``). Each in fp32 and bf16. Per model and dtype, three
snapshots are saved (``base``; ``head``: the base backbone bit-for-bit plus a new head; ``ft``: a
full fine-tune stored as deltas) and measured by ``weightstore.loader.bench.measure_swaps``
(the code behind ``weightstore report swap``): full swaps from the store (cold, warm), from the
host cache and, on CUDA, the GPU cache; swaps base -> head (frozen backbone: only the head
moves) and head -> ft (every tensor moves); ``load_file`` (+ clone on the CPU) and a raw copy
(memcpy on the CPU, pinned host -> device on CUDA) of the same bytes.

Targets checked (issue 6): swap from the host cache >= 0.8x the raw copy's bandwidth; a
frozen-backbone swap < 2 ms + changed bytes / raw-copy bandwidth; on CUDA, GPU cache >= 1 TB/s,
pinned host cache >= 50 GB/s, cold from the store >= 2x ``load_file(cuda)``.

    python scripts/bench_swap.py [--device cuda] [--synthetic-mb 1024] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import _finetune
import bench_restore
import torch

from weightstore import StoreSettings, WeightStore
from weightstore.loader.bench import measure_swaps

SD = dict[str, torch.Tensor]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def log(msg: str) -> None:
    print(f"[bench_swap] {msg}", file=sys.stderr, flush=True)


def minilm(cache: Path, quick: bool, dtype: torch.dtype) -> dict[str, SD]:
    """``base``: the shipped backbone with the fine-tune's classifier (the shipped file has
    none), so that ``base`` and ``head`` are two tasks on one frozen backbone."""
    _finetune.ensure_workloads(cache, quick)
    base = _finetune.load_workload(cache, quick, "base", dtype)
    ft = _finetune.load_workload(cache, quick, "ft", dtype)
    base.update({k: v.clone() for k, v in ft.items() if k.startswith("classifier.")})
    return {
        "base": base,
        "head": _finetune.load_workload(cache, quick, "frozen_head", dtype),
        "ft": ft,
    }


def synthetic(size_mb: int, dtype: torch.dtype) -> dict[str, SD]:
    g = torch.Generator().manual_seed(7)
    base = bench_restore.make_weights(size_mb, dtype)
    # The MiniLM fine-tunes carry a classifier head the base lacks; so do these.
    base["head.weight"] = torch.randn(16, 1024, generator=g).to(dtype)
    head = dict(base, **{"head.weight": torch.randn(16, 1024, generator=g).to(dtype)})
    return {"base": base, "head": head, "ft": bench_restore.nudge(base)}


def figures(result: dict[str, Any], sds: dict[str, SD]) -> dict[str, Any]:
    """The rows that the targets are about, and their ratios."""
    rows = {(r["kind"], r["refs"]): r for r in result["rows"]}
    cuda = result["cuda"]
    raw = rows[("raw copy", "ft")]
    bandwidth = raw["gb_per_s"] * 1e9
    frozen = rows[(f"pair ({'gpu' if cuda else 'host'} cache)", "base -> head")]
    full = rows[(f"pair ({'gpu' if cuda else 'host'} cache)", "head -> ft")]
    load = rows[("load_file" if cuda else "load_file + clone", "ft")]
    host = rows[("host cache", "ft")]
    out: dict[str, Any] = {
        "model_bytes": sum(v.numel() * v.element_size() for v in sds["ft"].values()),
        "raw_copy_gb_per_s": raw["gb_per_s"],
        "load_file_ms": load["p50_ms"],
        "host_cache_full_swap_ms": host["p50_ms"],
        "host_cache_gb_per_s": host["gb_per_s"],
        "host_cache_vs_raw_copy": host["gb_per_s"] / raw["gb_per_s"],
        "host_cache_vs_raw_copy_best": raw["min_ms"] / host["min_ms"],
        "frozen_backbone_swap_ms": frozen["p50_ms"],
        "frozen_backbone_swap_best_ms": frozen["min_ms"],
        "frozen_backbone_bytes": frozen["bytes"],
        "frozen_backbone_budget_ms": 2.0 + frozen["bytes"] / bandwidth * 1e3,
        "fine_tune_swap_ms": full["p50_ms"],
        "fine_tune_swap_bytes": full["bytes"],
        "store_cold_ms": rows[("store cold", "ft")]["p50_ms"],
        "store_warm_ms": rows[("store warm", "ft")]["p50_ms"],
        "store_warm_vs_load_file": rows[("store warm", "ft")]["p50_ms"] / load["p50_ms"],
        "store_plain_warm_ms": rows[("store warm", "base")]["p50_ms"],
    }
    if cuda:
        out["gpu_cache_gb_per_s"] = rows[("gpu cache", "ft")]["gb_per_s"]
    return out


def run_one(
    name: str, dtype_name: str, sds: dict[str, SD], device: str, iterations: int
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ws-bench-swap-") as tmp:
        store = WeightStore.open(Path(tmp) / "store", settings=StoreSettings(fsync=False))
        try:
            store.save("base", sds["base"])
            store.save("head", sds["head"], parent="base")
            store.save("ft", sds["ft"], parent="base")
            log(f"{name} {dtype_name}: measuring on {device}")
            result = measure_swaps(store, ["base", "head", "ft"], device, iterations)
        finally:
            store.close()
    return {
        "model": name,
        "dtype": dtype_name,
        "figures": figures(result, sds),
        "rows": result["rows"],
        "note": result["note"],
    }


def print_table(results: list[dict[str, Any]]) -> None:
    print("\np50 of --iterations runs; GB/s of bytes written into the model\n")
    print(
        "| model | dtype | MB | raw copy GB/s | host-cache swap GB/s (x raw) | frozen-backbone "
        "swap ms (target) | fine-tune swap ms | store warm ms (x load_file) | load_file ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        f = r["figures"]
        print(
            f"| {r['model']} | {r['dtype']} | {f['model_bytes'] / 1e6:.1f} | "
            f"{f['raw_copy_gb_per_s']:.1f} | {f['host_cache_gb_per_s']:.1f} "
            f"({f['host_cache_vs_raw_copy']:.2f}x; best runs "
            f"{f['host_cache_vs_raw_copy_best']:.2f}x) | {f['frozen_backbone_swap_ms']:.2f} "
            f"(< {f['frozen_backbone_budget_ms']:.2f}) | {f['fine_tune_swap_ms']:.1f} | "
            f"{f['store_warm_ms']:.1f} ({f['store_warm_vs_load_file']:.2f}x) | "
            f"{f['load_file_ms']:.1f} |"
        )
        if "gpu_cache_gb_per_s" in f:
            print(f"|  | GPU cache full swap | | | {f['gpu_cache_gb_per_s']:.0f} GB/s | | | | |")
    if results and results[0]["note"]:
        print(f"\n{results[0]['note']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache", type=Path, default=Path("runs/bench-cache"))
    parser.add_argument("--quick", action="store_true", help="quick fine-tunes (smoke run)")
    parser.add_argument("--synthetic-mb", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--skip-minilm", action="store_true", help="synthetic model only")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    start = time.perf_counter()
    results = []
    for dtype_name, dtype in DTYPES.items():
        if not args.skip_minilm:
            sds = minilm(args.cache, args.quick, dtype)
            results.append(
                run_one("all-MiniLM-L6-v2", dtype_name, sds, args.device, args.iterations)
            )
        if args.synthetic_mb > 0:
            sds = synthetic(args.synthetic_mb, dtype)
            size = sum(v.numel() * v.element_size() for v in sds["base"].values())
            label = f"synthetic {size / 1e6:.0f} MB"  # whole layers: at least one
            results.append(run_one(label, dtype_name, sds, args.device, args.iterations))
    print_table(results)
    if args.json:
        payload = {
            "device": args.device,
            "machine": platform.platform(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "seconds": time.perf_counter() - start,
            "results": results,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2))
        log(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
