"""Tests of the ``weightstore`` command line: every command through typer's CliRunner on a real
store in a temporary folder, error mapping and exit codes, and the console script in a
subprocess."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner, Result

from weightstore.catalog import Catalog
from weightstore.cli.main import app
from weightstore.cli.progress import ByteProgress
from weightstore.cli.render import human_bytes
from weightstore.cli.writing import parse_meta

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
Run = Callable[..., Result]


def weights(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "encoder.weight": torch.randn(64, 32, generator=g),
        "encoder.bias": torch.randn(32, generator=g),
        "embed.weight": torch.randn(16, 16, generator=g).to(torch.bfloat16),
        "position_ids": torch.arange(10, dtype=torch.int64),
    }


def save_sharded(folder: Path, sd: dict[str, torch.Tensor]) -> Path:
    """Write ``sd`` as two safetensors shards plus the index, as Hugging Face does."""
    folder.mkdir(parents=True)
    names = sorted(sd)
    shards = {
        "model-00001-of-00002.safetensors": names[:2],
        "model-00002-of-00002.safetensors": names[2:],
    }
    weight_map = {}
    for shard, keys in shards.items():
        save_file({k: sd[k] for k in keys}, str(folder / shard))
        weight_map.update(dict.fromkeys(keys, shard))
    index = {
        "metadata": {"total_size": sum(t.nbytes for t in sd.values())},
        "weight_map": weight_map,
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder


def write_input(kind: str, path: Path, sd: dict[str, torch.Tensor]) -> Path:
    if kind == "safetensors":
        out = path.with_suffix(".safetensors")
        save_file(sd, str(out))
        return out
    if kind == "torch":
        out = path.with_suffix(".pt")
        torch.save(sd, out)
        return out
    return save_sharded(path, sd)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def run(store_path: Path) -> Run:
    """Invoke the CLI against ``store_path`` (wide terminal, so tables are not cut)."""
    runner = CliRunner()

    def invoke(*args: str | Path, input: str | None = None, store: bool = True) -> Result:
        argv = [str(a) for a in args]
        if store:
            argv = ["--store", str(store_path), *argv]
        return runner.invoke(
            app, argv, input=input, env={"COLUMNS": "200", "WEIGHTSTORE_PATH": None}
        )

    return invoke


@pytest.fixture
def inited(run: Run) -> Run:
    result = run("init")
    assert result.exit_code == 0, result.output
    return run


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


def as_json(result: Result) -> Any:
    ok(result)
    return json.loads(result.stdout)


def save(
    run: Run,
    tmp_path: Path,
    task: str,
    step: int | None,
    seed: int = 0,
    *extra: str,
    kind: str = "safetensors",
) -> dict[str, Any]:
    name = f"{task}-{step}-{seed}-{kind}"
    file = write_input(kind, tmp_path / name, weights(seed))
    args: list[str | Path] = ["save", task, file, "--json", *extra]
    if step is not None:
        args += ["--step", str(step)]
    data: dict[str, Any] = as_json(run(*args))
    return data


def object_files(store_path: Path) -> list[Path]:
    return sorted(p for p in (store_path / "objects").rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------ help, init


def test_help_lists_every_command_with_an_example(run: Run) -> None:
    result = ok(run("--help", store=False))
    commands = [
        "init",
        "save",
        "log",
        "show",
        "diff",
        "export",
        "tag",
        "untag",
        "rm",
        "prune",
        "gc",
        "verify",
        "tasks",
        "db",
        "report",
    ]
    for command in commands:
        assert command in result.stdout
    for command in [*commands[:-2], "db upgrade", "report storage"]:
        help_text = ok(run(*command.split(), "--help", store=False)).stdout
        assert "Example: weightstore" in help_text or "Examples:" in help_text, command


def test_init_creates_the_store_and_other_commands_need_one(run: Run, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = run("--store", missing, "log", store=False)
    assert result.exit_code == 3
    assert "weightstore init" in result.stderr
    assert not missing.exists()

    result = ok(run("init", missing, store=False))
    assert str(missing.resolve()) in result.stdout
    assert (missing / "index.sqlite").is_file()
    assert ok(run("--store", missing, "log", store=False)).stdout.strip() == "no snapshots"


def test_store_path_comes_from_the_environment(tmp_path: Path) -> None:
    where = tmp_path / "from-env"
    runner = CliRunner()
    ok(runner.invoke(app, ["init"], env={"WEIGHTSTORE_PATH": str(where)}))
    assert (where / "index.sqlite").is_file()


# ------------------------------------------------------------------------------------ save, export


@pytest.mark.parametrize("kind", ["safetensors", "torch", "sharded"])
def test_save_and_export_round_trip_bit_exact(inited: Run, tmp_path: Path, kind: str) -> None:
    sd = weights(3)
    file = write_input(kind, tmp_path / "input", sd)
    result = ok(inited("save", "sentiment", file, "--step", "1200", "--tag", "best"))
    snap = as_json(inited("show", "sentiment:best", "--json"))
    assert snap["short_id"] in result.stdout
    assert "sentiment" in result.stdout and "1200" in result.stdout and "best" in result.stdout
    assert human_bytes(snap["logical_bytes"]) in result.stdout
    files = sum(p.stat().st_size for p in file.iterdir()) if kind == "sharded" else 0
    assert snap["logical_bytes"] >= sum(t.nbytes for t in sd.values())
    assert snap["logical_bytes"] <= sum(t.nbytes for t in sd.values()) + files
    assert snap["tensor_count"] == len(sd)

    out = tmp_path / ("out" if kind == "sharded" else "out.safetensors")
    result = ok(inited("export", "sentiment@1200", out))
    assert str(out) in result.stdout
    if kind == "sharded":  # a folder comes back as the folder
        assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in file.iterdir())
        back = {k: v for p in out.glob("*.safetensors") for k, v in load_file(str(p)).items()}
    else:
        back = load_file(str(out))
    assert sorted(back) == sorted(sd)
    for name, tensor in sd.items():
        assert back[name].dtype == tensor.dtype
        assert torch.equal(back[name], tensor), name


def test_save_reports_what_it_added_and_parses_metadata(inited: Run, tmp_path: Path) -> None:
    first = save(
        inited,
        tmp_path,
        "t",
        1,
        0,
        "-m",
        "first run",
        "--meta",
        "lr=0.001",
        "--meta",
        "note=hello world",
        "--meta",
        "layers=[1, 2]",
        "--meta",
        "flag=true",
        "--meta",
        "odd=NaN",
        "--meta",
        "eq=a=b",
    )
    assert first["metadata"] == {
        "lr": 0.001,
        "note": "hello world",
        "layers": [1, 2],
        "flag": True,
        "odd": "NaN",
        "eq": "a=b",
    }
    assert first["message"] == "first run"
    assert first["added_bytes"] > 0
    again = save(inited, tmp_path, "t", 2, 0)  # the same weights: nothing new to store
    assert again["added_bytes"] == 0
    stats = as_json(inited("report", "storage", "--json"))
    assert stats["total"]["stored_bytes"] == first["added_bytes"]

    human = ok(
        inited("save", "t", write_input("safetensors", tmp_path / "x", weights(0)), "--step", "3")
    )
    assert "added to storage" in human.stdout and "0 B" in human.stdout


def test_bad_meta_is_a_usage_error(inited: Run, tmp_path: Path) -> None:
    file = write_input("safetensors", tmp_path / "w", weights())
    result = inited("save", "t", file, "--meta", "novalue")
    assert result.exit_code == 2
    assert "KEY=VALUE" in result.output
    assert parse_meta(["a=1", "b=x", "c="]) == {"a": 1, "b": "x", "c": ""}


# ------------------------------------------------------------------------------------ reading


def test_log_lists_newest_first_as_table_and_json(inited: Run, tmp_path: Path) -> None:
    a = save(inited, tmp_path, "alpha", 10, 0, "--tag", "best", "-m", "x" * 80)
    b = save(inited, tmp_path, "alpha", 20, 1)
    c = save(inited, tmp_path, "beta", 5, 2)

    rows = as_json(inited("log", "--json"))
    assert [r["id"] for r in rows] == [c["id"], b["id"], a["id"]]
    assert rows[2]["tags"] == ["best"] and rows[2]["step"] == 10
    assert "tensors" not in rows[0] and rows[0]["tensor_count"] == 4
    assert [r["id"] for r in as_json(inited("log", "alpha", "--json"))] == [b["id"], a["id"]]
    assert len(as_json(inited("log", "-n", "1", "--json"))) == 1

    table = ok(inited("log", "alpha")).stdout
    assert a["id"][:12] in table and b["id"][:12] in table and c["id"][:12] not in table
    assert a["id"][:13] not in table
    assert table.index(b["id"][:12]) < table.index(a["id"][:12])
    assert "best" in table and human_bytes(a["logical_bytes"]) in table
    assert "x" * 80 not in table and "xxx…" in table


def test_show_prints_details_metadata_and_tensors(inited: Run, tmp_path: Path) -> None:
    snap = save(inited, tmp_path, "t", 7, 0, "--meta", "dataset=imdb", "-m", "hello")
    full = as_json(inited("show", "t@7", "--json"))
    assert full["id"] == snap["id"] and full["metadata"] == {"dataset": "imdb"}
    by_name = {t["name"]: t for t in full["tensors"]}
    assert by_name["encoder.weight"]["shape"] == [64, 32]
    assert by_name["embed.weight"]["dtype"] == "bfloat16"
    assert by_name["position_ids"]["nbytes"] == 80
    assert all(len(t["digest"]) == 64 for t in full["tensors"])

    text = ok(inited("show", snap["id"][:8])).stdout
    assert snap["id"] in text and "dataset" in text and "imdb" in text and "hello" in text
    for t in full["tensors"]:
        assert t["name"] in text and t["digest"][:12] in text
    assert "[64, 32]" in text and "8.0 KiB" in text


def test_diff_reports_added_removed_changed_and_unchanged(inited: Run, tmp_path: Path) -> None:
    old = weights(0)
    new = dict(old)
    new["encoder.bias"] = old["encoder.bias"] + 1  # values changed
    new["embed.weight"] = old["embed.weight"].float()  # dtype changed (and size)
    new["head.weight"] = torch.ones(4, 4)  # added
    del new["position_ids"]  # removed
    ok(inited("save", "t", write_input("safetensors", tmp_path / "old", old), "--step", "1"))
    ok(inited("save", "t", write_input("safetensors", tmp_path / "new", new), "--step", "2"))

    d = as_json(inited("diff", "t@1", "t@2", "--json"))
    assert [t["name"] for t in d["added"]] == ["head.weight"]
    assert [t["name"] for t in d["removed"]] == ["position_ids"]
    changed = {c["name"]: c for c in d["changed"]}
    assert set(changed) == {"encoder.bias", "embed.weight"}
    assert changed["embed.weight"]["dtype_changed"] and not changed["encoder.bias"]["dtype_changed"]
    assert changed["embed.weight"]["old"]["dtype"] == "bfloat16"
    assert d["unchanged"] == ["encoder.weight"] and d["unchanged_count"] == 1
    assert d["unchanged_bytes"] == 64 * 32 * 4

    text = ok(inited("diff", "t@1", "t@2")).stdout
    assert "1 added, 1 removed, 2 changed, 1 unchanged (8.0 KiB)" in text
    assert "bfloat16 -> float32" in text and "dtype changed" in text
    assert "head.weight" in text and "position_ids" in text


def test_tasks_summarises_each_task(inited: Run, tmp_path: Path) -> None:
    save(inited, tmp_path, "alpha", 1, 0)
    latest = save(inited, tmp_path, "alpha", 2, 1, "--tag", "best")
    save(inited, tmp_path, "beta", None, 2)
    rows = as_json(inited("tasks", "--json"))
    assert [r["task"] for r in rows] == ["alpha", "beta"]
    assert rows[0]["snapshots"] == 2 and rows[0]["latest"]["id"] == latest["id"]
    assert rows[0]["latest"]["tags"] == ["best"] and rows[1]["latest"]["step"] is None
    text = ok(inited("tasks")).stdout
    assert "alpha" in text and latest["short_id"] in text and "best" in text


# ------------------------------------------------------------------------------- tags, deletion


def test_tag_untag_and_tag_delete(inited: Run, tmp_path: Path) -> None:
    first = save(inited, tmp_path, "t", 1, 0)
    save(inited, tmp_path, "t", 2, 1)
    result = ok(inited("tag", "t@1", "best"))
    assert first["short_id"] in result.stdout
    assert as_json(inited("show", "t:best", "--json"))["id"] == first["id"]

    ok(inited("untag", "t", "best"))
    result = inited("show", "t:best")
    assert result.exit_code == 3 and "error:" in result.stderr

    ok(inited("tag", "t@1", "keep"))
    ok(inited("tag", "--delete", "t", "keep"))
    assert inited("show", "t:keep").exit_code == 3
    assert inited("untag", "t", "keep").exit_code == 3


def test_rm_asks_unless_yes(inited: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snap = save(inited, tmp_path, "t", 1, 0)

    refused = inited("rm", "t@1")  # CliRunner's stdin is not a terminal
    assert refused.exit_code == 2
    assert "--yes" in refused.stderr and "error:" in refused.stderr
    assert len(as_json(inited("log", "--json"))) == 1

    monkeypatch.setattr("weightstore.cli.app.is_interactive", lambda: True)
    declined = inited("rm", "t@1", input="n\n")
    assert declined.exit_code == 1 and "aborted" in declined.output
    assert len(as_json(inited("log", "--json"))) == 1
    accepted = ok(inited("rm", "t@1", input="y\n"))
    assert snap["short_id"] in accepted.stdout
    assert as_json(inited("log", "--json")) == []

    monkeypatch.setattr("weightstore.cli.app.is_interactive", lambda: False)
    save(inited, tmp_path, "t", 2, 1)
    ok(inited("rm", "t@2", "--yes"))
    assert as_json(inited("log", "--json")) == []


def test_prune_keeps_newest_and_tagged(inited: Run, tmp_path: Path) -> None:
    snaps = [save(inited, tmp_path, "t", step, step) for step in range(1, 5)]
    ok(inited("tag", "t@1", "baseline"))
    assert inited("prune", "t", "--keep-last", "1").exit_code == 2  # no terminal, no --yes

    out = as_json(inited("prune", "t", "--keep-last", "1", "--yes", "--json"))
    assert sorted(s["step"] for s in out["deleted"]) == [2, 3]
    left = as_json(inited("log", "t", "--json"))
    assert [s["id"] for s in left] == [snaps[3]["id"], snaps[0]["id"]]

    text = ok(inited("prune", "t", "--keep-last", "1", "--include-tagged", "-y")).stdout
    assert snaps[0]["short_id"] in text and "deleted 1 snapshot" in text
    assert [s["id"] for s in as_json(inited("log", "t", "--json"))] == [snaps[3]["id"]]


def test_gc_dry_run_then_real(inited: Run, tmp_path: Path, store_path: Path) -> None:
    save(inited, tmp_path, "t", 1, 0)
    save(inited, tmp_path, "t", 2, 1)
    ok(inited("rm", "t@2", "--yes"))
    before = object_files(store_path)

    dry = as_json(inited("gc", "--dry-run", "--grace", "0", "--json"))
    assert dry["dry_run"] is True and dry["objects_removed"] > 0 and dry["bytes_freed"] > 0
    assert object_files(store_path) == before
    assert "would remove" in ok(inited("gc", "--dry-run", "--grace", "0")).stdout

    spared = as_json(inited("gc", "--json"))  # default grace: an hour
    assert spared["objects_removed"] == 0 and spared["objects_spared"] > 0

    real = as_json(inited("gc", "--grace", "0", "--json"))
    assert real["dry_run"] is False and real["objects_removed"] == dry["objects_removed"]
    assert len(object_files(store_path)) == len(before) - real["objects_removed"]
    ok(inited("verify"))


# ------------------------------------------------------------------------------------ verify


def test_verify_clean_then_corrupt_object(inited: Run, tmp_path: Path, store_path: Path) -> None:
    snap = save(inited, tmp_path, "t", 1, 0)
    other = save(inited, tmp_path, "u", 1, 9)
    clean = ok(inited("verify"))
    assert clean.stdout.startswith("ok:")
    report = as_json(inited("verify", "--json"))
    assert report["ok"] is True and report["problems"] == [] and report["objects_checked"] > 0

    tensors = as_json(inited("show", snap["id"], "--json"))["tensors"]
    digest = next(t["digest"] for t in tensors if t["name"] == "encoder.weight")
    blob = store_path / "objects" / digest[:2] / digest
    blob.chmod(stat.S_IRUSR | stat.S_IWUSR)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))

    bad = inited("verify")
    assert bad.exit_code == 5, bad.output
    assert digest[:12] in bad.stdout and snap["short_id"] in bad.stdout
    assert other["short_id"] not in bad.stdout
    assert "error:" in bad.stderr and "Traceback" not in bad.output

    report = json.loads(inited("verify", "--json").stdout)
    assert report["ok"] is False
    assert [p["object"] for p in report["problems"]] == [digest]
    assert report["problems"][0]["snapshots"] == [snap["id"]]
    assert inited("verify", "t").exit_code == 5
    ok(inited("verify", "u"))


# ------------------------------------------------------------------------------------ report


def test_report_storage_table_json_and_plot(inited: Run, tmp_path: Path) -> None:
    save(inited, tmp_path, "alpha", 1, 0)
    save(inited, tmp_path, "alpha", 2, 0)  # all deduplicated
    save(inited, tmp_path, "beta", 1, 1)
    stats = as_json(inited("report", "storage", "--json"))
    assert set(stats) == {
        "tasks",
        "total",
        "snapshots",
        "objects",
        "objects_by_encoding",
        "kept_bases",
    }
    assert stats["kept_bases"] == {"objects": 0, "stored_bytes": 0}
    rows = {r["task"]: r for r in stats["tasks"]}
    total = stats["total"]
    assert total["task"] is None and total["snapshots"] == 3 and rows["alpha"]["snapshots"] == 2
    assert total["logical_bytes"] == 3 * sum(t.nbytes for t in weights().values())
    assert rows["alpha"]["saved_by_dedup"] == rows["alpha"]["logical_bytes"] // 2
    assert total["ratio"] == round(total["stored_bytes"] / total["logical_bytes"], 4)
    assert total["stored_bytes"] == sum(r["stored_bytes"] for r in rows.values())
    assert [s["task"] for s in stats["snapshots"]] == ["alpha", "alpha", "beta"]

    text = ok(inited("report", "storage")).stdout
    for word in (
        "alpha",
        "beta",
        "total",
        f"{total['ratio'] * 100:.2f}%",
        human_bytes(total["logical_bytes"]),
        human_bytes(total["stored_bytes"]),
    ):
        assert word in text

    png = tmp_path / "plots" / "storage.png"
    png.parent.mkdir()  # a plot never makes folders
    result = ok(inited("report", "storage", "--plot", png))
    assert str(png) in result.stdout
    assert png.read_bytes().startswith(PNG_MAGIC) and png.stat().st_size > 5000

    png2 = tmp_path / "again.png"
    result = ok(inited("report", "storage", "--json", "--plot", png2))
    assert json.loads(result.stdout)["total"] == total  # the plot line went to stderr
    assert png2.read_bytes().startswith(PNG_MAGIC)


def test_report_storage_on_an_empty_store(inited: Run) -> None:
    stats = as_json(inited("report", "storage", "--json"))
    assert stats["total"]["snapshots"] == 0 and stats["tasks"] == []


# ------------------------------------------------------------------------------------ errors


def test_unknown_ref_exits_3_without_traceback(inited: Run, tmp_path: Path) -> None:
    save(inited, tmp_path, "t", 1, 0)
    for args in (
        ["show", "t@99"],
        ["show", "nosuchtask"],
        ["diff", "t@1", "t:nope"],
        ["log", "nosuchtask"],
        ["export", "t:x", str(tmp_path / "o.safetensors")],
    ):
        result = inited(*args)
        assert result.exit_code == 3, (args, result.output)
        assert result.stderr.startswith("error: ")
        assert "Traceback" not in result.output
        assert result.stdout == ""


def test_invalid_ref_exits_2(inited: Run) -> None:
    result = inited("show", "bad ref!")
    assert result.exit_code == 2 and "error: invalid ref" in result.stderr


def test_truncated_safetensors_exits_2(inited: Run, tmp_path: Path) -> None:
    file = write_input("safetensors", tmp_path / "w", weights())
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])
    result = inited("save", "t", file, "--step", "1")
    assert result.exit_code == 2, result.output
    assert "error:" in result.stderr and "Traceback" not in result.output
    assert as_json(inited("log", "--json")) == []


def test_step_saved_twice_exits_4(inited: Run, tmp_path: Path) -> None:
    save(inited, tmp_path, "t", 1, 0)
    file = write_input("safetensors", tmp_path / "again", weights(1))
    result = inited("save", "t", file, "--step", "1")
    assert result.exit_code == 4, result.output
    assert "error:" in result.stderr and "step 1" in result.stderr
    assert len(as_json(inited("log", "--json"))) == 1


def test_ctrl_c_exits_130_and_the_store_is_closed(
    inited: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[bool] = []
    real_close = Catalog.close

    def close(self: Catalog) -> None:
        closed.append(True)
        real_close(self)

    def interrupted(self: Catalog, task: str | None = None, *, limit: int | None = None) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Catalog, "close", close)
    ok(inited("log"))
    assert closed == [True]
    monkeypatch.setattr(Catalog, "log", interrupted)
    result = inited("log")
    assert result.exit_code == 130 and "interrupted" in result.stderr
    assert closed == [True, True]


def test_unexpected_errors_keep_their_traceback(
    inited: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(self: Catalog, task: str | None = None, *, limit: int | None = None) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(Catalog, "log", boom)
    result = inited("log")
    assert isinstance(result.exception, RuntimeError)
    assert "error: boom" not in result.output


def test_db_upgrade(inited: Run, run: Run, tmp_path: Path) -> None:
    result = ok(inited("db", "upgrade"))
    assert "already at revision" in result.stdout
    missing = run("--store", tmp_path / "none", "db", "upgrade", store=False)
    assert missing.exit_code == 3 and "error:" in missing.stderr
    assert "up to date" in ok(inited("db", "current")).stdout


def test_db_unlock_removes_a_dead_gc_lock(inited: Run, store_path: Path) -> None:
    from datetime import timedelta

    from weightstore import WeightStore

    with WeightStore.open(store_path) as store:
        store.index.acquire_lock("gc", "dead-process", stale_after=timedelta(hours=1))
    held = inited("gc")
    assert held.exit_code == 7 and "db unlock gc" in held.stderr
    assert "dead-process" in ok(inited("db", "unlock", "gc")).stdout
    ok(inited("gc"))
    assert "no gc lock" in ok(inited("db", "unlock")).stdout


# ------------------------------------------------------------------------------------ parts


def test_human_bytes() -> None:
    assert human_bytes(0) == "0 B"
    assert human_bytes(1023) == "1023 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(5 * 1024**3) == "5.0 GiB"
    assert human_bytes(-2048) == "-2.0 KiB"


def test_progress_counts_updates_from_many_threads() -> None:
    screen = StringIO()
    console = Console(file=screen, force_terminal=True, width=100)

    def work(bar: ByteProgress) -> None:
        for _ in range(5000):
            bar(1)

    with ByteProgress("counting", 8 * 5000, console=console) as bar:
        threads = [threading.Thread(target=work, args=(bar,)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert bar.completed == 8 * 5000
    assert "counting" in screen.getvalue()  # drawn on a terminal


def test_importing_the_cli_is_light() -> None:
    code = (
        "import sys, weightstore.cli.main; "
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported at import time'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_console_script_round_trip(tmp_path: Path) -> None:
    env = {**os.environ, "WEIGHTSTORE_PATH": str(tmp_path / "store"), "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "weightstore.cli.main"]

    def call(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cmd, *args], env=env, capture_output=True, text=True, check=check, timeout=120
        )

    assert "Usage: weightstore" in call("--help").stdout
    file = write_input("safetensors", tmp_path / "w", weights())
    call("init")
    saved = json.loads(call("save", "demo", str(file), "--step", "5", "--json").stdout)
    rows = json.loads(call("log", "--json").stdout)
    assert [r["id"] for r in rows] == [saved["id"]]
    failed = call("show", "demo@6", check=False)
    assert failed.returncode == 3
    assert failed.stderr.startswith("error: ") and "Traceback" not in failed.stderr


def test_version_tag_moves_and_token_list_say_what_a_user_needs(
    inited: Run, tmp_path: Path
) -> None:
    """Issue 16, item 11: no --version; a moved tag did not say from where; token list had
    no header."""
    import weightstore

    out = ok(inited("--version", store=False)).stdout
    assert out.strip() == f"weightstore {weightstore.__version__}"
    first = save(inited, tmp_path, "t", 1)
    second = save(inited, tmp_path, "t", 2, 1)
    ok(inited("tag", "t@1", "best"))
    moved = ok(inited("tag", "t@2", "best")).stdout
    assert "moved from" in moved and first["short_id"] in moved
    assert second["short_id"] in moved
    ok(inited("token", "create", "--scope", "read"))
    listing = ok(inited("token", "list")).stdout.splitlines()
    assert listing[0].split()[:3] == ["id", "scope", "created"]


def entry_point(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed ``weightstore`` console script, as a user runs it."""
    script = Path(sys.executable).with_name("weightstore")
    return subprocess.run(
        [str(script), *args],
        env={**os.environ, "COLUMNS": "120", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_help_names_values_and_lists_commands_in_the_order_they_are_met() -> None:
    """Issue 16, item 11: metavars read <str>, <list[str]>, <int range>; serve/push/pull/clone
    came before init/save/log; --max-upload-bytes showed 68719476736."""
    top = entry_point("--help").stdout
    order = [top.index(f"│ {c} ") for c in ("init", "save", "log", "show", "push", "serve")]
    assert order == sorted(order)
    for args in (
        ["--help"],
        ["save", "--help"],
        ["serve", "--help"],
        ["report", "swap", "--help"],
        ["push", "--help"],
        ["verify", "--help"],
        ["demo", "--help"],
    ):
        text = entry_point(*args).stdout
        assert "<str>" not in text and "<list[" not in text and "<int" not in text, args
    save = entry_point("save", "--help").stdout
    assert "TASK" in save and "--step             N" in save and "--tag      -t      TAG" in save
    assert "REFS..." in entry_point("report", "swap", "--help").stdout
    serve = entry_point("serve", "--help").stdout
    assert "BYTES" in serve and "(64 GiB)" in serve


def test_a_save_without_step_says_how_to_name_it(tmp_path: Path) -> None:
    file = write_input("safetensors", tmp_path / "w", weights())
    env = {"WEIGHTSTORE_PATH": str(tmp_path / "store")}
    assert entry_point("init", env=env).returncode == 0
    done = entry_point("save", "demo", str(file), env=env)
    assert done.returncode == 0, done.stderr
    assert "note: saved without --step" in done.stderr and "demo@N" in done.stderr
    with_step = entry_point("save", "demo", str(file), "--step", "3", env=env)
    assert "note:" not in with_step.stderr
