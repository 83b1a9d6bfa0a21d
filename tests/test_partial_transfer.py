"""A damaged object fails only the snapshots that need it (issue 17, item 3; issue 16, item 4):
push and pull send every intact snapshot, name the damaged ones by snapshot, tensor and digest,
and the CLI exits 5. Local stores on disk and a real uvicorn server on loopback (SQLite)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from served import Served, serve

from weightstore import StoreSettings, WeightStore
from weightstore.codec.format import header_length
from weightstore.sync import push

SETTINGS = StoreSettings(threads=2, fsync=False)


def flip_payload(root: Path, digest: str) -> None:
    path = root / "objects" / digest[:2] / digest
    data = bytearray(path.read_bytes())
    start = header_length(bytes(data[: 16 << 10]))
    data[start + (len(data) - start) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def seed(store: WeightStore) -> tuple[dict[str, dict[str, torch.Tensor]], str]:
    """Three tasks; the second one's object of ``b`` is to be damaged."""
    g = torch.Generator().manual_seed(0)
    sds = {t: {n: torch.randn(64, 64, generator=g) for n in "abc"} for t in ("one", "two", "three")}
    for task, sd in sds.items():
        store.save(task, sd, step=1)
    victim = next(t.digest for t in store.show("two@1").tensors if t.name == "b")
    return sds, victim


@pytest.fixture
def source(tmp_path: Path) -> Iterator[WeightStore]:
    s = WeightStore.open(tmp_path / "src", create=True, settings=SETTINGS)
    yield s
    s.close()


def test_push_sends_every_intact_snapshot_and_names_the_damaged_one(
    source: WeightStore, tmp_path: Path
) -> None:
    sds, victim = seed(source)
    flip_payload(tmp_path / "src", victim)
    with WeightStore.open(tmp_path / "dst", create=True, settings=SETTINGS) as dst:
        report = push(source, dst)
        assert report.snapshots == 2
        [damaged] = report.damaged
        assert damaged.snapshot.task == "two"
        assert damaged.tensors == (("b", victim),)
        assert sorted(dst.tasks()) == ["one", "three"]
        for task in ("one", "three"):
            got = dst.restore(f"{task}@1")
            assert all(torch.equal(got[k], v) for k, v in sds[task].items())
        assert dst.verify().ok
        source.save("two", sds["two"], step=2)  # rewrites the damaged object from good bytes
        again = push(source, dst, ["two"])
        assert again.damaged == () and again.snapshots == 2


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with serve(tmp_path / "server", f"sqlite:///{tmp_path / 'server.db'}") as s:
        yield s


def test_cli_pull_of_a_server_with_a_damaged_object_exits_5(served: Served, tmp_path: Path) -> None:
    sds, victim = seed(served.store)
    flip_payload(served.root, victim)
    env = {**os.environ, "WEIGHTSTORE_TOKEN": served.tokens["read"], "COLUMNS": "200"}
    env.pop("WEIGHTSTORE_PATH", None)
    local = tmp_path / "local"
    run = subprocess.run(
        [sys.executable, "-m", "weightstore.cli.main", "--store", str(local), "pull", served.url],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 5, run.stdout + run.stderr
    assert "two@1" in run.stderr and "b (" + victim[:12] in run.stderr
    assert "weightstore verify" in run.stderr
    with WeightStore.open(local) as store:
        assert sorted(store.tasks()) == ["one", "three"]
        got = store.restore("three@1")
        assert all(torch.equal(got[k], v) for k, v in sds["three"].items())


@pytest.mark.parametrize("existed", [False, True])
def test_a_failed_clone_leaves_nothing_and_the_retry_works(
    served: Served, tmp_path: Path, existed: bool
) -> None:
    """Issue 16, item 3: a clone refused for its token left an empty store behind, and the
    retry with a token was refused ("exists and is not empty")."""
    seed(served.store)
    target = tmp_path / "copy"
    if existed:
        target.mkdir()
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("WEIGHTSTORE_TOKEN", None)
    env.pop("WEIGHTSTORE_PATH", None)
    cmd = [sys.executable, "-m", "weightstore.cli.main", "clone", served.url, str(target)]
    refused = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert refused.returncode == 8, refused.stdout + refused.stderr
    assert target.exists() == existed and (not existed or not any(target.iterdir()))
    env["WEIGHTSTORE_TOKEN"] = served.tokens["read"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    with WeightStore.open(target) as store:
        assert sorted(store.tasks()) == ["one", "three", "two"]
