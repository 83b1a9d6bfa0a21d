"""The demo end to end: build the workload, train it task by task into ``store``, measure
every objection, and return every figure as one JSON-able dict (what ``--json`` prints)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import torch

from weightstore.demo import generality, measure
from weightstore.demo.config import DemoConfig
from weightstore.demo.train import Advance, Training, train_sequentially
from weightstore.demo.workload import Workload
from weightstore.errors import InvalidInput
from weightstore.loader import TaskLoader
from weightstore.store import WeightStore

# A progress reporter: given a label and a total, a context giving the function that advances it.
Progress = Callable[[str, int], AbstractContextManager[Advance]]


def workloads(config: DemoConfig) -> list[Workload]:
    """The workload's models (minilm has two: full fine-tunes and a frozen backbone)."""
    if config.workload == "digits":
        from weightstore.demo.digits import make_workload

        return [make_workload(config.seed, config.steps)]
    from weightstore.demo.minilm import make_workloads

    return make_workloads(config.seed, config.steps)


def run_demo(
    store: WeightStore,
    config: DemoConfig,
    progress: Progress | None = None,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """Every figure of the demo. ``store`` must hold no snapshots yet (the figures are the
    store's totals); ``device``: where latency is measured (default: CUDA when present)."""
    if store.tasks():
        raise InvalidInput(
            "the demo needs an empty store (its storage figures are the store's totals): "
            "name a new folder with --store, or leave --store out for a temporary one"
        )
    dev = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    track = progress or _no_progress
    start = time.perf_counter()
    runs = [_one(store, wl, config, dev, track) for wl in workloads(config)]
    return {
        "workload": config.workload,
        "seed": config.seed,
        "device": str(dev),
        "runs": runs,
        "seconds": time.perf_counter() - start,
    }


def _one(
    store: WeightStore,
    wl: Workload,
    config: DemoConfig,
    dev: torch.device,
    track: Progress,
) -> dict[str, Any]:
    iterations = config.iterations or wl.iterations
    with _threads(config.threads or wl.threads):
        threads = torch.get_num_threads()
        with TaskLoader(store, wl.model, device="cpu", gpu_cache=0, host_cache="2GiB") as loader:
            with track(f"training {wl.name}", wl.steps * len(wl.tasks)) as advance:
                checkpoints = min(config.checkpoints or wl.checkpoints, wl.steps)
                training = train_sequentially(store, wl, loader, checkpoints, config.seed, advance)
            unknown = generality.task_unknown(wl, loader)
            mem = measure.memory(store, wl, loader, training)
        latency = measure.latency(store, wl, dev, iterations)
    return {
        "name": wl.name,
        "parameters": sum(p.numel() for p in wl.model.parameters()),
        "trainable_parameters": sum(p.numel() for p in wl.trainable),
        "model_bytes": measure.model_bytes(wl.model),
        "steps_per_task": wl.steps,
        "threads": threads,
        "tasks": [
            {
                "name": t.name,
                "description": t.description,
                "train": len(t.y_train),
                "test": len(t.y_test),
            }
            for t in wl.tasks
        ],
        "saves": training.saves,
        "accuracy": _accuracy(training),
        "memory": mem,
        "latency": latency,
        "compute": measure.compute(training),
        "generality": unknown,
    }


def _accuracy(training: Training) -> dict[str, Any]:
    seq, swapped = training.sequential, training.swapped
    n = len(seq)
    diag = [seq[j][j] for j in range(n)]
    return {
        "sequential": seq,
        "swapped": swapped,
        "right_after_training": diag,
        "restored_exactly": all(swapped[i][j] == diag[j] for i in range(n) for j in range(i + 1)),
        "final_mean_sequential": sum(seq[-1]) / n,
        "final_mean_swapped": sum(x for x in swapped[-1] if x is not None) / n,
    }


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` for the block, then restored."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _no_progress(label: str, total: int) -> Iterator[Advance]:
    yield lambda steps: None
