"""Tests of the task loader on the CPU: in-place bit-exact swaps, skipping unchanged tensors,
mismatches, tied weights, cache budgets and pins, corrupt and missing objects, threads, and a
Hypothesis state machine over random activate / prefetch / pin / evict sequences.

Every store is real (SQLite or PostgreSQL index, objects in a local folder); no mocks."""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from sqlalchemy import update
from test_store import FAST, every_dtype, same

from weightstore import TaskLoader, WeightStore
from weightstore.errors import (
    CorruptObject,
    IncompatibleTensor,
    InvalidInput,
    ObjectNotFound,
    SwapFailed,
)
from weightstore.index.models import ObjectRow
from weightstore.loader import parse_bytes

TIMEOUT = 60  # seconds: a deadlock fails the test instead of hanging it


class Net(torch.nn.Module):
    """A small model with a float32 backbone, a head, an int64 buffer and tied weights."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(50, 16)
        self.body = torch.nn.Linear(16, 16)
        self.norm = torch.nn.LayerNorm(16)
        self.head = torch.nn.Linear(16, 4)
        self.out = torch.nn.Linear(16, 50, bias=False)
        self.out.weight = self.embed.weight  # tied
        self.register_buffer("positions", torch.arange(8))


def weights(seed: int, like: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """A state dict for Net: random, or ``like`` with only the head changed when given."""
    g = torch.Generator().manual_seed(seed)
    sd = {k: v.clone() for k, v in (like or Net().state_dict()).items()}
    for k, v in sd.items():
        if v.is_floating_point() and (like is None or k.startswith("head.")):
            sd[k] = torch.randn(v.shape, generator=g)
    sd["out.weight"] = sd["embed.weight"]
    return sd


def fine_tuned(sd: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Every float nudged (stored as deltas), with a NaN and a -0.0 somewhere."""
    g = torch.Generator().manual_seed(seed)
    out = {
        k: v + 1e-3 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone()
        for k, v in sd.items()
    }
    out["body.bias"][0] = float("nan")
    out["body.bias"][1] = -0.0
    out["out.weight"] = out["embed.weight"]
    return out


def holds(
    model: torch.nn.Module | dict[str, torch.Tensor], expected: dict[str, torch.Tensor]
) -> bool:
    sd = model.state_dict() if isinstance(model, torch.nn.Module) else model
    return all(same(sd[k], v) for k, v in expected.items())


def ptrs(model: torch.nn.Module) -> dict[str, int]:
    return {k: v.data_ptr() for k, v in model.state_dict().items()}


def object_path(store: WeightStore, digest: str) -> Path:
    root = Path(store.objects.describe().removeprefix("local:"))
    return root / digest[:2] / digest


def flip_byte(path: Path) -> bytes:
    """Flip one byte in the middle of an object file; return the original bytes."""
    os.chmod(path, 0o644)
    data = path.read_bytes()
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0x01
    path.write_bytes(bytes(bad))
    return data


@pytest.fixture
def store(tmp_path: Path) -> Iterator[WeightStore]:
    s = WeightStore.open(tmp_path / "store", settings=FAST)
    yield s
    s.close()


@pytest.fixture
def tasks(store: WeightStore) -> dict[str, dict[str, torch.Tensor]]:
    """Snapshots: base, a head-only variant (frozen backbone), a full fine-tune (deltas)."""
    base = weights(0)
    head = weights(1, like=base)
    ft = fine_tuned(base, 2)
    store.save("base", base)
    store.save("head", head, parent="base")
    store.save("ft", ft, parent="base")
    return {"base": base, "head": head, "ft": ft}


def test_swaps_in_place_bit_exactly_on_both_indexes(tmp_path: Path, index_url: str) -> None:
    with WeightStore.open(tmp_path / "s", index_url=index_url, settings=FAST) as store:
        base = weights(0)
        ft = fine_tuned(base, 2)
        store.save("base", base)
        store.save("ft", ft)
        model = Net()
        before = ptrs(model)
        with TaskLoader(store, model) as loader:
            for ref in ("ft", "base", "ft"):
                report = loader.activate(ref)
                restored = store.restore(ref)
                assert holds(model, restored)
                assert loader.active is not None and loader.active.id == report.snapshot_id
            assert ptrs(model) == before
            assert report.verified and report.ref == "ft"
            assert report.tensors_total == len(model.state_dict())


