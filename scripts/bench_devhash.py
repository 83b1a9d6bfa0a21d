"""What the device checksum (issue 18.2) costs, side by side in one run on the same bytes:

- the hash itself: ``codec.devhash`` (numpy, what a save runs), ``devhash_tensor`` with torch
  ops on the CPU (what a GPU runs after an in-place apply, here on the CPU), against BLAKE3 on
  one thread and as ``codec.digest`` runs it (threads above 8 MiB);
- a save of new weights (nothing to dedup: every object encoded and written) with the
  checksum recorded, against the same save with it switched off (the writer before 18.2).

    python scripts/bench_devhash.py [--mb 256] [--runs 5] [--device cuda] [--skip-save]

``--device cuda`` adds the torch ops on that GPU (what an in-place apply there is checked by).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import blake3
import torch
from _timing import best_of

import weightstore.writer as writer
from weightstore import StoreSettings, WeightStore
from weightstore.codec.devhash import devhash
from weightstore.codec.digest import digest
from weightstore.torchcodec.devhash import devhash_tensor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=256)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--device", default=None, help="also time the torch ops on this device")
    parser.add_argument("--skip-save", action="store_true", help="time the hashes only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    per = args.mb * (1 << 20) // 4 // 8
    weights = {f"layer.{i}.weight": torch.randn(per, generator=g) * 0.02 for i in range(8)}
    raw = torch.cat([v for v in weights.values()]).view(torch.uint8)
    buf = raw.numpy()
    size = buf.nbytes
    load = os.getloadavg()[0]
    print(f"{size / 1e6:.0f} MB of fp32 weights (8 tensors); load {load:.2f}; best of {args.runs}")
    print(f"{'hash':<44}{'GB/s':>8}")
    rows = [
        ("device checksum, numpy (at save)", lambda: devhash(buf)),
        ("device checksum, torch ops on the CPU", lambda: devhash_tensor(raw)),
        ("BLAKE3, one thread", lambda: blake3.blake3(buf.data, max_threads=1).digest()),
        ("BLAKE3 as codec.digest runs it", lambda: digest(buf.data)),
    ]
    if args.device:
        on_device = raw.to(args.device)
        rows.append(
            (f"device checksum, torch ops on {args.device}", lambda: devhash_tensor(on_device))
        )
    for label, fn in rows:
        print(f"{label:<44}{size / best_of(fn, args.runs) / 1e9:>8.2f}")
    if args.skip_save:
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench-devhash-"))
    saves: dict[str, list[float]] = {"with the device checksum": [], "without (before 18.2)": []}
    real = getattr(writer, "devhash")  # noqa: B009 (the name a save calls, switched)
    try:
        for run in range(args.runs):
            for label in saves:
                off: Callable[[object], None] = lambda _raw: None  # noqa: E731
                setattr(writer, "devhash", real if label.startswith("with ") else off)  # noqa: B010
                root = tmp / f"s{run}{label[:4]}"
                nudged = {k: v + (run + 1) * 1e-3 for k, v in weights.items()}
                with WeightStore.open(root, settings=StoreSettings(fsync=False)) as store:
                    start = time.perf_counter()
                    store.save("t", nudged)
                    saves[label].append(time.perf_counter() - start)
                shutil.rmtree(root, ignore_errors=True)
    finally:
        setattr(writer, "devhash", real)  # noqa: B010
        shutil.rmtree(tmp, ignore_errors=True)
    with_, without = (statistics.median(v) for v in saves.values())
    print(f"{'save of new weights':<44}{'median s':>10}")
    print(f"{'with the device checksum':<44}{with_:>10.3f}")
    print(f"{'without (before 18.2)':<44}{without:>10.3f}")
    print(f"cost: {with_ / without:.3f}x the save without it ({(with_ - without) * 1e3:+.0f} ms)")


if __name__ == "__main__":
    main()
