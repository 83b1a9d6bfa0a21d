"""The default workload: scikit-learn's 8x8 digits split into 5 tasks of two classes each, and
one small MLP with a 10-way output trained on them in turn (class-incremental: after task
"3 or 4" the network is asked about every digit, as a single network serving all tasks is).

The data ships inside scikit-learn (no download); the split is stratified and seeded.
"""

from __future__ import annotations

import numpy as np
import torch

from weightstore.demo.workload import TaskData, Workload

PAIRS = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
HIDDEN = 64
STEPS = 150
BATCH = 32
LR = 3e-3
TEST_FRACTION = 0.3


def load_tasks(seed: int) -> list[TaskData]:
    """The five two-digit tasks, pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.data.astype(np.float32) / 16.0)
    y = torch.from_numpy(digits.target.astype(np.int64))
    rng = np.random.default_rng(seed)
    tasks = []
    for k, (a, b) in enumerate(PAIRS):
        train, test = [], []
        for c in (a, b):  # stratified: each class split on its own
            idx = rng.permutation(np.flatnonzero(digits.target == c))
            cut = round(len(idx) * TEST_FRACTION)
            test.append(idx[:cut])
            train.append(idx[cut:])
        tr = torch.from_numpy(np.concatenate(train))
        te = torch.from_numpy(np.concatenate(test))
        tasks.append(TaskData(f"task-{k + 1}", f"digits {a} and {b}", x[tr], y[tr], x[te], y[te]))
    return tasks


def make_workload(seed: int, steps: int | None = None) -> Workload:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, HIDDEN),
        torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, HIDDEN),
        torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, 10),
    )
    return Workload(
        name="digits: MLP 64-64-64-10, fp32",
        model=model,
        tasks=load_tasks(seed),
        param_groups=[{"params": list(model.parameters()), "lr": LR}],
        steps=steps or STEPS,
        batch=BATCH,
        threads=1,
    )
