"""What proving reused objects sound costs a save of a frozen backbone: all-MiniLM-L6-v2's
weights saved again under another task (every object reused), side by side in one run:

- the rule before issue 17: header and frame table only (blind to a flipped payload byte);
- checksums recorded at write (a read of each stored object and its BLAKE3);
- objects from before checksums (the first reuse decodes and verifies, then records them).

    python scripts/bench_dedup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from safetensors.torch import load_file
from sqlalchemy import update

from weightstore import StoreSettings, WeightStore
from weightstore.demo.minilm_model import model_dir
from weightstore.index.models import ObjectRow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    weights = load_file(str(model_dir() / "model.safetensors"))
    tmp = Path(tempfile.mkdtemp(prefix="bench-dedup-"))
    times: dict[str, list[float]] = {
        "header only (before)": [],
        "checksum": [],
        "legacy: decode": [],
    }
    with WeightStore.open(tmp / "s", create=True, settings=StoreSettings(fsync=True)) as store:
        store.save("base", weights)
        real = store.writer._unsound  # noqa: SLF001 (the rule under measurement)

        def header_only(digests: set[str]) -> set[str]:
            return set()

        for run in range(args.runs):
            for name in times:
                if name == "legacy: decode":
                    with store.index.engine.begin() as conn:
                        conn.execute(update(ObjectRow).values(checksum=None))
                rule = header_only if name.startswith("header") else real
                store.writer._unsound = rule  # type: ignore[method-assign]  # noqa: SLF001
                start = time.perf_counter()
                store.save(f"{name[:6].strip(':')}-{run}", weights)
                times[name].append(time.perf_counter() - start)
    shutil.rmtree(tmp, ignore_errors=True)
    size = sum(t.numel() * t.element_size() for t in weights.values())
    base = min(times["header only (before)"])
    load = os.getloadavg()[0]
    print(f"machine load (1 min): {load:.2f}; {size / 1e6:.1f} MB of weights, all reused")
    for name, ts in times.items():
        print(f"  {name:22s} best {min(ts) * 1e3:7.0f} ms   {min(ts) / base:5.2f}x")


if __name__ == "__main__":
    main()
