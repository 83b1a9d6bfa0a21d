"""An object file that shrinks under a live reader never kills the process (issue 17, item 1):
reads return the exact bytes or a typed error, in restores and in the service's downloads. The
stress runs in a child process (tests/procs/shrinker.py), so a SIGBUS shows as its exit status
instead of killing the test run."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import torch

from weightstore import StoreSettings, WeightStore

WORKER = Path(__file__).with_name("procs") / "shrinker.py"


def test_a_file_truncated_and_restored_under_readers_kills_nothing(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with WeightStore.open(root, create=True, settings=StoreSettings(fsync=False)) as store:
        g = torch.Generator().manual_seed(0)
        for step in range(2):
            store.save("t", {"w": torch.randn(512, 512, generator=g)}, step=step)
    run = subprocess.run(
        [sys.executable, str(WORKER), str(root), "6"], capture_output=True, text=True, timeout=300
    )
    assert run.returncode != -signal.SIGBUS, "SIGBUS: a memory map saw its file shrink"
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert run.stdout.startswith("ok "), run.stdout
