"""Export and save through the CLI beside the in-process calls and plain safetensors, one run.

Issue 7's target: CLI export within 2x the in-process restore time plus start-up. Prints, for
a synthetic fp32 model (``--size-mb``), the wall time of each path and the ratios.

    python scripts/bench_export.py --size-mb 256
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from weightstore import StoreSettings, WeightStore


def timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def cli(*args: str) -> float:
    return timed(
        lambda: subprocess.run(
            [sys.executable, "-m", "weightstore.cli.main", *args], check=True, capture_output=True
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=256)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    n = args.size_mb // 4
    model = {f"layer{i}.weight": torch.randn(1024, 1024, generator=g) for i in range(n)}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        src = d / "model.safetensors"
        t_st_save = timed(lambda: save_file(model, src))
        store = d / "store"
        cli("--store", str(store), "init")
        t_cli_save = cli("--store", str(store), "save", "t", str(src), "--step", "1")
        # Start-up of a command that touches tensors: the interpreter, torch, numpy, the codec.
        t_start = timed(
            lambda: subprocess.run(
                [sys.executable, "-c", "import weightstore.cli.main, weightstore.store"],
                check=True,
            )
        )
        with WeightStore.open(store, settings=StoreSettings()) as s:
            t_restore = min(timed(lambda: s.restore("t@1")) for _ in range(3))
            t_export = min(
                timed(lambda: s.export("t@1", d / "api.safetensors", overwrite=True))
                for _ in range(3)
            )
        t_cli_export = min(
            cli("--store", str(store), "export", "t@1", str(d / "c.st"), "--force")
            for _ in range(3)
        )
        t_load = min(
            timed(lambda: {k: v.clone() for k, v in load_file(src).items()}) for _ in range(3)
        )
    rows = [
        ("safetensors save_file", t_st_save),
        ("weightstore save (CLI)", t_cli_save),
        ("safetensors load_file + clone", t_load),
        ("restore (in process)", t_restore),
        ("export (in process)", t_export),
        ("export (CLI)", t_cli_export),
        ("start-up (import weightstore.store)", t_start),
    ]
    print(f"{args.size_mb} MB fp32, best of 3 where repeated")
    for name, t in rows:
        print(f"  {name:32s} {t * 1000:8.0f} ms")
    budget = 2 * t_restore + t_start
    print(f"  CLI export / (2 x restore + start-up) = {t_cli_export / budget:.2f} (target <= 1)")
    print(f"  CLI save / safetensors save_file      = {t_cli_save / t_st_save:.2f}")


if __name__ == "__main__":
    main()
