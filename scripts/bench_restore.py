"""Restore-latency benchmark: weightstore vs safetensors on the same synthetic weights.

Builds a transformer-shaped state dict of ``--size-mb`` (normal weights, like trained ones) and
``--chain`` checkpoints after it (each nudges every weight of the previous one by a relative
1e-3, so every tensor changes), saves them as one task (each checkpoint deltas against the one
before, as the store's chain policy allows), and times, best of ``--repeat``, side by side:

- ``safetensors``: ``load_file(path, device)`` (+ ``clone`` on CPU, so the result owns its memory)
  of the same weights;
- ``weightstore``: ``restore(ref, device)`` of the plain base and of the last checkpoint, for
  several thread counts and both decoders (the compiled kernel and the numpy fallback);
- ``into``: ``restore(ref, into=model)`` of the last checkpoint into a model on the device.

Runs on the CPU here and on a GPU machine with ``--device cuda``:

    python scripts/bench_restore.py --size-mb 128 --dtype bfloat16 --chain 10 --threads 1,2
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from weightstore import StoreSettings, WeightStore
from weightstore.settings import CodecSettings


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


@dataclasses.dataclass(frozen=True)
class Timing:
    """Best wall-clock seconds and best CPU seconds of this process (all its threads) over
    the repeats; on a machine shared with other work the CPU time is the steadier figure."""

    wall: float
    cpu: float


def best_of(fn: Callable[[], object], repeat: int, sync: bool) -> Timing:
    wall, cpu = [], []
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        if sync:
            torch.cuda.synchronize()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return Timing(min(wall), min(cpu))


def row(label: str, decoder: str, threads: int | str, t: Timing, ref: Timing, nbytes: int) -> str:
    return (
        f"| {label} | {decoder} | {threads} | {t.wall * 1e3:.1f} | {nbytes / t.wall / 1e9:.2f} | "
        f"{t.wall / ref.wall:.2f}x | {t.cpu * 1e3:.1f} | {t.cpu / ref.cpu:.2f}x |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=128)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--chain", type=int, default=10, help="checkpoints after the base")
    parser.add_argument("--threads", default="1,2,4,8,16", help="thread counts to try")
    parser.add_argument("--decoders", default="auto,numpy", help="CodecSettings.decoder values")
    args = parser.parse_args()
    if args.chain < 1:
        parser.error("--chain must be at least 1")
    dev = torch.device(args.device)
    sync = dev.type == "cuda"
    dtype = getattr(torch, args.dtype)
    cores = os.cpu_count() or 1
    threads = sorted({min(int(t), cores) for t in args.threads.split(",")})

    versions = [make_weights(args.size_mb, dtype)]
    for i in range(args.chain):
        versions.append(nudge(versions[-1], seed=i + 1))
    base, last = versions[0], versions[-1]
    refs = {"base": base, f"ckpt@{args.chain}": last}
    nbytes = sum(v.numel() * v.element_size() for v in base.values())
    work = Path(tempfile.mkdtemp(prefix="ws-bench-"))
    try:
        paths = {"base": work / "base.safetensors", "last": work / "last.safetensors"}
        save_file(base, paths["base"])
        save_file(last, paths["last"])
        with WeightStore.open(work / "store") as store:
            t0 = time.perf_counter()
            store.save("base", base)
            save_base = time.perf_counter() - t0
            t0 = time.perf_counter()
            for i, sd in enumerate(versions[1:], 1):
                store.save("ckpt", sd, step=i, parent="base" if i == 1 else None)
            save_delta = (time.perf_counter() - t0) / max(args.chain, 1)
            last_id = store.show(f"ckpt@{args.chain}").id
            chains = store.reader.chains({t.digest for t in store.show(last_id).tensors})
            depth = max(len(c) for c in chains.values())
        stored = sum(
            f.stat().st_size for f in (work / "store" / "objects").rglob("*") if f.is_file()
        )
        mb = nbytes / 1e6
        print(f"{mb:.0f} MB of {args.dtype} weights, {len(base)} tensors, {cores} cores, {dev}")
        print(
            f"save base {mb / save_base:.0f} MB/s, save a checkpoint {mb / save_delta:.0f} MB/s; "
            f"stored {stored / ((args.chain + 1) * nbytes):.3f} of raw for all "
            f"{args.chain + 1}; the last checkpoint decodes {depth} objects per tensor"
        )

        def baseline(path: Path) -> Callable[[], object]:
            def run() -> object:
                sd = load_file(str(path), device=str(dev))
                return sd if sync else {k: v.clone() for k, v in sd.items()}

            return run

        ref = {k: best_of(baseline(p), args.repeat, sync) for k, p in paths.items()}
        print(
            "\n| restore | decoder | threads | ms | GB/s | vs safetensors | CPU ms "
            "| CPU vs safetensors |\n|---|---|---|---|---|---|---|---|"
        )
        for which, t in ref.items():
            label = f"safetensors load_file{'' if sync else ' + clone'}, {which}"
            print(row(label, "-", "-", t, t, nbytes))
        model = {k: v.clone().to(dev) for k, v in base.items()}
        last_ref = f"ckpt@{args.chain}"
        for decoder in args.decoders.split(","):
            for n in threads:
                codec = dataclasses.replace(CodecSettings(), decoder=decoder)
                settings = StoreSettings(threads=n, codec=codec)
                with WeightStore.open(work / "store", settings=settings) as store:
                    name = store.codec.decoder
                    for label, r in (
                        ("plain base", "base"),
                        (f"last of {args.chain}", f"ckpt@{args.chain}"),
                    ):
                        out = store.restore(r, device=dev)
                        assert all(torch.equal(out[k].cpu(), refs[r][k]) for k in out)
                        t = best_of(
                            functools.partial(store.restore, r, device=dev), args.repeat, sync
                        )
                        against = ref["base" if r == "base" else "last"]
                        print(row(label, name, n, t, against, nbytes))
                    t = best_of(lambda: store.restore(last_ref, into=model), args.repeat, sync)
                    print(row(f"last into a {dev.type} model", name, n, t, ref["last"], nbytes))
                    t = best_of(
                        lambda: store.restore(last_ref, device=dev, verify=False),
                        args.repeat,
                        sync,
                    )
                    print(row("last, verify=False", name, n, t, ref["last"], nbytes))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