def test_only_what_differs_moves(
    store: WeightStore, tasks: dict[str, dict[str, torch.Tensor]]
) -> None:
    model = Net()
    with TaskLoader(store, model) as loader:
        first = loader.activate("base")
        assert first.tensors_changed == first.tensors_total == len(tasks["base"])
        assert first.tensors_moved == len(tasks["base"]) - 1  # tied weights written once
        assert first.bytes_store == sum(
            v.numel() * v.element_size() for k, v in tasks["base"].items() if k != "out.weight"
        )
        swap = loader.activate("head")
        head_bytes = sum(
            v.numel() * v.element_size() for k, v in tasks["head"].items() if k.startswith("head.")
        )
        assert (swap.tensors_changed, swap.tensors_moved, swap.bytes_moved) == (2, 2, head_bytes)
        assert holds(model, tasks["head"])
        again = loader.activate("head")
        assert again.tensors_moved == 0 and again.bytes_moved == 0
        back = loader.activate("base")  # the base head is in the host cache now
        assert back.bytes_host_cache == head_bytes and back.bytes_store == 0
        assert holds(model, tasks["base"])
        loader.invalidate()
        assert loader.active is None
        assert loader.activate("base").tensors_moved == len(tasks["base"]) - 1


def test_state_dict_target_and_tied_names(
    store: WeightStore, tasks: dict[str, dict[str, torch.Tensor]]
) -> None:
    shared = torch.zeros(50, 16)
    target = {k: torch.zeros_like(v) for k, v in tasks["ft"].items()}
    target["embed.weight"] = target["out.weight"] = shared
    with TaskLoader(store, target) as loader:
        report = loader.activate("ft")
    assert holds(target, tasks["ft"]) and target["embed.weight"] is shared
    assert report.tensors_total == len(target) and report.tensors_moved == len(target) - 1


def test_mismatches_are_listed_and_nothing_is_written(
    store: WeightStore, tasks: dict[str, dict[str, torch.Tensor]]
) -> None:
    target = {k: torch.zeros_like(v) for k, v in tasks["base"].items()}
    target["body.weight"] = torch.zeros(16, 15)
    target["head.bias"] = torch.zeros(4, dtype=torch.float64)
    target["extra"] = torch.zeros(3)
    del target["norm.weight"]
    with TaskLoader(store, target) as loader:
        with pytest.raises(IncompatibleTensor) as err:
            loader.activate("base")
        for name in ("body.weight", "head.bias", "extra", "norm.weight", "nothing was written"):
            assert name in str(err.value)
        assert all(not v.any() for v in target.values())
        assert loader.active is None
    with TaskLoader(store, target, strict=False) as loader, pytest.raises(IncompatibleTensor):
        loader.activate("base")  # shapes and dtypes are checked even when not strict
    del target["body.weight"], target["head.bias"]
    with TaskLoader(store, target, strict=False) as loader:
        loader.activate("base")
    assert not target["extra"].any()
    assert all(same(target[k], tasks["base"][k]) for k in target if k != "extra")
    # strict per call, as the README places it, over the loader's default.
    for t in target.values():
        t.zero_()
    with TaskLoader(store, target) as loader:
        with pytest.raises(IncompatibleTensor):
            loader.activate("base")
        report = loader.activate("base", strict=False)
        assert report.tensors_total == len(target) - 1 and loader.active is not None
        with pytest.raises(IncompatibleTensor):
            loader.activate("head", strict=True)
    assert all(same(target[k], tasks["base"][k]) for k in target if k != "extra")


def test_bad_arguments_are_refused(
    store: WeightStore, tasks: dict[str, dict[str, torch.Tensor]]
) -> None:
    assert parse_bytes("8GiB") == 8 << 30
    assert parse_bytes("1.5 kb") == 1500
    assert parse_bytes(0) == 0
    for bad in ("8 gigs", "-1", "", "GiB", -5, True, 1.5):
        with pytest.raises(InvalidInput):
            parse_bytes(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="host_cache"):
        TaskLoader(store, Net(), host_cache="lots")
    with pytest.raises(InvalidInput, match="move the model"):
        TaskLoader(store, Net(), device="meta")
    with pytest.raises(InvalidInput):
        TaskLoader(store, [torch.zeros(1)])  # type: ignore[arg-type]
    loader = TaskLoader(store, Net())
    loader.close()
    with pytest.raises(InvalidInput, match="closed"):
        loader.activate("base")


