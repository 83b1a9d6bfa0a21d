"""The commands that only move bytes run without torch (issue 16, item 1).

Each command runs in its own interpreter in which ``import torch`` fails (``sys.modules["torch"]
= None``), so a command that reached for torch anywhere, at import or at run time, exits with a
traceback; its output is then checked as usual. The files it writes are compared with what
safetensors' own torch reader makes of them, in this (torch-enabled) process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

BLOCKED = (
    "import sys; sys.modules['torch'] = None; "
    "from weightstore.cli.main import main; sys.argv[0] = 'weightstore'; main()"
)


def run(store: Path, *args: str, ok: int = 0) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, WEIGHTSTORE_PATH=str(store), COLUMNS="200")
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKED, *args],
        env=env,
        cwd=store.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == ok, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def weights(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(32, 16, generator=g)
    w[0, :3] = torch.tensor([float("nan"), float("inf"), -0.0])
    return {
        "encoder.weight": w,
        "embed.weight": torch.randn(8, 8, generator=g).to(torch.bfloat16),
        "position_ids": torch.arange(10, dtype=torch.int64),
        "mask": torch.rand(4, generator=g) > 0.5,
        "fp8": torch.randn(6, generator=g).to(torch.float8_e4m3fn),
        "empty": torch.empty(0, 3),
    }


def bits_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype
        and a[k].shape == b[k].shape
        and torch.equal(a[k].view(-1).view(torch.uint8), b[k].view(-1).view(torch.uint8))
        for k in a
    )


def test_every_byte_moving_command_runs_without_torch(tmp_path: Path) -> None:
    store = tmp_path / "store"
    one, two = weights(0), weights(0)
    two["encoder.weight"][1] += 1e-3
    save_file(one, str(tmp_path / "one.safetensors"))
    save_file(two, str(tmp_path / "two.safetensors"))
    folder = tmp_path / "model"
    folder.mkdir()
    save_file(two, str(folder / "model.safetensors"))
    (folder / "config.json").write_text('{"hidden_size": 16}\n')

    run(store, "init")
    run(store, "save", "t", str(tmp_path / "one.safetensors"), "--step", "1")
    run(store, "save", "t", str(tmp_path / "two.safetensors"), "--step", "2", "--tag", "best")
    run(store, "save", "m", str(folder), "--step", "1")
    assert "t" in run(store, "log").stdout
    assert "encoder.weight" in run(store, "show", "t@2").stdout
    assert "changed" in run(store, "diff", "t@1", "t@2").stdout
    run(store, "tag", "t@1", "first")

    run(store, "export", "t:best", str(tmp_path / "out.safetensors"))
    assert bits_equal(load_file(str(tmp_path / "out.safetensors")), two)
    run(store, "export", "m@1", str(tmp_path / "out-folder"))
    assert (tmp_path / "out-folder/config.json").read_bytes() == b'{"hidden_size": 16}\n'
    assert (tmp_path / "out-folder/model.safetensors").read_bytes() == (
        folder / "model.safetensors"
    ).read_bytes()

    assert "ok" in run(store, "verify").stdout
    assert json.loads(run(store, "report", "storage", "--json").stdout)
    run(store, "rm", "t:first", "--yes")
    run(store, "gc", "--dry-run")
    run(store, "gc", "--grace", "0")
    assert json.loads(run(store, "tasks", "--json").stdout)


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["save", "t", "missing.safetensors"], 3, "no such file"),
        (["show", "nope@1"], 3, "nope"),
        (["log", "-n", "x"], 2, "x"),
    ],
)
def test_errors_answer_without_torch(tmp_path: Path, args: list[str], code: int, says: str) -> None:
    store = tmp_path / "store"
    run(store, "init")
    proc = run(store, *args, ok=code)
    assert says in proc.stderr


def test_a_damaged_safetensors_file_is_refused_without_torch(tmp_path: Path) -> None:
    store = tmp_path / "store"
    run(store, "init")
    path = tmp_path / "cut.safetensors"
    save_file(weights(1), str(path))
    path.write_bytes(path.read_bytes()[:-5])
    proc = run(store, "save", "t", str(path), ok=2)
    assert "truncated" in proc.stderr
    run(store, "show", "t", ok=3)


def test_push_pull_and_clone_run_without_torch(tmp_path: Path) -> None:
    """Against a real server (in this process, with torch); the client commands without it."""
    from served import serve

    local = tmp_path / "local"
    one = weights(1)
    save_file(one, str(tmp_path / "one.safetensors"))
    run(local, "init")
    run(local, "save", "t", str(tmp_path / "one.safetensors"), "--step", "1")
    with serve(tmp_path / "server", f"sqlite:///{tmp_path / 'index.sqlite'}") as served:
        write, read = served.tokens["write"], served.tokens["read"]
        assert "pushed" in run(local, "push", served.url, "--token", write).stdout
        served.store.save("u", weights(2), step=1)
        assert "pulled" in run(local, "pull", served.url, "u", "--token", read).stdout
        copy = tmp_path / "copy"
        run(local, "clone", served.url, str(copy), "--token", read)
        assert bits_equal(served.store.restore("t@1"), one)
    for store in (local, copy):
        run(store, "export", "u@1", str(tmp_path / f"{store.name}.safetensors"))
        assert bits_equal(load_file(str(tmp_path / f"{store.name}.safetensors")), weights(2))
