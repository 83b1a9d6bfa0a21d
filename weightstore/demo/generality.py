"""Inputs whose task is not given: which snapshot should answer?

The rule (documented in the output): run the input through every task's snapshot and take the
answer of the most confident one, confidence being the largest softmax probability. It is
compared with an oracle that is told the task (its own snapshot answers) and with the single
sequentially trained network (the last snapshot). The price of the rule is one forward pass
(and one swap) per task for every input.
"""

from __future__ import annotations

from typing import Any

import torch

from weightstore.demo.workload import Workload
from weightstore.loader import TaskLoader

RULE = "most confident snapshot: run every task's snapshot, keep the highest max-softmax answer"


def task_unknown(wl: Workload, loader: TaskLoader) -> dict[str, Any]:
    x = torch.cat([t.x_test for t in wl.tasks])
    y = torch.cat([t.y_test for t in wl.tasks])
    owner = torch.cat([torch.full((len(t.y_test),), k) for k, t in enumerate(wl.tasks)])
    probs = []
    for t in wl.tasks:
        loader.activate(t.name)
        probs.append(torch.softmax(wl.logits(x).float(), dim=-1))
    stacked = torch.stack(probs)  # (snapshot, input, class)
    confidence, answer = stacked.max(dim=-1)  # (snapshot, input)
    picked = confidence.argmax(dim=0)
    cols = torch.arange(len(y))
    rule = answer[picked, cols]
    oracle = answer[owner, cols]
    single = answer[-1]  # the last snapshot is the sequentially trained network as it ends
    return {
        "rule": RULE,
        "inputs": len(y),
        "accuracy_rule": _mean(rule == y),
        "accuracy_oracle": _mean(oracle == y),
        "accuracy_single_network": _mean(single == y),
        "task_picked_right": _mean(picked == owner),
        "forward_passes_per_input": len(wl.tasks),
    }


def _mean(hits: torch.Tensor) -> float:
    return float(hits.float().mean())
