"""The cost figures: memory (naive full copies vs what the store holds, what the loader's
caches hold, an extrapolation to a large model), swap latency per tier beside a forward pass
and ``safetensors`` loading, and the share of training time spent saving."""

from __future__ import annotations

import copy
import functools
from typing import Any

import torch

from weightstore.demo.train import Training
from weightstore.demo.workload import Workload
from weightstore.loader import TaskLoader
from weightstore.loader.bench import SwapTiming, measure_swaps, timed, timing_row
from weightstore.store import WeightStore

# The extrapolation's model: 7B parameters in bf16, 100 tasks.
BIG_PARAMS = 7_000_000_000
BIG_BYTES_PER_PARAM = 2
BIG_TASKS = 100
TIERS = ("gpu cache", "host cache", "store warm", "store cold")


def model_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def memory(
    store: WeightStore, wl: Workload, loader: TaskLoader, training: Training
) -> dict[str, Any]:
    names = {t.name for t in wl.tasks}
    rows = [r for r in store.stats().tasks if r.task in names]  # this run's tasks only
    one = model_bytes(wl.model)
    snapshots = len(training.saves)
    per_task = snapshots // len(wl.tasks)
    naive = sum(r.logical_bytes for r in rows)
    stored = sum(r.stored_bytes for r in rows)
    ratio = stored / naive if naive else 0.0
    big_copy = BIG_PARAMS * BIG_BYTES_PER_PARAM
    big_naive = big_copy * BIG_TASKS * per_task
    ls = loader.stats()
    swaps = training.swaps
    return {
        "model_bytes": one,
        "snapshots": snapshots,
        "snapshots_per_task": per_task,
        "naive_task_copies_bytes": one * len(wl.tasks),
        "naive_all_copies_bytes": naive,
        "stored_bytes": stored,
        "stored_over_naive": ratio,
        "saved_by_dedup": sum(r.saved_by_dedup for r in rows),
        "saved_by_delta": sum(r.saved_by_delta for r in rows),
        "saved_by_compression": sum(r.saved_by_compression for r in rows),
        "per_task": [
            {
                "task": r.task,
                "snapshots": r.snapshots,
                "naive": r.logical_bytes,
                "stored": r.stored_bytes,
            }
            for r in rows
        ],
        "loader": {
            "host_cache_bytes": ls.host_cache.bytes,
            "host_cache_peak": ls.host_cache.peak,
            "host_cache_items": ls.host_cache.items,
            "gpu_cache_bytes": ls.gpu_cache.bytes,
            "gpu_cache_peak": ls.gpu_cache.peak,
            "swaps": ls.swaps,
            "bytes_moved": ls.bytes_moved,
            "mean_bytes_moved_per_swap": ls.bytes_moved / ls.swaps if ls.swaps else 0.0,
            "swaps_moving_nothing": sum(1 for s in swaps if s.bytes_moved == 0),
        },
        "extrapolation": {
            "label": (
                f"EXTRAPOLATION, not measured: a {BIG_PARAMS / 1e9:.0f}B-parameter bf16 model, "
                f"{BIG_TASKS} tasks x {per_task} snapshots each, assuming this run's measured "
                "stored/naive ratio carries over"
            ),
            "parameters": BIG_PARAMS,
            "tasks": BIG_TASKS,
            "copy_bytes": big_copy,
            "naive_bytes": big_naive,
            "stored_bytes": round(big_naive * ratio),
        },
    }


def compute(training: Training) -> dict[str, Any]:
    total = training.train_s + training.save_s
    n = len(training.saves)
    return {
        "train_s": training.train_s,
        "save_s": training.save_s,
        "saves": n,
        "mean_save_ms": training.save_s / n * 1e3 if n else 0.0,
        "save_share": training.save_s / total if total else 0.0,
    }


def latency(
    store: WeightStore, wl: Workload, device: torch.device, iterations: int
) -> dict[str, Any]:
    """Swap figures from :func:`measure_swaps` on the first two tasks, then forward passes of
    batch 1 and 64 on the same device. Tiers are listed fastest first, as measured."""
    refs = [t.name for t in wl.tasks[:2]]
    swaps = measure_swaps(store, refs, str(device), iterations)
    rows = list(swaps["rows"])
    rows.extend(r.as_json() for r in _forward(wl, device, iterations))
    first = {r["kind"]: r for r in rows if r["refs"] == refs[0] and r["kind"] in TIERS}
    order = sorted(first, key=lambda k: first[k]["p50_ms"])
    return {
        "device": swaps["device"],
        "note": swaps["note"],
        "rows": rows,
        "tiers_fastest_first": [{"tier": k, "p50_ms": first[k]["p50_ms"]} for k in order],
    }


def _forward(wl: Workload, device: torch.device, iterations: int) -> list[SwapTiming]:
    model = copy.deepcopy(wl.model).to(device).eval()
    x = torch.cat([t.x_test for t in wl.tasks])
    rows = []
    for batch in (1, 64):
        inp = x[:batch].to(device)
        run = functools.partial(model, inp)
        with torch.no_grad():
            times = [timed(run, device) for _ in range(iterations + 2)][2:]  # 2 warm-ups
        rows.append(timing_row("forward pass", f"batch {batch}", model_bytes(model), times))
    return rows
