"""Restore-latency benchmark: weightstore vs safetensors on the same synthetic weights.

Builds a transformer-shaped state dict of ``--size-mb`` (normal weights, like trained ones), a
"fine-tuned" copy (every weight nudged by a relative 1e-3, so every tensor changes), saves both
(the copy as a delta), and times, best of ``--repeat``, side by side:

- ``safetensors``: ``load_file(path, device)`` (+ ``clone`` on CPU, so the result owns its memory)
- ``weightstore``: ``restore(ref, device)`` of the base and of the delta, for several thread counts
- ``into``: ``restore(ref, into=model)`` into a model already on the device

Runs on the CPU here and on a GPU machine with ``--device cuda``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from weightstore import StoreSettings, WeightStore


def make_weights(size_mb: int, dtype: torch.dtype, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hidden = 1024
    per_layer = 12 * hidden * hidden  # qkv+o (4h^2) + mlp (8h^2)
    elem = torch.empty((), dtype=dtype).element_size()
    layers = max(1, size_mb * 2**20 // (per_layer * elem))
    sd: dict[str, torch.Tensor] = {}
    for i in range(layers):
        for name, shape in (
            ("attn.qkv", (3 * hidden, hidden)),
            ("attn.out", (hidden, hidden)),
            ("mlp.up", (4 * hidden, hidden)),
            ("mlp.down", (hidden, 4 * hidden)),
        ):
            sd[f"layers.{i}.{name}.weight"] = (torch.randn(shape, generator=g) * 0.02).to(dtype)
            sd[f"layers.{i}.{name}.bias"] = torch.zeros(shape[0], dtype=dtype)
        sd[f"layers.{i}.norm.weight"] = torch.ones(hidden, dtype=dtype)
    return sd


def nudge(sd: dict[str, torch.Tensor], seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        k: (v.float() * (1 + 1e-3 * torch.randn(v.shape, generator=g))).to(v.dtype)
        for k, v in sd.items()
    }


def best_of(fn: Callable[[], object], repeat: int, sync: bool) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=128)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", default="1,2,4,8,16", help="thread counts to try")
    args = parser.parse_args()
    dev = torch.device(args.device)
    sync = dev.type == "cuda"
    dtype = getattr(torch, args.dtype)
    cores = os.cpu_count() or 1
    threads = sorted({min(int(t), cores) for t in args.threads.split(",")})

    base = make_weights(args.size_mb, dtype)
    tuned = nudge(base)
    nbytes = sum(v.numel() * v.element_size() for v in base.values())
    work = Path(tempfile.mkdtemp(prefix="ws-bench-"))
    try:
        st_path = work / "tuned.safetensors"
        save_file(tuned, st_path)
        with WeightStore.open(work / "store") as store:
            t0 = time.perf_counter()
            store.save("base", base)
            save_base = time.perf_counter() - t0
            t0 = time.perf_counter()
            store.save("tuned", tuned, parent="base")
            save_delta = time.perf_counter() - t0
        stored = sum(
            f.stat().st_size for f in (work / "store" / "objects").rglob("*") if f.is_file()
        )
        mb = nbytes / 1e6
        print(f"{mb:.0f} MB of {args.dtype} weights, {len(base)} tensors, {cores} cores, {dev}")
        print(
            f"save base {mb / save_base:.0f} MB/s, save delta {mb / save_delta:.0f} MB/s; "
            f"stored {stored / (2 * nbytes):.3f} of raw for both"
        )

        def baseline() -> object:
            sd = load_file(str(st_path), device=str(dev))
            return sd if sync else {k: v.clone() for k, v in sd.items()}

        ref = best_of(baseline, args.repeat, sync)
        print("\n| restore | threads | ms | GB/s | vs safetensors |\n|---|---|---|---|---|")
        print(
            f"| safetensors load_file{'' if sync else ' + clone'} | - | {ref * 1e3:.1f} | "
            f"{nbytes / ref / 1e9:.2f} | 1.00x |"
        )
        model = {k: v.clone().to(dev) for k, v in base.items()}
        for n in threads:
            with WeightStore.open(work / "store", settings=StoreSettings(threads=n)) as store:
                for label, r in (("base (plain)", "base"), ("fine-tune (delta)", "tuned")):
                    out = store.restore(r, device=dev)
                    assert all(
                        torch.equal(out[k].cpu(), (tuned if r == "tuned" else base)[k])
                        for k in list(out)[:8]
                    )
                    t = best_of(lambda r=r: store.restore(r, device=dev), args.repeat, sync)
                    print(
                        f"| {label} | {n} | {t * 1e3:.1f} | {nbytes / t / 1e9:.2f} | "
                        f"{t / ref:.2f}x |"
                    )
                t = best_of(lambda: store.restore("tuned", into=model), args.repeat, sync)
                print(
                    f"| fine-tune into a {dev.type} model | {n} | {t * 1e3:.1f} | "
                    f"{nbytes / t / 1e9:.2f} | {t / ref:.2f}x |"
                )
                no_verify = best_of(
                    lambda: store.restore("tuned", device=dev, verify=False), args.repeat, sync
                )
                print(
                    f"| fine-tune, verify=False | {n} | {no_verify * 1e3:.1f} | "
                    f"{nbytes / no_verify / 1e9:.2f} | {no_verify / ref:.2f}x |"
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
