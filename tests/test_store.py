"""The facade end to end on real SQLite/PostgreSQL and real files: bit-exact round trips of every
dtype, in-place restores, refs, tags, diff, prune, gc, verify, export/import and bad input."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from weightstore import StoreSettings, WeightStore
from weightstore.errors import (
    Conflict,
    CorruptFile,
    CorruptObject,
    IncompatibleTensor,
    InvalidInput,
    InvalidRef,
    LockHeld,
    RefNotFound,
    UnsupportedDtype,
)
from weightstore.settings import CodecSettings

FAST = StoreSettings(fsync=False, gc_grace_seconds=0)


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-exact equality: dtype, shape and every byte (so NaN payloads and -0.0 count)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    x, y = a.detach().cpu().contiguous(), b.detach().cpu().contiguous()
    if x.numel() == 0:
        return True
    return bytes(x.reshape(-1).view(torch.uint8).numpy()) == bytes(
        y.reshape(-1).view(torch.uint8).numpy()
    )


def same_dict(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return list(a) == list(b) and all(same(a[k], b[k]) for k in a)


@pytest.fixture
def store(tmp_path: Path, index_url: str) -> Iterator[WeightStore]:
    s = WeightStore.open(tmp_path / "store", index_url=index_url, settings=FAST)
    yield s
    s.close()


def every_dtype() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    f32 = torch.randn(64, 33, generator=g)
    specials = torch.tensor(
        [0.0, -0.0, float("inf"), float("-inf"), float("nan"), 1e-45, -1e-45, 3.0e38]
    )
    nan_payloads = torch.tensor([0x7FC00001, 0x7FA00000, -0x200000], dtype=torch.int32).view(
        torch.float32
    )
    sd = {
        "f64": torch.randn(17, 5, dtype=torch.float64, generator=g),
        "f32": f32,
        "f32.specials": torch.cat([specials, nan_payloads]),
        "f16": (f32 * 100).half(),
        "bf16": f32.bfloat16(),
        "bf16.specials": specials.bfloat16(),
        "f16.subnormal": torch.tensor([6e-8, -6e-8, 0.0, -0.0], dtype=torch.float16),
        "f8e4m3": f32.clamp(-400, 400).to(torch.float8_e4m3fn),
        "f8e5m2": f32.to(torch.float8_e5m2),
        "i64": torch.arange(-500, 500, dtype=torch.int64),
        "i32": torch.randint(-(2**31), 2**31 - 1, (99,), dtype=torch.int32, generator=g),
        "i16": torch.randint(-(2**15), 2**15 - 1, (7, 3), dtype=torch.int16, generator=g),
        "i8": torch.randint(-128, 127, (50,), dtype=torch.int8, generator=g),
        "u8": torch.randint(0, 255, (3, 3, 3), dtype=torch.uint8, generator=g),
        "bool": torch.rand(37, generator=g) > 0.5,
        "scalar": torch.tensor(3.5),
        "scalar.i": torch.tensor(7, dtype=torch.int64),
        "empty": torch.empty(0, 4),
        "empty.bf16": torch.empty(3, 0, dtype=torch.bfloat16),
        "noncontig": f32.t(),
        "strided": f32[::2, 1::3],
    }
    return sd


def test_every_dtype_round_trips_bit_exactly(store: WeightStore) -> None:
    sd = every_dtype()
    snap = store.save("t", sd, step=1, tags=["best"], metadata={"acc": 0.5, "note": "ünï"})
    assert snap.step == 1 and snap.tags == ("best",) and snap.metadata["note"] == "ünï"
    assert [t.name for t in snap.tensors] == list(sd)
    for ref in ("t", "t@1", "t:best", snap.id[:10], snap.id):
        out = store.restore(ref)
        assert same_dict(out, sd), ref
        assert all(v.is_contiguous() for v in out.values())
    assert store.verify().ok


def test_restore_into_non_contiguous_targets(store: WeightStore) -> None:
    sd = {"w": torch.randn(8, 5), "b": torch.randn(5)}
    store.save("nc", sd)
    target = {"w": torch.zeros(5, 8).t(), "b": torch.zeros(10)[::2]}
    assert not target["w"].is_contiguous() and not target["b"].is_contiguous()
    store.restore("nc", into=target)
    assert same(target["w"], sd["w"]) and same(target["b"], sd["b"])


def test_restore_into_a_module_copies_in_place_and_keeps_ties(store: WeightStore) -> None:
    emb, out = torch.nn.Embedding(50, 8), torch.nn.Linear(8, 50, bias=False)
    model = torch.nn.Sequential(emb, out)
    out.weight = emb.weight  # tied weights share storage
    store.save("lm", model, step=1)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    ptr = emb.weight.data_ptr()
    with torch.no_grad():
        emb.weight.mul_(3)
    returned = store.restore("lm", into=model)
    assert emb.weight.data_ptr() == ptr
    assert out.weight is emb.weight
    assert same_dict(dict(model.state_dict()), saved)
    assert set(returned) == set(saved)


def test_restore_into_rejects_what_does_not_fit_and_changes_nothing(store: WeightStore) -> None:
    store.save("m", {"w": torch.ones(3, 4), "b": torch.zeros(4)})
    before = {"w": torch.full((3, 5), 2.0), "b": torch.full((4,), 2.0)}
    target = {k: v.clone() for k, v in before.items()}
    with pytest.raises(IncompatibleTensor, match="w"):
        store.restore("m", into=target)
    assert same_dict(target, before)
    wrong_dtype = {"w": torch.ones(3, 4, dtype=torch.float16), "b": torch.zeros(4)}
    with pytest.raises(IncompatibleTensor, match="float16"):
        store.restore("m", into=wrong_dtype)
    with pytest.raises(IncompatibleTensor, match="strict"):
        store.restore("m", into={"w": torch.empty(3, 4)})
    partial = {"w": torch.empty(3, 4)}
    store.restore("m", into=partial, strict=False)
    assert torch.equal(partial["w"], torch.ones(3, 4))


def test_refs_log_tags_and_errors(store: WeightStore) -> None:
    a = store.save("task", {"x": torch.zeros(2)}, step=10)
    b = store.save("task", {"x": torch.ones(2)}, step=20, tags=["best"])
    c = store.save("other", {"x": torch.ones(2)})
    assert store.tasks() == ["other", "task"]
    assert [s.id for s in store.log("task")] == [b.id, a.id]
    assert store.resolve("task") == b.id and store.resolve("task@10") == a.id
    assert store.show("task:best").id == b.id
    store.tag("task@10", "best")  # tags move
    assert store.show("task:best").id == a.id
    assert store.show("task@20").tags == ()
    assert b.parent == a.id and c.parent is None
    with pytest.raises(RefNotFound, match="step"):
        store.show("task@30")
    with pytest.raises(RefNotFound):
        store.show("nope")
    with pytest.raises(RefNotFound):
        store.show("task:missing")
    with pytest.raises(InvalidRef):
        store.show("task@@1")
    with pytest.raises(LookupError):  # typed errors are also the matching built-ins
        store.log("nope")
    store.untag("task", "best")
    with pytest.raises(RefNotFound):
        store.show("task:best")


def test_a_step_saved_twice_is_a_conflict_and_writes_nothing(store: WeightStore) -> None:
    store.save("t", {"x": torch.zeros(3)}, step=5)
    objects_before = sorted(i.key for i in store.objects.iterate())
    with pytest.raises(Conflict, match="step 5"):
        store.save("t", {"x": torch.randn(100)}, step=5)
    assert sorted(i.key for i in store.objects.iterate()) == objects_before
    assert len(store.log("t")) == 1


@pytest.mark.parametrize(
    ("weights", "error"),
    [
        ({}, InvalidInput),
        ({"x": [1.0, 2.0]}, InvalidInput),
        ({"x": torch.zeros(2, device="meta")}, InvalidInput),
        ({"x": torch.zeros(2).to_sparse()}, InvalidInput),
        ({"x": torch.zeros(2, dtype=torch.complex128)}, UnsupportedDtype),
        ("not weights", InvalidInput),
    ],
)
def test_bad_weights_are_rejected_and_change_nothing(
    store: WeightStore, weights: object, error: type[Exception]
) -> None:
    with pytest.raises(error):
        store.save("t", weights)  # type: ignore[arg-type]
    assert store.tasks() == []


def test_bad_arguments(store: WeightStore) -> None:
    sd = {"x": torch.zeros(2)}
    for kwargs in ({"step": -1}, {"step": 1.5}, {"metadata": {"x": object()}}):
        with pytest.raises(InvalidInput):
            store.save("t", sd, **kwargs)
    with pytest.raises(InvalidRef):
        store.save("t", sd, tags=["1"])  # would read as a step
    with pytest.raises(InvalidRef):
        store.save("../escape", sd)
    assert store.tasks() == []


def test_dedup_and_delta_against_parent(store: WeightStore) -> None:
    g = torch.Generator().manual_seed(1)
    base = {"frozen": torch.randn(256, 256, generator=g), "head": torch.randn(256, 8, generator=g)}
    store.save("base", base)
    ft = {"frozen": base["frozen"].clone(), "head": base["head"] + 1e-3}
    snap = store.save("ft", ft, parent="base")
    assert snap.parent == store.resolve("base")
    rows = store.index.get_objects([t.digest for t in snap.tensors])
    frozen, head = (rows[t.digest] for t in snap.tensors)
    assert frozen.digest == store.show("base").tensors[0].digest  # dedup: same object
    assert head.encoding in ("delta", "sub") and head.base == store.show("base").tensors[1].digest
    assert same_dict(store.restore("ft"), ft)
    stats = store.stats()
    ft_row = next(r for r in stats.tasks if r.task == "ft")
    assert ft_row.saved_by_dedup == base["frozen"].numel() * 4
    assert ft_row.stored_bytes < 256 * 8 * 4
    assert stats.total.logical_bytes == 2 * (256 * 264 * 4)
    assert sum(r.stored_bytes for r in stats.tasks) == stats.total.stored_bytes


def test_delta_chains_stay_bounded_and_restore_exactly(tmp_path: Path) -> None:
    settings = StoreSettings(fsync=False, codec=CodecSettings(max_chain_depth=3))
    with WeightStore.open(tmp_path / "s", settings=settings) as store:
        g = torch.Generator().manual_seed(2)
        w = torch.randn(128, 128, generator=g)
        history = []
        for step in range(10):
            w = w + 1e-4 * torch.randn(128, 128, generator=g)
            history.append(w.clone())
            store.save("run", {"w": w}, step=step)
        depths = [
            store.index.get_objects([store.show(f"run@{s}").tensors[0].digest]) for s in range(10)
        ]
        assert max(next(iter(d.values())).chain_depth for d in depths) <= 3
        for step, expected in enumerate(history):
            assert same(store.restore(f"run@{step}")["w"], expected)


def test_delete_prune_and_gc(store: WeightStore) -> None:
    g = torch.Generator().manual_seed(3)
    snaps = []
    for step in range(5):
        sd = {"shared": torch.ones(1000), "own": torch.randn(1000, generator=g)}
        snaps.append((store.save("t", sd, step=step, tags=["keep"] if step == 0 else []), sd))
    deleted = store.prune("t", keep_last=2)
    assert [s.step for s in deleted] == [2, 1]  # step 0 is tagged, so kept
    assert [s.step for s in store.log("t")] == [4, 3, 0]
    dry = store.gc(dry_run=True)
    assert dry.dry_run and dry.objects_removed >= 1
    assert store.gc(dry_run=True).objects_removed == dry.objects_removed  # dry run changed nothing
    result = store.gc(grace_seconds=0)
    assert result.objects_removed == dry.objects_removed and result.bytes_freed > 0
    for snap, sd in snaps:
        if snap.step in (0, 3, 4):
            assert same_dict(store.restore(snap.id), sd)
    assert store.verify().ok
    store.delete("t@4")
    store.delete("t@3")
    store.delete("t@0")
    store.gc(grace_seconds=0)
    assert list(store.objects.iterate()) == []


def test_gc_spares_young_objects_and_delta_bases(store: WeightStore) -> None:
    w = torch.randn(300, 300)
    store.save("t", {"w": w}, step=0)
    store.save("t", {"w": w + 1e-5}, step=1)
    base_digest = store.show("t@0").tensors[0].digest
    store.delete("t@0")
    assert store.gc(grace_seconds=0).objects_removed == 0  # still the base of step 1's delta
    assert store.objects.exists(base_digest)
    assert same(store.restore("t@1")["w"], w + 1e-5)
    store.delete("t@1")
    young = store.gc(grace_seconds=3600)
    assert young.objects_removed == 0 and young.objects_spared == 2
    assert store.gc(grace_seconds=0).objects_removed == 2


def test_gc_lock_excludes_a_second_gc(store: WeightStore) -> None:
    with (
        store.index.lock("gc", "someone-else", stale_after=timedelta(days=1)),
        pytest.raises(LockHeld, match="someone-else"),
    ):
        store.gc()


def _object_path(store: WeightStore, digest: str) -> Path:
    root = Path(store.objects.describe().removeprefix("local:"))
    return root / digest[:2] / digest


def test_a_flipped_byte_on_disk_is_found_and_named(store: WeightStore) -> None:
    sd = {"w": torch.randn(200, 200), "b": torch.randn(200)}
    snap = store.save("t", sd, step=1)
    digest = snap.tensors[0].digest
    path = _object_path(store, digest)
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    result = store.verify()
    assert not result.ok
    (problem,) = result.problems
    assert problem.digest == digest and problem.snapshots == (snap.id,)
    with pytest.raises(CorruptObject):
        store.restore("t@1")
    model = {k: torch.zeros_like(v) for k, v in sd.items()}
    with pytest.raises(CorruptObject):
        store.restore("t@1", into=model)
    assert all(not v.any() for v in model.values())  # decoded into staging first
    path.unlink()
    missing = store.verify("t@1")
    assert missing.problems[0].problem.startswith("missing")
    model = {k: torch.zeros_like(v) for k, v in sd.items()}
    with pytest.raises(LookupError, match="nothing was restored"):
        store.restore("t@1", into=model)
    assert all(not v.any() for v in model.values())  # a missing object is found before writing


def test_diff(store: WeightStore) -> None:
    store.save("t", {"a": torch.zeros(2), "b": torch.zeros(2), "c": torch.zeros(2)}, step=1)
    store.save("t", {"a": torch.zeros(2), "b": torch.ones(2), "d": torch.zeros(3)}, step=2)
    d = store.diff("t@1", "t@2")
    assert [t.name for t in d.added] == ["d"]
    assert [t.name for t in d.removed] == ["c"]
    assert [c.name for c in d.changed] == ["b"]
    assert d.unchanged == ("a",)


def test_export_and_import_round_trip(store: WeightStore, tmp_path: Path) -> None:
    sd = {k: v for k, v in every_dtype().items() if not k.startswith(("noncontig", "strided"))}
    sd = {k: v.contiguous() for k, v in sd.items()}
    store.save("t", sd, step=3)
    out = tmp_path / "out.safetensors"
    store.export("t@3", out)
    loaded = load_file(out)
    assert same_dict({k: loaded[k] for k in sd}, sd)
    snap = store.import_file("copy", out, step=1)
    assert snap.tensors == store.show("t@3").tensors  # same content, same objects
    torch.save(sd, tmp_path / "sd.pt")
    assert same_dict(store.restore(store.import_file("pt", tmp_path / "sd.pt").id), sd)


def test_import_sharded_folder(store: WeightStore, tmp_path: Path) -> None:
    import json

    folder = tmp_path / "hf"
    folder.mkdir()
    a, b = {"x": torch.randn(10)}, {"y": torch.randn(3, 3)}
    save_file(a, folder / "model-00001-of-00002.safetensors")
    save_file(b, folder / "model-00002-of-00002.safetensors")
    index = {
        "metadata": {},
        "weight_map": {
            "x": "model-00001-of-00002.safetensors",
            "y": "model-00002-of-00002.safetensors",
        },
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    snap = store.import_file("hf", folder)
    assert same_dict(store.restore(snap.id), {**a, **b})
    index["weight_map"]["y"] = "../../etc/passwd"
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CorruptFile):
        store.import_file("hf", folder)


@pytest.mark.parametrize("cut", [0, 5, 40, -3])
def test_truncated_or_corrupt_files_are_rejected(
    store: WeightStore, tmp_path: Path, cut: int
) -> None:
    good = tmp_path / "good.safetensors"
    save_file({"w": torch.randn(100, 10)}, good)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(good.read_bytes()[:cut])
    with pytest.raises(CorruptFile):
        store.import_file("t", bad)
    assert store.tasks() == [] and list(store.objects.iterate()) == []


def test_torch_files_never_unpickle_arbitrary_objects(store: WeightStore, tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "obj": np.dtype("float32")}, path)
    with pytest.raises(InvalidInput, match="unpickle"):
        store.import_file("t", path)
    assert store.tasks() == []


def test_schema_behind_says_how_to_upgrade(tmp_path: Path) -> None:
    from sqlalchemy import create_engine, text

    from weightstore.errors import SchemaOutdated

    WeightStore.open(tmp_path / "s").close()
    engine = create_engine(f"sqlite:///{tmp_path / 's' / 'index.sqlite'}")
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'bogus'"))
    engine.dispose()
    with pytest.raises(SchemaOutdated, match="weightstore"):
        WeightStore.open(tmp_path / "s")


@pytest.mark.gpu
def test_cuda_tensors_round_trip(store: WeightStore) -> None:
    sd = {k: v.cuda() for k, v in every_dtype().items()}
    store.save("gpu", sd)
    out = store.restore("gpu", device="cuda")
    assert all(v.is_cuda for v in out.values())
    assert same_dict(out, sd)
    model = {k: torch.zeros_like(v).contiguous() for k, v in sd.items()}
    store.restore("gpu", into=model)
    assert same_dict(model, sd)
    store.save("gpu-nc", {"w": sd["f32"]})
    target = {"w": torch.zeros(33, 64, device="cuda").t()}  # non-contiguous, on the GPU
    store.restore("gpu-nc", into=target)
    assert same(target["w"], sd["f32"])


def test_gc_removes_temp_files_of_dead_writers(store: WeightStore) -> None:
    store.save("t", {"w": torch.ones(10)})
    root = Path(store.objects.describe().removeprefix("local:"))
    old, fresh = root / "ab" / ".tmp-1-dead", root / "ab" / ".tmp-2-writing"
    old.parent.mkdir(exist_ok=True)
    old.write_bytes(b"half an object")
    fresh.write_bytes(b"being written")
    two_hours_ago = __import__("time").time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    store.gc(grace_seconds=0)
    assert not old.exists() and fresh.exists()
    assert store.verify().ok


def test_reader_resolves_long_delta_chains(tmp_path: Path) -> None:
    settings = StoreSettings(fsync=False, codec=CodecSettings(max_chain_depth=20))
    with WeightStore.open(tmp_path / "s", settings=settings) as store:
        w, history = torch.linspace(-1, 1, 4096), []
        for step in range(21):
            w = w + 1e-6 * (step + 1)
            history.append(w.clone())
            store.save("run", {"w": w}, step=step)
        last = store.show("run@20").tensors[0].digest
        chain = store.reader.chains([last])[last]
        assert len(chain) == 21 and chain[0].chain_depth == 20
        assert [r.base for r in chain[:-1]] == [r.digest for r in chain[1:]]
        assert chain[-1].base is None and chain[-1].encoding not in ("delta", "sub")
        assert same(store.restore("run@20")["w"], history[-1])
