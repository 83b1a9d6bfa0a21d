"""Checkpointing during training, side by side on all-MiniLM-L6-v2 (fp32) with AdamW state:

- blocking time per checkpoint (what the training loop waits for): ``save_async`` vs a plain
  clone of the state dicts, ``torch.save`` of model + optimizer, sync ``save``, and DCP's
  ``async_save`` when it runs here;
- training slowdown with a checkpoint every ``--every`` steps vs none, for each way;
- background throughput (MB/s of raw state) vs ZipNN compressing the same bytes on one thread;
- bytes per checkpoint, with and without optimizer state, vs ``torch.save`` files.

    python scripts/bench_training.py [--steps 100] [--every 50]

Everything runs in this process on the CPU; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
import torch

from weightstore.demo.minilm_model import KeywordTask, load_backbone, model_dir, pooled
from weightstore.settings import StoreSettings
from weightstore.store import WeightStore


def make() -> tuple[torch.nn.Module, torch.optim.Optimizer, KeywordTask]:
    torch.manual_seed(0)
    model = load_backbone()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5)
    return model, opt, KeywordTask(model_dir() / "vocab.txt")


def step(model: torch.nn.Module, opt: torch.optim.Optimizer, ids: torch.Tensor) -> None:
    loss = pooled(model, ids).pow(2).mean()
    opt.zero_grad()
    loss.backward()  # type: ignore[no-untyped-call]
    opt.step()


def tensors_of(model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = dict(model.state_dict())
    for pid, state in opt.state_dict()["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                out[f"opt/{pid}/{key}"] = value
    return out


def raw_bytes(state: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run(
    name: str,
    steps: int,
    every: int,
    save: Callable[[torch.nn.Module, torch.optim.Optimizer, int], None] | None,
    finish: Callable[[], None] = lambda: None,
) -> tuple[float, list[float]]:
    """Train ``steps`` steps, calling ``save`` every ``every``; (wall seconds, blocking times)."""
    model, opt, task = make()
    rng = np.random.default_rng(0)
    batches = [task.batch(rng, 8)[0] for _ in range(8)]
    step(model, opt, batches[0])  # AdamW state exists before the first checkpoint
    blocked = []
    start = time.perf_counter()
    for i in range(1, steps + 1):
        step(model, opt, batches[i % len(batches)])
        if save is not None and i % every == 0:
            t0 = time.perf_counter()
            save(model, opt, i)
            blocked.append(time.perf_counter() - t0)
    finish()
    return time.perf_counter() - start, blocked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--every", type=int, default=25)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-training-"))
    settings = StoreSettings(fsync=True)

    model, opt, task = make()
    step(model, opt, task.batch(np.random.default_rng(0), 8)[0])
    state = tensors_of(model, opt)
    raw = raw_bytes(state)
    weights_raw = raw_bytes(dict(model.state_dict()))
    del model, opt

    results: dict[str, tuple[float, list[float]]] = {}
    results["no checkpoints"] = run("none", args.steps, args.every, None)

    def clone(m: torch.nn.Module, o: torch.optim.Optimizer, i: int) -> None:
        {k: v.detach().clone() for k, v in tensors_of(m, o).items()}

    results["state-dict clone (baseline copy)"] = run("clone", args.steps, args.every, clone)

    def torch_save(m: torch.nn.Module, o: torch.optim.Optimizer, i: int) -> None:
        torch.save({"model": m.state_dict(), "optimizer": o.state_dict()}, tmp / f"ckpt-{i}.pt")

    results["torch.save model + optimizer"] = run("torch", args.steps, args.every, torch_save)
    torch_file = (tmp / f"ckpt-{args.every}.pt").stat().st_size

    sync_store = WeightStore.open(tmp / "store-sync", create=True, settings=settings)
    async_store = WeightStore.open(tmp / "store-async", create=True, settings=settings)

    def sync_save(m: torch.nn.Module, o: torch.optim.Optimizer, i: int) -> None:
        sync_store.save("run", m, step=i, optimizer=o)

    def async_save(m: torch.nn.Module, o: torch.optim.Optimizer, i: int) -> None:
        async_store.save_async("run", m, step=i, optimizer=o)

    results["weightstore save (sync)"] = run("sync", args.steps, args.every, sync_save)
    results["weightstore save_async"] = run(
        "async", args.steps, args.every, async_save, async_store.wait
    )

    try:
        from torch.distributed.checkpoint import state_dict_saver

        pending: list[Any] = []

        def dcp_save(m: torch.nn.Module, o: torch.optim.Optimizer, i: int) -> None:
            pending.append(
                state_dict_saver.async_save(
                    {"model": m.state_dict(), "optim": o.state_dict()},
                    checkpoint_id=str(tmp / f"dcp-{i}"),
                )
            )

        def dcp_wait() -> None:
            for f in pending:
                f.result()

        results["torch DCP async_save"] = run("dcp", args.steps, args.every, dcp_save, dcp_wait)
    except Exception as e:  # DCP needs pieces this machine may lack: say so, measure the rest
        print(f"(DCP async_save did not run here: {type(e).__name__}: {str(e)[:100]})")

    # Background throughput: one more async save of a fresh state, timed from capture to commit.
    model, opt, task = make()
    step(model, opt, task.batch(np.random.default_rng(1), 8)[0])
    with WeightStore.open(tmp / "store-tput", create=True, settings=settings) as s:
        t0 = time.perf_counter()
        s.save_async("run", model, step=1, optimizer=opt).result()
        first = time.perf_counter() - t0
    zipnn_rate = None
    try:
        import zipnn

        z = zipnn.ZipNN(method="zstd", input_format="byte", bytearray_dtype="float32", threads=1)
        data = b"".join(
            t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            for t in state.values()
            if t.dtype == torch.float32
        )
        t0 = time.perf_counter()
        z.compress(data)
        zipnn_rate = len(data) / (time.perf_counter() - t0) / 1e6
    except ImportError:
        pass

    base_wall = results["no checkpoints"][0]
    clone_block = float(np.mean(results["state-dict clone (baseline copy)"][1]))
    torch_block = float(np.mean(results["torch.save model + optimizer"][1]))
    mb = 1e6
    print(f"machine load (1 min): {os.getloadavg()[0]:.2f}; cores: {os.cpu_count()}")
    print(f"state per checkpoint: {raw / mb:.1f} MB raw ({weights_raw / mb:.1f} MB of weights)")
    print(f"\n{args.steps} training steps, a checkpoint every {args.every}")
    head = ("way", "blocking/ckpt", "vs clone", "vs torch.save", "slowdown")
    print(f"  {head[0]:34s} {head[1]:>14s} {head[2]:>9s} {head[3]:>14s} {head[4]:>9s}")
    for name, (wall, blocked) in results.items():
        if not blocked:
            print(f"  {name:34s} {'-':>14s} {'':>9s} {'':>14s} {wall:8.1f}s")
            continue
        b = float(np.mean(blocked))
        ratios = f"{b / clone_block:8.2f}x {b / torch_block:13.2f}x"
        print(f"  {name:34s} {b * 1e3:11.0f} ms {ratios} {(wall / base_wall - 1) * 100:+8.1f}%")
    rate = raw / first / mb
    print(f"\nbackground save, capture to commit: {first:.2f} s = {rate:.0f} MB/s of raw state")
    if zipnn_rate is not None:
        vs = rate / zipnn_rate
        print(f"  ZipNN zstd, one thread, the fp32 bytes: {zipnn_rate:.0f} MB/s ({vs:.2f}x)")
    per_sync = dir_bytes(tmp / "store-sync") / (args.steps // args.every)
    print("\nbytes per checkpoint")
    print(f"  {'torch.save file (model + optimizer)':40s} {torch_file / mb:8.1f} MB")
    ratio = per_sync / torch_file
    print(
        f"  {'weightstore, weights + optimizer (avg)':40s} {per_sync / mb:8.1f} MB  ({ratio:.2f}x)"
    )
    with WeightStore.open(tmp / "store-weights", create=True, settings=settings) as s:
        model, opt, task = make()
        rng = np.random.default_rng(0)
        for i in range(1, 4):
            step(model, opt, task.batch(rng, 8)[0])
            s.save("run", model, step=i)
    per_weights = dir_bytes(tmp / "store-weights") / 3
    print(f"  {'weightstore, weights only (avg of 3)':40s} {per_weights / mb:8.1f} MB")
    sync_store.close()
    async_store.close()
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
