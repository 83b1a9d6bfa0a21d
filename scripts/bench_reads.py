"""What reading objects into buffers costs against memory-mapping them (the map was faster and
killed the process with SIGBUS when a file shrank: issue 17): ``restore`` of a 128 MiB fp32
snapshot (plain, and the last of a 2-deep delta chain), side by side in one run, best of 5.

    python scripts/bench_reads.py [--size-mb 128]
"""

from __future__ import annotations

import argparse
import mmap
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from weightstore import StoreSettings, WeightStore
from weightstore.objects.local import LocalBackend


def mapped(self: LocalBackend, key: str) -> bytes | memoryview:
    """The read before issue 17: a memory map of the object file."""
    with self._open_regular(key) as f:
        if os.fstat(f.fileno()).st_size == 0:
            return b""
        return memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))


def best(fn: object, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=128)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-reads-"))
    n = args.size_mb << 18  # fp32 elements
    g = torch.Generator().manual_seed(0)
    base = {f"w{i}": torch.randn(n // 8, generator=g) * 0.02 for i in range(8)}
    with WeightStore.open(tmp / "s", create=True, settings=StoreSettings(fsync=False)) as store:
        store.save("t", base, step=0)
        store.save("t", {k: v * (1 + 1e-3) for k, v in base.items()}, step=1)
        buffered = LocalBackend.get_view
        out = {}
        for ref in ("t@0", "t@1"):
            for name, impl in (("memory map (before)", mapped), ("buffer (now)", buffered)):
                LocalBackend.get_view = impl  # type: ignore[method-assign]
                store.restore(ref)
                out[(ref, name)] = best(lambda r=ref: store.restore(r))
        LocalBackend.get_view = buffered  # type: ignore[method-assign]
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"machine load (1 min): {os.getloadavg()[0]:.2f}; {args.size_mb} MiB fp32")
    for ref, label in (("t@0", "plain"), ("t@1", "last of 2 (delta)")):
        mapped_t = out[(ref, "memory map (before)")]
        for name in ("memory map (before)", "buffer (now)"):
            t = out[(ref, name)]
            print(f"  restore {label:18s} {name:20s} {t * 1e3:7.1f} ms  {t / mapped_t:5.2f}x")


if __name__ == "__main__":
    main()
