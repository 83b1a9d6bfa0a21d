"""What the demo trains: a model, what the optimizer updates, and tasks given as tensors.

Every workload is a classifier trained on its tasks one after another with the same loop
(:mod:`weightstore.demo.train`), so the questions are answered the same way for each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class TaskData:
    """One task: a name (the store's task name), what it is, and its train and test split."""

    name: str
    description: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


@dataclass
class Workload:
    """A model trained on ``tasks`` in order: ``steps`` AdamW steps of ``batch`` examples per
    task over ``param_groups`` (torch's form: ``{"params": [...], "lr": ...}``; a frozen
    backbone's parameters are in none of them)."""

    name: str
    model: torch.nn.Module
    tasks: list[TaskData]
    param_groups: list[dict[str, Any]]
    steps: int
    batch: int
    checkpoints: int = 4  # default saves per task
    frozen: torch.nn.Module | None = None  # kept in eval mode while training (no dropout)
    eval_batch: int = 256
    iterations: int = 20  # default timed repetitions per latency figure
    # torch's intra-op threads while the workload runs: a tiny model's ops are far shorter
    # than a thread pool's hand-off, and on a busy machine 2 threads ran 35x slower than 1.
    threads: int | None = None

    @property
    def trainable(self) -> list[torch.nn.Parameter]:
        return [p for g in self.param_groups for p in g["params"]]

    def optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.param_groups, weight_decay=0.0)

    def train_mode(self) -> None:
        self.model.train()
        if self.frozen is not None:
            self.frozen.eval()

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The model's outputs on ``x`` in eval mode, batch by batch, without gradients."""
        self.model.eval()
        with torch.no_grad():
            return torch.cat(
                [self.model(x[i : i + self.eval_batch]) for i in range(0, len(x), self.eval_batch)]
            )

    def accuracy(self, task: TaskData) -> float:
        return float((self.logits(task.x_test).argmax(-1) == task.y_test).float().mean())