def test_budget_eviction_and_pins(
    store: WeightStore, tasks: dict[str, dict[str, torch.Tensor]]
) -> None:
    model = Net()
    head_bytes = 16 * 4 * 4 + 4 * 4
    budget = 2 * head_bytes  # room for two heads, nothing else
    with TaskLoader(store, model, host_cache=budget) as loader:
        loader.activate("base")
        loader.activate("head")
        # Which small tensors share the budget with the heads depends on the order the
        # decode threads finish in; the budget itself never moves.
        assert loader.stats().host_cache.peak <= budget
        loader.pin("head")
        loader.activate("ft")  # most of ft does not fit; the pinned head stays
        stats = loader.stats().host_cache
        assert stats.peak <= budget and stats.pinned >= 2 and stats.evictions >= 1
        assert stats.refused > 0
        assert loader.activate("head").bytes_host_cache >= head_bytes
        loader.evict()
        stats = loader.stats().host_cache
        assert stats.items == stats.pinned >= 2  # only pinned ones stay
        loader.unpin("head")
        assert loader.evict() == stats.bytes
        assert loader.stats().host_cache.bytes == 0
        assert holds(model, tasks["head"])


def test_a_delta_is_decoded_against_its_cached_base(
    store: WeightStore, tasks: dict[str, dict[str, torch.Tensor]]
) -> None:
    model = Net()
    with TaskLoader(store, model) as loader:
        loader.prefetch("base").result(timeout=TIMEOUT)
        # With the base's objects gone, only a decode against the cached base can succeed.
        kept = {e.digest for e in store.show("ft").tensors}
        for d in {t.digest for t in store.show("base").tensors} - kept:
            object_path(store, d).unlink()
        report = loader.activate("ft")
        assert report.bytes_store > 0 and holds(model, tasks["ft"])


@pytest.mark.parametrize("damage", ["flip", "unlink"])
def test_a_bad_object_leaves_the_model_as_it_was(
    store: WeightStore, tasks: dict[str, dict[str, torch.Tensor]], damage: str
) -> None:
    """Everything fits the staging budget: a corrupt or missing object is found before the
    first write; the model keeps its weights and ``active``; activate again recovers."""
    model = Net()
    body = next(t for t in store.show("ft").tensors if t.name == "body.weight")
    path = object_path(store, body.digest)
    with TaskLoader(store, model, host_cache=0) as loader:
        loader.activate("base")
        original = flip_byte(path)
        if damage == "unlink":
            path.unlink()
        expected = CorruptObject if damage == "flip" else ObjectNotFound
        # ft is stored as deltas of base, which the model holds: those are applied over the
        # model's own tensors and put back when the damaged one is found.
        with pytest.raises(expected, match=r"nothing was written|was put back"):
            loader.activate("ft")
        assert holds(model, tasks["base"]) and loader.active is not None
        assert loader.active.task == "base"
        path.write_bytes(original)
        loader.activate("ft")
        assert holds(model, tasks["ft"])
        assert loader.stats().failed_swaps == 1


def test_a_failure_after_writing_began_is_swap_failed(
    store: WeightStore, tasks: dict[str, dict[str, torch.Tensor]]
) -> None:
    model = Net()
    body = next(t for t in store.show("ft").tensors if t.name == "body.weight")
    path = object_path(store, body.digest)
    # staging=0: too big to stage, so tensors are written as they are decoded.
    with TaskLoader(store, model, host_cache=0, staging=0) as loader:
        loader.activate("base")
        original = flip_byte(path)
        with pytest.raises(SwapFailed, match="active is None"):
            loader.activate("ft")
        assert loader.active is None
        path.write_bytes(original)
        loader.activate("ft")
        assert holds(model, tasks["ft"]) and loader.active is not None
        path.unlink()
        loader.invalidate()
        with pytest.raises(SwapFailed) as err:
            loader.activate("ft")
        assert isinstance(err.value.__cause__, ObjectNotFound)
        assert loader.active is None
        path.write_bytes(original)
        loader.activate("base")
        assert holds(model, tasks["base"])


