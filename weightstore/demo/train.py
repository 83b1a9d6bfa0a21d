"""Train a workload's tasks one after another, saving snapshots, and measure forgetting and
its undoing: after each task, the single network's accuracy on every task, and each finished
task's accuracy with its own snapshot swapped back in by the :class:`TaskLoader`.

The swaps go into the live, training model (in place); the last one of each round brings back
the snapshot just saved, bit-exactly, so training continues from where it was.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from weightstore.demo.workload import Workload
from weightstore.loader import SwapReport, TaskLoader
from weightstore.store import WeightStore

Advance = Callable[[int], None]  # progress: steps done since the last call


@dataclass
class Training:
    """What training measured: saves, timings, and the two accuracy matrices (row: after
    training task i; column: task j; ``None`` where task j has no snapshot yet)."""

    saves: list[dict[str, Any]] = field(default_factory=list)
    train_s: float = 0.0
    save_s: float = 0.0
    sequential: list[list[float]] = field(default_factory=list)
    swapped: list[list[float | None]] = field(default_factory=list)
    swaps: list[SwapReport] = field(default_factory=list)


def save_points(steps: int, checkpoints: int) -> set[int]:
    """Steps (1-based, within a task) after which a snapshot is saved; the last is ``steps``."""
    return {round(steps * (c + 1) / checkpoints) for c in range(checkpoints)}


def train_sequentially(
    store: WeightStore,
    wl: Workload,
    loader: TaskLoader,
    checkpoints: int,
    seed: int,
    advance: Advance,
) -> Training:
    out = Training()
    gen = torch.Generator().manual_seed(seed)
    points = save_points(wl.steps, checkpoints)
    parent: str | None = None
    step = 0
    for i, task in enumerate(wl.tasks):
        # A new optimizer per task: the state of another task's gradients would leak across.
        opt = wl.optimizer()
        saving = 0.0
        start = time.perf_counter()
        for s in range(1, wl.steps + 1):
            wl.train_mode()
            idx = torch.randint(len(task.x_train), (wl.batch,), generator=gen)
            loss = torch.nn.functional.cross_entropy(wl.model(task.x_train[idx]), task.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            step += 1
            if s in points:
                t0 = time.perf_counter()
                # The first save of a task deltas against the task before (it was trained
                # from there); later ones against the task's own latest (the default).
                snap = store.save(
                    task.name,
                    wl.model,
                    step=step,
                    parent=parent,
                    metadata={"description": task.description, "loss": loss.item()},
                )
                took = time.perf_counter() - t0
                saving += took
                parent = None
                out.saves.append(
                    {"task": task.name, "step": step, "id": snap.id, "save_ms": took * 1e3}
                )
            advance(1)
        out.train_s += time.perf_counter() - start - saving
        out.save_s += saving
        parent = out.saves[-1]["id"]
        out.sequential.append([wl.accuracy(t) for t in wl.tasks])
        out.swapped.append(_swapped_row(wl, loader, i, out.swaps))
    return out


def _swapped_row(
    wl: Workload, loader: TaskLoader, done: int, swaps: list[SwapReport]
) -> list[float | None]:
    """Accuracy on each finished task with its own latest snapshot swapped in; ends holding
    task ``done``'s, which is what the model held before."""
    loader.invalidate()  # training changed the weights behind the loader's back
    row: list[float | None] = []
    for j, task in enumerate(wl.tasks):
        if j > done:
            row.append(None)
            continue
        swaps.append(loader.activate(task.name))
        row.append(wl.accuracy(task))
    return row
