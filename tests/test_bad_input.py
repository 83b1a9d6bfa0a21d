"""Bad input gets a typed error and changes nothing (docs/design.md, "Bad input and
destinations"): unreadable weights files, hostile JSON, arguments the index cannot store, on
SQLite and PostgreSQL alike, through the API and through the CLI (``error: ...``, no traceback,
the documented exit code, no new objects or rows)."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from sqlalchemy import create_engine, text
from typer.testing import CliRunner, Result

from weightstore import StoreSettings, WeightStore
from weightstore.cli.main import app
from weightstore.errors import (
    InvalidInput,
    InvalidRef,
    SchemaOutdated,
)
from weightstore.inputs import MAX_JSON_DEPTH, MAX_METADATA_BYTES, MAX_TENSOR_NAME

DEEP = "[" * 100_000 + "]" * 100_000


def fingerprint(store: WeightStore) -> tuple[Any, ...]:
    """What a failed call must not change: tasks, snapshots, object rows and object files."""
    return (
        store.tasks(),
        [s.id for s in store.log()],
        sorted(r.digest for r, _ in store.index.all_objects()),
        sorted(i.key for i in store.objects.iterate()),
    )


@pytest.fixture
def store(tmp_path: Path, index_url: str) -> Iterator[WeightStore]:
    s = WeightStore.open(
        tmp_path / "store", index_url=index_url, settings=StoreSettings(fsync=False)
    )
    s.save("keep", {"w": torch.ones(4)})
    yield s
    s.close()


def bad_files(folder: Path) -> dict[str, Path]:
    """Every kind of unreadable weights input seen in the field."""
    folder.mkdir(exist_ok=True)
    files = {}
    old = folder / "old-format.pt"
    torch.save(
        {"w": torch.zeros(2), "x": np.dtype("float32")}, old, _use_new_zipfile_serialization=False
    )
    files["old-format pickle with an object"] = old
    raw = folder / "raw.pkl"
    raw.write_bytes(pickle.dumps({"w": [1, 2, 3]}))
    files["raw pickle"] = raw
    garbage = folder / "garbage.pt"
    garbage.write_bytes(b"hello world, not weights" * 10)
    files["garbage"] = garbage
    binary = folder / "garbage.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    files["binary garbage"] = binary
    empty = folder / "empty.pt"
    empty.write_bytes(b"")
    files["empty"] = empty
    files["/dev/null"] = Path("/dev/null")
    files["/proc/self/mem"] = Path("/proc/self/mem")
    fifo = folder / "fifo.safetensors"
    os.mkfifo(fifo)
    files["fifo"] = fifo
    sharded = folder / "deep-index"
    sharded.mkdir()
    (sharded / "model.safetensors.index.json").write_text(DEEP)
    files["deeply nested shard index"] = sharded
    listy = folder / "list-index"
    listy.mkdir()
    (listy / "model.safetensors.index.json").write_text("[1, 2]")
    files["shard index not an object"] = listy
    return files


def test_legacy_torch_files_still_load(store: WeightStore, tmp_path: Path) -> None:
    path = tmp_path / "legacy.pt"
    sd = {"w": torch.randn(3, 2)}
    torch.save(sd, path, _use_new_zipfile_serialization=False)
    snap = store.import_file("legacy", path)
    assert torch.equal(store.restore(snap.id)["w"], sd["w"])


def test_unreadable_weights_files_are_typed_errors_and_change_nothing(
    store: WeightStore, tmp_path: Path
) -> None:
    before = fingerprint(store)
    for what, path in bad_files(tmp_path / "bad").items():
        with pytest.raises(InvalidInput):
            store.import_file("t", path)
        assert fingerprint(store) == before, what


def deep_metadata(depth: int) -> dict[str, Any]:
    meta: Any = 1
    for _ in range(depth):
        meta = [meta]
    return {"x": meta}


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"tags": "best"}, InvalidInput),
        ({"tags": ["ok", 3]}, InvalidRef),
        ({"step": 2**63}, InvalidInput),
        ({"step": True}, InvalidInput),
        ({"metadata": [("a", 1)]}, InvalidInput),
        ({"metadata": "text"}, InvalidInput),
        ({"metadata": {1: "int key"}}, InvalidInput),
        ({"metadata": {"a": float("nan")}}, InvalidInput),
        ({"metadata": {"nul": "a\x00b"}}, InvalidInput),
        ({"metadata": {"a\x00": 1}}, InvalidInput),
        ({"metadata": deep_metadata(MAX_JSON_DEPTH + 1)}, InvalidInput),
        ({"metadata": deep_metadata(5000)}, InvalidInput),
        ({"metadata": {"big": "x" * MAX_METADATA_BYTES}}, InvalidInput),
        ({"message": "a\x00b"}, InvalidInput),
        ({"message": "m" * (1 << 20)}, InvalidInput),
        ({"task": "t" * (1 << 20)}, InvalidRef),
        ({"task": "a\x00b"}, InvalidRef),
        ({"weights": {"a\x00b": torch.zeros(2)}}, InvalidInput),
        ({"weights": {"n" * (MAX_TENSOR_NAME + 1): torch.zeros(2)}}, InvalidInput),
        ({"weights": {"n" * (1 << 20): torch.zeros(2)}}, InvalidInput),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else "-".join(v),
)
def test_arguments_the_index_cannot_store_are_refused_before_any_write(
    store: WeightStore, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    before = fingerprint(store)
    args: dict[str, Any] = {"task": "t", "weights": {"fresh": torch.randn(8)}, **kwargs}
    with pytest.raises(error) as info:
        store.save(args.pop("task"), args.pop("weights"), **args)
    assert len(str(info.value)) < 500  # a 1 MB name is not echoed back whole
    assert fingerprint(store) == before


def test_the_limits_themselves_are_accepted(store: WeightStore) -> None:
    name = "n" * MAX_TENSOR_NAME
    snap = store.save(
        "t",
        {name: torch.zeros(2)},
        step=2**63 - 1,
        tags=["best"],
        metadata=deep_metadata(MAX_JSON_DEPTH - 1),
    )
    again = store.show(snap.id)
    assert again.tensors[0].name == name and again.step == 2**63 - 1
    assert again.metadata == deep_metadata(MAX_JSON_DEPTH - 1)


@pytest.mark.parametrize("grace", [float("inf"), float("nan"), -1.0, 1e300])
def test_gc_grace_must_be_a_finite_duration(store: WeightStore, grace: float) -> None:
    before = fingerprint(store)
    with pytest.raises(InvalidInput):
        store.gc(grace_seconds=grace)
    assert fingerprint(store) == before


def test_db_upgrade_against_a_newer_schema_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "st"
    WeightStore.open(root).close()
    engine = create_engine(f"sqlite:///{root / 'index.sqlite'}")
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(SchemaOutdated, match="newer"):
        WeightStore.upgrade_schema(root)
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT version_num FROM alembic_version")) == "9999"
    engine.dispose()


# ------------------------------------------------------------------------------------ CLI


@pytest.fixture
def cli(tmp_path: Path) -> Callable[..., Result]:
    root = tmp_path / "cli-store"
    runner = CliRunner()
    good = tmp_path / "good.safetensors"
    save_file({"w": torch.ones(3)}, str(good))
    assert runner.invoke(app, ["--store", str(root), "init"]).exit_code == 0
    assert runner.invoke(app, ["--store", str(root), "save", "keep", str(good)]).exit_code == 0

    def invoke(*args: str | Path) -> Result:
        argv = ["--store", str(root), *[str(a) for a in args]]
        return runner.invoke(app, argv, env={"COLUMNS": "200", "WEIGHTSTORE_PATH": None})

    return invoke


def cli_fingerprint(root: Path) -> tuple[Any, ...]:
    with WeightStore.open(root, create=False) as store:
        return fingerprint(store)


def cli_cases(tmp_path: Path) -> list[tuple[str, list[str | Path], int]]:
    good = tmp_path / "good.safetensors"
    cases: list[tuple[str, list[str | Path], int]] = [
        (what, ["save", "t", path], 2) for what, path in bad_files(tmp_path / "bad").items()
    ]
    markup = tmp_path / "a[/x]b[red]"
    markup.mkdir(parents=True)
    cases += [
        ("deep --meta", ["save", "t", good, "--meta", "x=" + "[" * 5000 + "]" * 5000], 2),
        ("--step beyond int64", ["save", "t", good, "--step", str(2**63)], 2),
        ("--grace inf", ["gc", "--grace", "inf"], 2),
        ("--grace nan", ["gc", "--grace", "nan"], 2),
        ("markup in a missing path", ["save", "t", tmp_path / "[/x]missing[bold]"], 3),
        ("markup in a folder path", ["save", "t", markup], 2),
        ("markup in an export folder", ["export", "keep", markup / "[/x]" / "out"], 3),
        ("clone into a file", ["clone", "http://127.0.0.1:9", good], 2),
        ("--plot to a folder", ["report", "storage", "--plot", markup], 2),
        (
            "--plot into a missing folder",
            ["report", "storage", "--plot", missing_plot(tmp_path)],
            3,
        ),
        ("swap --plot to a folder", ["report", "swap", "keep", "--plot", markup], 2),
    ]
    return cases


def missing_plot(tmp_path: Path) -> Path:
    return tmp_path / "missing" / "dir" / "x.png"


def test_cli_bad_input_prints_an_error_and_changes_nothing(
    cli: Callable[..., Result], tmp_path: Path
) -> None:
    root = tmp_path / "cli-store"
    before = cli_fingerprint(root)
    good = (tmp_path / "good.safetensors").read_bytes()
    for what, args, code in cli_cases(tmp_path):
        result = cli(*args)
        assert result.exit_code == code, (what, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit), what
        assert "Traceback" not in result.output, what
        assert result.stderr.startswith("error: "), (what, result.stderr)
        assert cli_fingerprint(root) == before, what
    assert (tmp_path / "good.safetensors").read_bytes() == good
    assert not (tmp_path / "missing").exists(), "a plot must not make folders"


def test_cli_error_messages_print_markup_literally(
    cli: Callable[..., Result], tmp_path: Path
) -> None:
    missing = tmp_path / "[/x]gone[bold]"
    result = cli("save", "t", missing)
    assert "[/x]gone[bold]" in result.stderr


def test_markup_in_success_messages_is_printed_literally(
    cli: Callable[..., Result], tmp_path: Path
) -> None:
    (tmp_path / "x[").mkdir()
    out = tmp_path / "x[/x]y[bold].safetensors"
    result = cli("export", "keep", out)
    assert result.exit_code == 0, result.output
    assert str(out) in result.stdout.replace("\n", "")


def test_cli_bad_store_state_prints_an_error_and_changes_nothing(tmp_path: Path) -> None:
    runner = CliRunner()
    newer = tmp_path / "newer"
    WeightStore.open(newer).close()
    engine = create_engine(f"sqlite:///{newer / 'index.sqlite'}")
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    listy = tmp_path / "listy"
    listy.mkdir()
    (listy / "weightstore.json").write_text("[1, 2]")
    for root, args, code in ((newer, ["db", "upgrade"], 6), (listy, ["log"], 2)):
        before = sorted((p.name, p.stat().st_size) for p in root.iterdir())
        result = runner.invoke(app, ["--store", str(root), *args])
        assert result.exit_code == code, result.output
        assert result.stderr.startswith("error: ") and "Traceback" not in result.output
        assert sorted((p.name, p.stat().st_size) for p in root.iterdir()) == before


@pytest.mark.parametrize(
    ("name", "content", "kind"),
    [
        ("config.json", b'{"model_type": "bert"}', "JSON"),
        ("tokenizer.json", b'[{"id": 101}]', "JSON"),
        ("vocab.txt", "[PAD]\n[UNK]\nhéllo\n".encode(), "text"),
    ],
)
def test_a_text_file_saved_as_weights_says_what_to_pass(
    store: WeightStore, tmp_path: Path, name: str, content: bytes, kind: str
) -> None:
    """Issue 16, item 6: a config or vocabulary got torch's unpickling text ("KeyError: 101")."""
    path = tmp_path / name
    path.write_bytes(content)
    before = store.tasks()
    with pytest.raises(InvalidInput, match=f"a {kind} file .*not weights.*model folder"):
        store.import_file("t", path)
    assert store.tasks() == before