def test_concurrent_activate_and_prefetch(
    store: WeightStore, tasks: dict[str, dict[str, torch.Tensor]]
) -> None:
    model = Net()
    before = ptrs(model)
    refs = list(tasks)
    errors: list[BaseException] = []
    with TaskLoader(store, model, host_cache=40_000) as loader:

        def worker(seed: int) -> None:
            rng = random.Random(seed)
            try:
                for _ in range(15):
                    ref = rng.choice(refs)
                    if rng.random() < 0.5:
                        loader.prefetch(ref).result(timeout=TIMEOUT)
                    else:
                        report = loader.activate(ref)
                        assert report.snapshot_id == store.resolve(ref)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
        assert not any(t.is_alive() for t in threads), "deadlock"
        assert not errors, errors
        active = loader.active
        assert active is not None and holds(model, tasks[active.task])
        assert loader.stats().host_cache.peak <= 40_000
    assert ptrs(model) == before


# ------------------------------------------------------------------------------ state machine

DTYPE_NAMES = list(every_dtype())


def _variant(base: dict[str, torch.Tensor], seed: int, share: float) -> dict[str, torch.Tensor]:
    """``base`` with some tensors replaced by random ones (floats nudged, so deltas occur)."""
    g = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    out = {}
    for k, v in base.items():
        if rng.random() < share:
            out[k] = v
        elif v.is_floating_point() and v.dtype.itemsize > 1:
            out[k] = (
                v.double() * (1 + 1e-3 * torch.randn(v.shape, generator=g, dtype=torch.float64))
            ).to(v.dtype)
        else:
            out[k] = v.flip(0).clone()
    return out


class LoaderMachine(RuleBasedStateMachine):
    """Random activate / prefetch / pin / unpin / evict over four tasks of every dtype that
    share some tensors, with small budgets; after each step the model holds the active
    snapshot bit-exactly, no budget was exceeded and no tensor moved in memory."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="ws-loader-")
        self.store = WeightStore.open(Path(self.dir) / "s", settings=FAST)
        base = every_dtype()
        self.expected = {"base": base}
        self.store.save("base", base)
        for i, share in enumerate((0.9, 0.5, 0.0), 1):
            task = f"t{i}"
            self.expected[task] = _variant(base, i, share)
            self.store.save(task, self.expected[task], parent="base")
        self.model = {k: torch.zeros_like(v) for k, v in base.items()}
        self.ptrs = {k: v.data_ptr() for k, v in self.model.items()}
        size = sum(v.numel() * v.element_size() for v in base.values())
        self.budget = size * 3 // 2
        self.loader = TaskLoader(self.store, self.model, host_cache=self.budget, staging=size // 2)
        self.pinned: list[str] = []

    tasks = st.sampled_from(["base", "t1", "t2", "t3"])

    @rule(task=tasks)
    def activate(self, task: str) -> None:
        report = self.loader.activate(task)
        assert report.snapshot_id == self.store.resolve(task)

    @rule(task=tasks)
    def prefetch(self, task: str) -> None:
        self.loader.prefetch(task).result(timeout=TIMEOUT)

    @rule(task=tasks)
    def pin(self, task: str) -> None:
        self.loader.pin(task)
        self.pinned.append(task)

    @precondition(lambda self: self.pinned)
    @rule()
    def unpin(self) -> None:
        self.loader.unpin(self.pinned.pop())

    @rule()
    def evict(self) -> None:
        self.loader.evict()

    @invariant()
    def model_matches_active(self) -> None:
        active = self.loader.active
        if active is not None:
            assert holds(self.model, self.expected[active.task])
        assert {k: v.data_ptr() for k, v in self.model.items()} == self.ptrs
        stats = self.loader.stats()
        assert stats.host_cache.peak <= self.budget and stats.gpu_cache.peak == 0

    def teardown(self) -> None:
        self.loader.close()
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)


LoaderMachine.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_loader_state_machine = LoaderMachine.TestCase


@pytest.mark.gpu
def test_cuda_swaps_through_both_caches(
    store: WeightStore, tasks: dict[str, dict[str, torch.Tensor]]
) -> None:
    model = Net().cuda()
    before = ptrs(model)
    with TaskLoader(store, model, device="cuda", gpu_cache="64MiB", host_cache="64MiB") as loader:
        cold = loader.activate("ft")
        assert cold.bytes_store > 0
        loader.activate("base")
        back = loader.activate("ft")
        assert back.bytes_gpu_cache > 0 and back.bytes_store == 0
        assert holds(model, tasks["ft"])
        assert loader.stats().gpu_cache.bytes > 0
    assert ptrs(model) == before


def test_reader_restores_through_the_transfer_layer(
    store: WeightStore, tasks: dict[str, dict[str, torch.Tensor]]
) -> None:
    """The reader's CPU path, and on a GPU machine its staged CUDA path, stay bit-exact."""
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        got = store.restore("ft", device=dev)
        assert all(same(got[k], v) for k, v in tasks["ft"].items())
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda r: store.restore(r), ["base", "head"]))
    assert all(same(results[0][k], v) for k, v in tasks["base"].items())


