"""Background saves and training state (issue 15): ``save_async`` captures and returns, the
snapshot equals the state at the call, saves commit in order, errors surface on the Future and
on ``wait`` / ``close``, back-pressure bounds memory; optimizer, scheduler and RNG states make a
resumed run equal to an uninterrupted one bit for bit. Real stores on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from weightstore.errors import (
    Conflict,
    InvalidInput,
    InvalidRef,
    PendingSaveFailed,
    StorageError,
)
from weightstore.settings import StoreSettings
from weightstore.store import WeightStore
from weightstore.testing.faults import FaultBackend
from weightstore.types import OPTIMIZER_PREFIX, TRAINING_KEY


@pytest.fixture
def store(tmp_path: Path, index_url: str) -> Iterator[WeightStore]:
    s = WeightStore.open(tmp_path / "store", index_url=index_url, settings=StoreSettings(threads=2))
    yield s
    s.close()


def make(
    seed: int = 1,
) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    return model, opt, sched


def train(model: torch.nn.Module, opt: torch.optim.Optimizer, sched: object, steps: int) -> None:
    """Steps that draw from every RNG a resumed run must continue: torch, numpy, random."""
    for _ in range(steps):
        x = torch.randn(4, 8) * (1 + np.random.rand()) + random.random()
        loss = model(torch.nn.functional.dropout(x, 0.1)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()  # type: ignore[attr-defined]


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("background", [False, True])
def test_a_resumed_run_equals_the_uninterrupted_one(store: WeightStore, background: bool) -> None:
    model, opt, sched = make()
    train(model, opt, sched, 5)
    if background:
        store.save_async("run", model, step=5, optimizer=opt, scheduler=sched, rng=True)
    else:
        store.save("run", model, step=5, optimizer=opt, scheduler=sched, rng=True)
    train(model, opt, sched, 7)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    store.wait()

    fresh, fresh_opt, fresh_sched = make(seed=99)
    store.restore("run@5", into=fresh, optimizer=fresh_opt, scheduler=fresh_sched, rng=True)
    train(fresh, fresh_opt, fresh_sched, 7)
    assert same(fresh.state_dict(), expected)
    assert fresh_sched.state_dict() == sched.state_dict()


def test_the_snapshot_is_the_state_at_the_call(store: WeightStore) -> None:
    model, opt, _ = make()
    train(model, opt, torch.optim.lr_scheduler.StepLR(opt, 1), 2)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    moments = {
        f"{OPTIMIZER_PREFIX}{pid}/{key}": v.clone()
        for pid, state in opt.state_dict()["state"].items()
        for key, v in state.items()
    }
    future = store.save_async("run", model, step=1, optimizer=opt)
    with torch.no_grad():  # every weight and moment changes the moment save_async returns
        for p in model.parameters():
            p.add_(1.0)
        for state in opt.state.values():
            for v in state.values():
                v.mul_(-3.0)
    snap = future.result(timeout=60)
    assert same(store.restore(snap.id), weights)
    stored = {t.name for t in snap.tensors if t.name.startswith(OPTIMIZER_PREFIX)}
    assert stored == set(moments)
    restored_opt = make()[1]
    store.restore(snap.id, into=make()[0], optimizer=restored_opt)
    back = {
        f"{OPTIMIZER_PREFIX}{pid}/{key}": v
        for pid, state in restored_opt.state_dict()["state"].items()
        for key, v in state.items()
    }
    assert same(back, moments)


def test_saves_commit_in_order_each_the_parent_of_the_next(store: WeightStore) -> None:
    futures = [store.save_async("t", {"w": torch.full((64,), float(i))}, step=i) for i in range(6)]
    snaps = [f.result(timeout=60) for f in futures]
    assert [s.step for s in store.log("t")] == [5, 4, 3, 2, 1, 0]
    for before, after in itertools.pairwise(snaps):
        assert after.parent == before.id
    for i, s in enumerate(snaps):
        assert torch.equal(store.restore(s.id)["w"], torch.full((64,), float(i)))


def test_a_failed_save_is_on_its_future_on_wait_and_on_close(tmp_path: Path) -> None:
    store = WeightStore.open(tmp_path / "s", create=True)
    store.save("t", {"w": torch.ones(3)}, step=1)
    bad = store.save_async("t", {"w": torch.zeros(3)}, step=1)  # the step is taken
    good = store.save_async("t", {"w": torch.zeros(3)}, step=2)
    with pytest.raises(Conflict):
        bad.result(timeout=60)
    assert good.result(timeout=60).step == 2  # the queue goes on
    with pytest.raises(PendingSaveFailed) as raised:
        store.wait()
    assert isinstance(raised.value.__cause__, Conflict)
    store.wait()  # reported once
    store.save_async("t", {"w": torch.zeros(3)}, step=2)
    with pytest.raises(PendingSaveFailed):
        store.close()
    with WeightStore.open(tmp_path / "s") as again:
        assert [s.step for s in again.log("t")] == [2, 1]


def test_bad_input_is_refused_in_the_caller(store: WeightStore) -> None:
    one = {"w": torch.ones(1)}
    cases: list[tuple[dict[str, torch.Tensor], dict[str, object]]] = [
        (one, {"step": -1}),
        ({"::train/x": torch.ones(1)}, {}),
        (one, {"metadata": {TRAINING_KEY: 1}}),
        (one, {"tags": ["12"]}),
    ]
    with pytest.raises(InvalidRef):
        store.save_async("", one)
    for weights, kwargs in cases:
        with pytest.raises((InvalidInput, ValueError)):
            store.save_async("t", weights, **kwargs)  # type: ignore[arg-type]
    store.wait()
    assert store.tasks() == []


def test_a_full_disk_fails_the_future_and_keeps_the_store(tmp_path: Path) -> None:
    """A real full disk cannot be made here: the backend raises as one would."""

    def full(op: str, key: str | None) -> None:
        if op == "put":
            raise StorageError("No space left on device")

    store = WeightStore.open(
        tmp_path / "s", create=True, wrap_objects=lambda b: FaultBackend(b, before=full)
    )
    future = store.save_async("t", {"w": torch.randn(100)}, step=1)
    with pytest.raises(StorageError):
        future.result(timeout=60)
    with pytest.raises(PendingSaveFailed):
        store.wait()
    assert store.tasks() == []
    assert store.verify().ok
    store.close()


def test_back_pressure_bounds_what_pending_saves_hold(tmp_path: Path) -> None:
    """A slow backend: ``save_async`` waits (and says so) instead of holding more copies."""
    each = 256 * 1024 * 4  # bytes of one save's capture

    def slow(op: str, key: str | None) -> None:
        if op == "put":
            time.sleep(0.05)

    settings = StoreSettings(threads=2, max_pending_saves=3, max_pending_bytes=2 * each)
    store = WeightStore.open(
        tmp_path / "s",
        create=True,
        settings=settings,
        wrap_objects=lambda b: FaultBackend(b, before=slow),
    )
    futures = [store.save_async("t", {"w": torch.randn(256 * 1024)}, step=i) for i in range(6)]
    store.wait()
    saver = store._background()  # noqa: SLF001 (the peak is the point of the test)
    assert saver.peak_bytes <= 2 * each
    assert all(f.nbytes == each for f in futures)
    assert sum(f.waited_seconds for f in futures) > 0.05
    assert [s.step for s in store.log("t")] == list(reversed(range(6)))
    store.close()


def test_restoring_training_state_that_was_not_saved_changes_nothing(store: WeightStore) -> None:
    model = make()[0]
    store.save("run", model, step=1)
    target, target_opt, _ = make(seed=7)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(InvalidInput, match="no optimizer state"):
        store.restore("run@1", into=target, optimizer=target_opt)
    assert same(target.state_dict(), before)


def test_training_state_is_not_a_weight(store: WeightStore) -> None:
    model, opt, sched = make()
    train(model, opt, sched, 1)
    snap = store.save("run", model, optimizer=opt, scheduler=sched, rng=True)
    assert set(store.restore(snap.id)) == set(model.state_dict())
    assert {t.name for t in snap.weights} == set(model.state_dict())
    assert store.summaries("run")[0].tensor_count == len(model.state_dict())
    record = snap.metadata[TRAINING_KEY]
    assert record["optimizer"]["class"] == "AdamW" and record["scheduler"]["class"] == "StepLR"


def test_saves_from_two_threads_all_commit(store: WeightStore) -> None:
    def work(task: str) -> None:
        for i in range(4):
            store.save_async(task, {"w": torch.full((32,), float(i))}, step=i)

    threads = [threading.Thread(target=work, args=(f"t{j}",)) for j in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.wait()
    assert sorted(store.tasks()) == ["t0", "t1", "t2"]
    assert all(store.count_snapshots(f"t{j}") == 4 for j in range(3))


@pytest.mark.gpu
def test_a_cuda_capture_is_the_state_at_the_call(store: WeightStore) -> None:
    w = torch.randn(1 << 20, device="cuda")
    expected = w.cpu()
    future = store.save_async("gpu", {"w": w})
    w.mul_(2.0)  # queued behind the copy on the caller's stream
    assert torch.equal(store.restore(future.result(timeout=60).id)["w"], expected)


# ------------------------------------------------------------------- the HF Trainer


@pytest.mark.filterwarnings(
    "ignore::FutureWarning", "ignore::DeprecationWarning", "ignore::UserWarning"
)
@pytest.mark.parametrize("background", [True, False])
def test_the_trainer_callback_saves_every_checkpoint_bit_exact(
    tmp_path: Path, background: bool
) -> None:
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import load_file

    from weightstore.integrations.transformers import WeightstoreCallback

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=2,
    )
    model = transformers.BertForSequenceClassification(config)
    g = torch.Generator().manual_seed(1)
    data = [
        {"input_ids": torch.randint(0, 64, (8,), generator=g), "labels": int(i % 2)}
        for i in range(32)
    ]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=6,
        save_steps=2,
        per_device_train_batch_size=4,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    with WeightStore.open(tmp_path / "store", create=True) as store:
        callback = WeightstoreCallback(store, "bert-run", async_=background)
        trainer = transformers.Trainer(
            model=model, args=args, train_dataset=data, callbacks=[callback]
        )
        trainer.train()
        assert [s.step for s in reversed(store.log("bert-run"))] == [2, 4, 6]
        for step in (2, 4, 6):
            theirs = load_file(str(tmp_path / "out" / f"checkpoint-{step}" / "model.safetensors"))
            ours = store.restore(f"bert-run@{step}")
            assert theirs and all(torch.equal(ours[k], v) for k, v in theirs.items())
            optimizer = torch.load(
                tmp_path / "out" / f"checkpoint-{step}" / "optimizer.pt", weights_only=True
            )
            fresh = transformers.BertForSequenceClassification(config)
            restored = transformers.Trainer(model=fresh, args=args).create_optimizer()
            store.restore(f"bert-run@{step}", into=fresh, optimizer=restored)
            for pid, state in optimizer["state"].items():
                for key, value in state.items():
                    assert torch.equal(restored.state_dict()["state"][pid][key], value)
            snap = store.show(f"bert-run@{step}")
            assert snap.metadata["trainer"]["global_step"] == step
            assert "loss" in snap.metadata["metrics"]


# ------------------------------------------------------------------------ Lightning


def _lightning_run(
    root: Path, steps: int, plugins: list[Any], ckpt: str | None = None, top_k: int = -1
) -> dict[str, torch.Tensor]:
    """A deterministic CPU run of a tiny LightningModule, checkpointing every epoch (2 steps);
    the weights it ends with."""
    L = pytest.importorskip("lightning")
    from lightning.pytorch.callbacks import ModelCheckpoint

    class Tiny(L.LightningModule):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(4, 2)

        def training_step(self, batch: Any, index: int) -> torch.Tensor:
            return self.net(batch[0]).pow(2).mean()  # type: ignore[no-any-return]

        def configure_optimizers(self) -> Any:
            opt = torch.optim.Adam(self.parameters(), lr=0.01)
            return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 1)}

    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.randn(8, 4, generator=g)), batch_size=4
    )
    torch.manual_seed(0)
    model = Tiny()
    trainer = L.Trainer(
        max_steps=steps,
        default_root_dir=str(root),
        plugins=plugins or None,
        callbacks=[ModelCheckpoint(every_n_epochs=1, save_top_k=top_k)],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(model, data, ckpt_path=ckpt)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    return bool(a == b)


LIGHTNING_WARNINGS = [
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]


@pytest.mark.parametrize("background", [True, False])
@LIGHTNING_WARNINGS[0]
@LIGHTNING_WARNINGS[1]
@LIGHTNING_WARNINGS[2]
def test_the_lightning_plugin_is_a_faithful_checkpoint_io(tmp_path: Path, background: bool) -> None:
    """Every checkpoint Lightning asks for is a snapshot; loading one gives exactly what
    Lightning's own ``TorchCheckpointIO`` file holds (same run, same paths); a run resumed
    through the plugin ends exactly where one resumed from Lightning's files does."""
    from weightstore.integrations.lightning import WeightstoreCheckpointIO

    root = tmp_path / "run"
    with WeightStore.open(tmp_path / "store", create=True) as store:
        plugin = WeightstoreCheckpointIO(store, "lt", async_=background)
        ours = _lightning_run(root, 6, [plugin])
        assert [s.step for s in reversed(store.log("lt"))] == [2, 4, 6]
        theirs = _lightning_run(root, 6, [])  # the default CheckpointIO: files, same paths
        assert _same(ours, theirs)
        for name in ("epoch=0-step=2.ckpt", "epoch=1-step=4.ckpt", "epoch=2-step=6.ckpt"):
            path = root / "checkpoints" / name
            assert _same(plugin.load_checkpoint(path), torch.load(path, weights_only=False))
            (root / "checkpoints" / name).unlink()  # from here on only the store has them

        resumed_ours = _lightning_run(
            tmp_path / "again", 6, [plugin], str(root / "checkpoints" / "epoch=1-step=4.ckpt")
        )
    fresh = tmp_path / "files"
    _lightning_run(fresh, 6, [])
    resumed_theirs = _lightning_run(
        tmp_path / "again2", 6, [], str(fresh / "checkpoints" / "epoch=1-step=4.ckpt")
    )
    assert _same(resumed_ours, resumed_theirs)


@LIGHTNING_WARNINGS[0]
@LIGHTNING_WARNINGS[1]
@LIGHTNING_WARNINGS[2]
def test_lightning_top_k_removes_the_snapshots_it_drops(tmp_path: Path) -> None:
    from weightstore.integrations.lightning import WeightstoreCheckpointIO

    with WeightStore.open(tmp_path / "store", create=True) as store:
        _lightning_run(tmp_path / "run", 6, [WeightstoreCheckpointIO(store, "lt")], top_k=1)
        assert [s.step for s in store.log("lt")] == [6]


def test_a_script_that_exits_without_wait_still_commits(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = (
        "import sys, torch\n"
        "from weightstore import WeightStore\n"
        "s = WeightStore.open(sys.argv[1], create=True)\n"
        "for i in range(3):\n"
        "    s.save_async('t', {'w': torch.full((1 << 16,), float(i))}, step=i)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "s")], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    with WeightStore.open(tmp_path / "s") as store:
        assert [s.step for s in store.log("t")] == [2, 1, 0]