def test_report_swap_cli_json_and_plot(
    store: WeightStore, tasks: dict[str, dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from weightstore.cli.main import app

    root = Path(store.objects.describe().removeprefix("local:")).parent
    png = tmp_path / "swap.png"
    argv = ["--store", str(root), "report", "swap", "base", "head", "-n", "2", "--json"]
    result = CliRunner().invoke(app, [*argv, "--plot", str(png)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    kinds = {r["kind"] for r in out["rows"]}
    assert {"store cold", "store warm", "host cache", "pair (host cache)"} <= kinds
    assert {"load_file + clone", "raw copy"} <= kinds and "gpu cache" not in kinds
    assert "CPU tiers only" in out["note"] and png.stat().st_size > 0
    pair = next(r for r in out["rows"] if r["kind"].startswith("pair"))
    assert pair["refs"] == "base -> head" and pair["bytes"] == 16 * 4 * 4 + 4 * 4
    assert all(r["p50_ms"] <= r["p95_ms"] for r in out["rows"])
    table = CliRunner().invoke(app, argv[:-1], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "host cache" in table.stdout
    bad = CliRunner().invoke(app, [*argv[:5], "nope"], env={"COLUMNS": "200"})
    assert bad.exit_code == 3  # an unknown ref
    if not torch.cuda.is_available():
        no_gpu = CliRunner().invoke(app, [*argv, "--device", "cuda"], env={"COLUMNS": "200"})
        assert no_gpu.exit_code == 2 and "CUDA is not available" in no_gpu.output


# ----------------------------------------------------------------- deltas applied in place


def _chain(store: WeightStore, n: int) -> list[dict[str, torch.Tensor]]:
    """Task "ft": ``n`` checkpoints, each every tensor nudged (floats as ULP deltas, integers
    changed in a few places: XOR deltas) from the one before; a tied pair."""
    sd = every_dtype()
    sd["f32.tied"] = sd["f32"]
    out: list[dict[str, torch.Tensor]] = []
    for step in range(1, n + 1):
        if out:
            sd = _variant(out[-1], step, 0.0)
            sd["i64"] = out[-1]["i64"].clone()
            sd["i64"][step] += 1
            sd["f32.tied"] = sd["f32"]
        store.save("ft", sd, step=step)
        out.append(sd)
    return out


def _delta_bytes(
    store: WeightStore, ref: str, parent: str, skip: frozenset[str] = frozenset()
) -> int:
    """Bytes of ``ref``'s tensors stored as deltas of ``parent``'s (same name), but ``skip``."""
    snap, held = store.show(ref), {t.name: t.digest for t in store.show(parent).weights}
    chains = store.reader.chains({t.digest for t in snap.weights})
    seen, total = set(), 0
    for t in snap.weights:
        if t.name in skip:
            continue
        if t.digest not in seen and chains[t.digest][0].base == held.get(t.name):
            total += t.nbytes
        seen.add(t.digest)
    return total


def _model_for(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    model = {k: torch.zeros_like(v) for k, v in sd.items() if k != "f32.tied"}
    model["f32.tied"] = model["f32"]
    return model


# "device": the path a GPU tensor takes (torch ops, device checksum), run on the CPU here.
APPLY = ["auto", "device"]


@pytest.mark.parametrize("apply", APPLY)
@pytest.mark.parametrize("staging", [1 << 30, 0])  # staged: decoded aside first; streamed
def test_a_child_of_what_the_model_holds_moves_only_its_deltas(
    store: WeightStore, staging: int, apply: Literal["auto", "device"]
) -> None:
    ckpts = _chain(store, 5)
    model = _model_for(ckpts[0])
    before = {k: v.data_ptr() for k, v in model.items()}
    with TaskLoader(store, model, host_cache=0, staging=staging, apply_deltas=apply) as loader:
        first = loader.activate("ft@1")
        assert first.bytes_delta_in_place == 0 and first.bytes_store > 0
        for step in range(2, 6):
            report = loader.activate(f"ft@{step}")
            assert holds(model, ckpts[step - 1])
            changed = sum(v.nbytes for k, v in ckpts[step - 1].items() if k != "f32.tied")
            # Every tensor stored as a delta of the one held is applied to it; only those the
            # writer stored whole (a delta would not have been smaller) come from the store.
            # Torch ops apply deltas in place to contiguous tensors only.
            skip = {k for k, v in model.items() if apply == "device" and not v.is_contiguous()}
            deltas = _delta_bytes(store, f"ft@{step}", f"ft@{step - 1}", frozenset(skip))
            assert deltas > changed // 2
            assert report.bytes_delta_in_place == deltas, report
            assert report.bytes_store == report.bytes_moved - deltas  # the rest, all of it
            assert 0 < report.delta_bytes_read < deltas
            assert report.bytes_moved <= changed  # a few specials come out the same
        # Two links up at once: from ft@3 straight to ft@5.
        loader.activate("ft@3")
        report = loader.activate("ft@5")
        assert holds(model, ckpts[4]) and report.bytes_delta_in_place > 0
        # Held weights a user changed in place (the version moved) are never a base.
        loader.activate("ft@4")
        clean = loader.activate("ft@5")
        loader.activate("ft@4")
        model["f64"].mul_(2)
        report = loader.activate("ft@5")
        assert holds(model, ckpts[4])
        assert report.bytes_delta_in_place == clean.bytes_delta_in_place - model["f64"].nbytes
        # Unrelated weights held: the whole chain is decoded, as before.
        loader.invalidate()
        report = loader.activate("ft@5")
        assert report.bytes_delta_in_place == 0 and holds(model, ckpts[4])
    assert {k: v.data_ptr() for k, v in model.items()} == before


@pytest.mark.parametrize("apply", APPLY)
def test_a_damaged_delta_applied_in_place(
    store: WeightStore, apply: Literal["auto", "device"]
) -> None:
    ckpts = _chain(store, 3)
    model = _model_for(ckpts[0])
    victim = next(t for t in store.show("ft@3").weights if t.name == "f32")
    rec = store.reader.chains([victim.digest])[victim.digest][0]
    assert rec.encoding in ("sub", "delta")
    flip_byte(object_path(store, victim.digest))
    # staged: the model is put back
    with TaskLoader(store, model, host_cache=0, apply_deltas=apply) as loader:
        loader.activate("ft@2")
        with pytest.raises(CorruptObject, match="was put back"):
            loader.activate("ft@3")
        assert holds(model, ckpts[1]) and loader.active is not None
    with TaskLoader(store, model, host_cache=0, staging=0, apply_deltas=apply) as loader:
        loader.activate("ft@2")
        with pytest.raises(SwapFailed):
            loader.activate("ft@3")
        assert loader.active is None
        loader.activate("ft@2")
        assert holds(model, ckpts[1])
    # The base it would be put back from is damaged too: then it says the model is a mix.
    held = next(t for t in store.show("ft@2").weights if t.name == "f32")
    with TaskLoader(store, model, host_cache=0, apply_deltas=apply) as loader:
        loader.activate("ft@2")
        flip_byte(object_path(store, held.digest))
        with pytest.raises(SwapFailed, match="could not be put back"):
            loader.activate("ft@3")
        assert loader.active is None


def _set_device_checksum(store: WeightStore, digest: str, value: int | None) -> None:
    with store.index.engine.begin() as conn:
        conn.execute(
            update(ObjectRow).where(ObjectRow.digest == digest).values(device_checksum=value)
        )


@pytest.mark.parametrize("staging", [1 << 30, 0])
def test_the_device_checksum_is_checked_after_an_apply(store: WeightStore, staging: int) -> None:
    """A wrong result of an apply on the device (here: the recorded checksum altered, as a
    bad kernel or memory would show) is caught there: staged, the tensor is put back; streamed,
    SwapFailed. An object without a recorded checksum (before 0007) is checked on the host."""
    ckpts = _chain(store, 3)
    model = _model_for(ckpts[0])
    f32 = next(t for t in store.show("ft@3").weights if t.name == "f32")
    rec = store.reader.chains([f32.digest])[f32.digest][0]
    assert rec.device_checksum is not None and rec.base is not None
    _set_device_checksum(store, f32.digest, rec.device_checksum ^ 1)
    with TaskLoader(store, model, host_cache=0, staging=staging, apply_deltas="device") as loader:
        loader.activate("ft@2")
        if staging:
            with pytest.raises(CorruptObject, match=r"device checksum .* was put back"):
                loader.activate("ft@3")
            assert holds(model, ckpts[1]) and loader.active is not None
        else:
            with pytest.raises(SwapFailed, match="device checksum"):
                loader.activate("ft@3")
            assert loader.active is None
            loader.activate("ft@2")
        _set_device_checksum(store, f32.digest, None)  # recorded before revision 0007
        report = loader.activate("ft@3")
        assert holds(model, ckpts[2]) and report.bytes_delta_in_place >= f32.nbytes
        loader.activate("ft@2")
        flip_byte(object_path(store, f32.digest))  # and the host check catches damage
        with pytest.raises((CorruptObject, SwapFailed)):
            loader.activate("ft@3")


class DeltaChainMachine(RuleBasedStateMachine):
    """Random swaps over one task's chain of checkpoints (every dtype: ULP and XOR deltas,
    tied weights) and an unrelated task, with no host cache so every delta is applied to what
    the model holds, staged or streamed, by the codec or by torch ops (the device path), and
    random in-place writes by the user; after each
    swap the model holds the active snapshot bit-exactly and no tensor moved in memory."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="ws-chain-")
        self.store = WeightStore.open(Path(self.dir) / "s", settings=FAST)
        self.ckpts = _chain(self.store, 5)
        other = _variant(self.ckpts[0], 99, 0.0)
        other["f32.tied"] = other["f32"]
        self.store.save("other", other)
        self.expected = {f"ft@{i + 1}": sd for i, sd in enumerate(self.ckpts)}
        self.expected["other"] = other
        self.model = _model_for(self.ckpts[0])
        self.ptrs = {k: v.data_ptr() for k, v in self.model.items()}
        self.loaders = [
            TaskLoader(self.store, self.model, host_cache=0, staging=staging, apply_deltas=a)
            for staging in (1 << 30, 0)
            for a in ("auto", "device")
        ]
        self.current: str | None = None

    refs = st.sampled_from(["ft@1", "ft@2", "ft@3", "ft@4", "ft@5", "other"])

    @rule(ref=refs, which=st.integers(0, 3))
    def activate(self, ref: str, which: int) -> None:
        """Staged or streamed, deltas applied by the codec or by torch ops."""
        for i, other in enumerate(self.loaders):
            if i != which:
                other.invalidate()  # it did not see this loader's writes
        self.loaders[which].activate(ref)
        self.current = ref

    @rule(name=st.sampled_from(["f64", "f32", "i64", "bf16"]))
    def scribble(self, name: str) -> None:
        t = self.model[name]
        t.copy_(torch.zeros_like(t) if t.is_floating_point() else t + 1)
        self.current = None

    @invariant()
    def model_matches(self) -> None:
        if self.current is not None:
            assert holds(self.model, self.expected[self.current])
        assert {k: v.data_ptr() for k, v in self.model.items()} == self.ptrs

    def teardown(self) -> None:
        for loader in self.loaders:
            loader.close()
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)


DeltaChainMachine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_delta_chain_state_machine = DeltaChainMachine.TestCase


@pytest.mark.gpu
@pytest.mark.parametrize("staging", [1 << 30, 0])
def test_cuda_deltas_are_applied_in_place_on_the_device(store: WeightStore, staging: int) -> None:
    ckpts = _chain(store, 4)
    model = {k: v.cuda() for k, v in _model_for(ckpts[0]).items() if k != "f32.tied"}
    model["f32.tied"] = model["f32"]
    before = {k: v.data_ptr() for k, v in model.items()}
    with TaskLoader(
        store, model, device="cuda", gpu_cache=0, host_cache=0, staging=staging
    ) as loader:
        loader.activate("ft@1")
        for step in (2, 3, 4):
            report = loader.activate(f"ft@{step}")
            assert holds(model, ckpts[step - 1])
            assert report.bytes_delta_in_place > 0 and report.delta_bytes_read > 0
        f32 = next(t for t in store.show("ft@4").weights if t.name == "f32")
        loader.activate("ft@3")
        _set_device_checksum(store, f32.digest, 12345)
        with pytest.raises((CorruptObject, SwapFailed), match="device checksum"):
            loader.activate("ft@4")
        if staging:
            assert holds(model, ckpts[2])
    assert {k: v.data_ptr() for k, v in model.items()} == before
