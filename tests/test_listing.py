"""Listings read only what they show: summaries, task summaries, added bytes and what a delete
frees, on SQLite and PostgreSQL (Index API), and the CLI on narrow terminals and at start-up."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from rich.console import Console
from sqlalchemy import event
from typer.testing import CliRunner

from weightstore.cli.main import app
from weightstore.cli.render import storage_table
from weightstore.errors import RefNotFound
from weightstore.index import Index
from weightstore.types import Encoding, ObjectRecord, StoreStats, TensorEntry, UsageRow

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def digest(label: object) -> str:
    return hashlib.sha256(str(label).encode()).hexdigest()


def obj(index: Index, label: str, stored: int, base: str | None = None) -> str:
    d = digest(label)
    enc: Encoding = "delta" if base else "plain"
    index.add_objects([ObjectRecord(d, 1000, stored, enc, base, 1 if base else 0)], T0)
    return d


def commit(
    index: Index, sid: str, tensors: dict[str, str], minutes: int, task: str = "train", **kw: object
) -> str:
    entries = [TensorEntry(n, "float32", (250,), d, 1000) for n, d in tensors.items()]
    index.commit_snapshot(
        snapshot_id=sid,
        task=task,
        step=kw.get("step"),  # type: ignore[arg-type]
        parent_id=None,
        created_at=T0 + timedelta(minutes=minutes),
        message="",
        metadata={"m": minutes},
        logical_bytes=1000 * len(entries),
        tensors=entries,
        tags=kw.get("tags", ()),  # type: ignore[arg-type]
    )
    return sid


@pytest.fixture
def history(index: Index) -> Index:
    """a (two new objects) -> b (one changed: a delta on a's) -> c (same as b) ; task other."""
    a1, a2 = obj(index, "a1", 400), obj(index, "a2", 300)
    b1 = obj(index, "b1", 50, base=a1)
    commit(index, "a" * 64, {"w1": a1, "w2": a2, "w2copy": a2}, 0, step=1, tags=["best"])
    commit(index, "b" * 64, {"w1": b1, "w2": a2}, 1, step=2)
    commit(index, "c" * 64, {"w1": b1, "w2": a2}, 2, step=3)
    commit(index, "d" * 64, {"x": obj(index, "x", 7)}, 3, task="other")
    return index


def test_summaries_are_newest_first_with_counts_tags_and_added_bytes(history: Index) -> None:
    got = history.list_summaries("train")
    assert [s.id[0] for s in got] == ["c", "b", "a"]
    assert [s.tensor_count for s in got] == [2, 2, 3]
    # a: a1 + a2 once (a2 is used twice); b: only its delta; c: nothing new.
    assert [s.added_bytes for s in got] == [0, 50, 700]
    assert got[2].tags == ("best",) and got[2].metadata == {"m": 0} and got[2].step == 1
    assert [s.id[0] for s in history.list_summaries(limit=2)] == ["d", "c"]
    full = history.get_snapshot("b" * 64)
    assert full.added_bytes == 50 and len(full.tensors) == 2


def test_unknown_task_names_the_tasks(history: Index) -> None:
    with pytest.raises(RefNotFound, match="other, train"):
        history.list_summaries("nope")


def test_task_summaries(history: Index) -> None:
    rows = history.task_summaries()
    assert [(t.task, t.snapshots) for t in rows] == [("other", 1), ("train", 3)]
    assert rows[1].latest is not None and rows[1].latest.id == "c" * 64


def test_a_listing_reads_no_tensor_row_of_snapshots_it_does_not_show(history: Index) -> None:
    statements: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    event.listen(history.engine, "before_cursor_execute", record)
    try:
        history.list_summaries(limit=1)
    finally:
        event.remove(history.engine, "before_cursor_execute", record)
    # Every statement that touches tensor rows is bound to the shown snapshots' ids.
    touching = [s for s in statements if "snapshot_tensors" in s]
    assert touching and all("IN" in s.upper() for s in touching), touching


def test_deletion_effect_names_objects_kept_as_delta_bases(history: Index) -> None:
    effect = history.deletion_effect("a" * 64)
    # a2 is shared with b and c; a1 is only a's but b's delta needs it as its base.
    assert (effect.frees_objects, effect.kept_as_bases, effect.kept_as_bases_bytes) == (0, 1, 400)
    history.delete_snapshot("c" * 64)
    only = history.deletion_effect("b" * 64)
    assert (only.frees_objects, only.frees_bytes, only.kept_as_bases) == (1, 50, 0)
    assert history.deletion_effect("d" * 64).frees_bytes == 7


def test_added_bytes_move_to_the_next_snapshot_when_the_first_is_deleted(history: Index) -> None:
    history.delete_snapshot("a" * 64)
    assert history.list_summaries("train")[-1].added_bytes == 350  # b now first uses b1, a2


# ------------------------------------------------------------------------------------ CLI


def stats_with_negative_compression() -> StoreStats:
    row = UsageRow("a-task-name-that-is-long", 2, 2048, 2168, 0, 0, -120)
    total = UsageRow(None, 2, 2048, 2168, 0, 0, -120)
    return StoreStats((row,), total, (), 2, {"raw": 2})


def render(table: object, width: int) -> str:
    with open(os.devnull, "w") as sink:
        console = Console(width=width, record=True, file=sink)
        console.print(table)
        return console.export_text()


def test_storage_report_never_shows_negative_savings_and_explains_encodings() -> None:
    text = render(storage_table(stats_with_negative_compression(), width=200), 200)
    assert "-120" not in text and "120 B of frame headers" in text
    assert "raw: kept as is" in text


@pytest.mark.parametrize("width", [80, 100])
def test_storage_report_keeps_the_task_column(width: int) -> None:
    text = render(storage_table(stats_with_negative_compression(), width=width), width)
    assert "a-task-name-that-is-long" in text and "total" in text
    assert max(len(line) for line in text.splitlines()) <= width


def cli(store: Path, *args: str, columns: int = 200) -> str:
    result = CliRunner().invoke(app, ["--store", str(store), *args], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture
def cli_store(tmp_path: Path) -> Path:
    from safetensors.torch import save_file
    from torch import manual_seed, randn

    manual_seed(0)
    sd = {f"encoder.layer.{i}.attention.weight": randn(64, 64) for i in range(3)}
    store = tmp_path / "store"
    cli(store, "init")
    task = "sentiment-analysis-minilm-l6"
    for step, tag in ((100, ["-t", "best"]), (200, [])):
        save_file(sd, str(tmp_path / "w.safetensors"))
        cli(store, "save", task, str(tmp_path / "w.safetensors"), "--step", str(step), *tag)
        sd["encoder.layer.0.attention.weight"] += 0.001
    return store


@pytest.mark.parametrize("width", [80, 100])
def test_log_and_tasks_keep_identifying_columns_at_narrow_widths(
    cli_store: Path, width: int
) -> None:
    log = cli(cli_store, "log", columns=width)
    assert "sentiment-analysis-minilm-l6" in log and "…" not in log.split("not shown")[0]
    for header in ("id", "task", "step", "tags", "added"):
        assert header in log
    assert "200" in log and "best" in log
    assert max(len(line) for line in log.splitlines()) <= width
    tasks = cli(cli_store, "tasks", columns=width)
    assert "sentiment-analysis-minilm-l6" in tasks


def test_log_and_save_report_added_bytes(cli_store: Path) -> None:
    rows = json.loads(cli(cli_store, "log", "--json", "-n", "1"))
    assert len(rows) == 1 and rows[0]["step"] == 200
    assert 0 < rows[0]["added_bytes"] < rows[0]["logical_bytes"] / 2  # a delta, not a copy
    show = cli(cli_store, "show", "sentiment-analysis-minilm-l6@200")
    assert "added" in show


def test_rm_says_it_frees_nothing_when_later_snapshots_delta_against_it(cli_store: Path) -> None:
    out = cli(cli_store, "rm", "sentiment-analysis-minilm-l6@100", "--yes")
    assert "frees no storage" in out and "deltas against them" in out, out


def test_prune_says_what_it_will_do(cli_store: Path) -> None:
    # The older snapshot is tagged, so keeping the newest deletes nothing, and says so.
    out = cli(cli_store, "prune", "sentiment-analysis-minilm-l6", "--keep-last", "1")
    assert "nothing to delete" in out and "--include-tagged" in out
    result = CliRunner().invoke(
        app,
        ["--store", str(cli_store), "prune", "sentiment-analysis-minilm-l6", "--keep-last", "0"],
        input="n\n",
    )
    assert "Delete 1 of the 2 snapshots" in result.output, result.output


def test_listing_commands_do_not_import_torch(cli_store: Path) -> None:
    code = (
        "import sys\n"
        "from weightstore.cli.main import app\n"
        "heavy = ('torch', 'numpy', 'matplotlib', 'alembic', 'zstandard')\n"
        "assert not [m for m in heavy if m in sys.modules], 'imported by the CLI module'\n"
        "for args in (['--help'], ['log', '-n', '1'], ['tasks'], ['show', sys.argv[1]]):\n"
        "    try:\n"
        "        app(['--store', sys.argv[2], *args], prog_name='weightstore')\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, (args, e.code)\n"
        "    found = [m for m in heavy if m in sys.modules]\n"
        "    assert not found, (args, found)\n"
    )
    env = {**os.environ, "COLUMNS": "120"}
    subprocess.run(
        [sys.executable, "-c", code, "sentiment-analysis-minilm-l6", str(cli_store)],
        check=True,
        timeout=120,
        env=env,
        capture_output=True,
    )


def test_help_is_tidy(tmp_path: Path) -> None:
    runner = CliRunner()
    root = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert root.exit_code == 0 and "<bool>" not in root.stdout
    names = [line.split()[1] for line in root.stdout.splitlines() if line.startswith("│ ")]
    commands = [n for n in names if n.isalpha() and not n.startswith("-")]
    assert {"log", "tasks", "show", "prune"} <= set(commands)
    for name in commands:
        out = runner.invoke(app, [name, "--help"], env={"COLUMNS": "200"}).stdout
        assert "<bool>" not in out, name
    # A paragraph wrapped in the docstring shows as one line on a wide terminal.
    save = runner.invoke(app, ["save", "--help"], env={"COLUMNS": "200"}).stdout
    assert "tensors that changed since the parent snapshot are stored" in save


LONG = "model.encoder.layer.{}.attention.self.query_key_value_projection.weight"


@pytest.fixture
def long_store(tmp_path: Path) -> Path:
    from safetensors.torch import save_file
    from torch import randn, zeros

    sd = {LONG.format(i): randn(4, 4) for i in range(3)}
    store = tmp_path / "store"
    cli(store, "init")
    save_file(sd, str(tmp_path / "a.safetensors"))
    cli(store, "save", "sentiment-classifier-v2", str(tmp_path / "a.safetensors"), "--step", "1")
    sd[LONG.format(0)] = randn(4, 4)
    sd["new.x"] = zeros(2)
    save_file(sd, str(tmp_path / "b.safetensors"))
    cli(store, "save", "sentiment-classifier-v2", str(tmp_path / "b.safetensors"), "--step", "2")
    return store


def unfolded(text: str) -> str:
    """The table's first column with its folded lines joined back."""
    cells = [line.split("│")[1].strip() for line in text.splitlines() if line.count("│") > 2]
    return "".join(cells)


def test_show_and_diff_at_80_columns_drop_the_digest_and_fold_names_at_dots(
    long_store: Path,
) -> None:
    show = cli(long_store, "show", "sentiment-classifier-v2@1", columns=80)
    assert max(len(line) for line in show.splitlines()) <= 80
    tensors = show.split("tensors (3)")[1]
    for header in ("name", "dtype", "shape", "size"):
        assert header in tensors
    assert "not shown at 80 columns: digest" in tensors
    for i in range(3):
        assert LONG.format(i) in unfolded(tensors)
    # Folded after a separator, never inside a word.
    lines = [line.split("│")[1].strip() for line in tensors.splitlines() if line.count("│") > 2]
    assert all(line.endswith((".", "_", "/", "-")) or line.endswith("weight") for line in lines)
    diff = cli(
        long_store, "diff", "sentiment-classifier-v2@1", "sentiment-classifier-v2@2", columns=80
    )
    assert max(len(line) for line in diff.splitlines()) <= 80
    assert "values changed" in diff and "added" in diff and "float32" in diff
    assert "…" not in diff


def test_report_swap_at_80_columns_keeps_refs_whole_and_explains_its_rows(
    long_store: Path,
) -> None:
    a, b = "sentiment-classifier-v2@1", "sentiment-classifier-v2@2"
    result = CliRunner().invoke(
        app,
        ["--store", str(long_store), "report", "swap", a, b, "-n", "1"],
        env={"COLUMNS": "80"},
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "…" not in out
    assert "store cold: the first swap" in out and "store warm:" in out
    assert "load_file + clone (baseline)" in out and "raw copy (baseline)" in out
    joined = out.replace("\n", "")
    assert a in joined and b in joined
    # Progress while it measures: one line per phase on stderr when it is not a terminal.
    assert "measuring swaps (1/7): store, cold and warm: " + a in result.stderr
    assert "measuring swaps (7/7)" in result.stderr


def test_piped_tables_take_the_terminal_width_that_stderr_still_shows(long_store: Path) -> None:
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 90, 0, 0))
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "weightstore.cli.main",
                "--store",
                str(long_store),
                "show",
                "sentiment-classifier-v2@1",
            ],
            stdout=subprocess.PIPE,
            stderr=slave,
            env=env,
            timeout=60,
            check=True,
        )
    finally:
        os.close(slave)
        os.close(master)
    widths = [len(line) for line in done.stdout.decode().splitlines()]
    assert 80 < max(widths) <= 90, widths  # the terminal's 90: not 160, not rich's 80


def test_storage_after_rm_charges_kept_bases_to_no_task(tmp_path: Path, index_url: str) -> None:
    import torch

    from weightstore import WeightStore
    from weightstore.cli.render import percent

    with WeightStore.open(tmp_path / "s", index_url=index_url) as store:
        w = {f"l{i}": torch.randn(128, 128) for i in range(3)}
        for step in range(1, 6):
            store.save("t", w, step=step)
            store.save("other", {"x": torch.randn(64)}, step=step)
            w = {k: v + 1e-3 * torch.randn_like(v) for k, v in w.items()}
        for step in (1, 2, 3, 4):
            store.delete(store.resolve(f"t@{step}"))
        stats = store.stats()
    for row in stats.tasks:
        parts = row.saved_by_dedup + row.saved_by_delta + row.saved_by_compression
        assert row.logical_bytes == row.stored_bytes + parts  # never a saving above logical
        assert row.saved_by_delta <= row.logical_bytes
    assert stats.kept_base_objects > 0 and stats.kept_base_bytes > 0
    assert stats.total.stored_bytes == sum(r.stored_bytes for r in stats.tasks) + (
        stats.kept_base_bytes
    )
    text = render(storage_table(stats, width=120), 120)
    assert "(kept delta bases)" in text and "kept delta bases:" in text
    assert percent(0.00001) == "<0.01%" and percent(0.5) == "50.00%" and percent(0) == "0.00%"


def test_rm_and_prune_say_plainly_what_gc_can_free(cli_store: Path) -> None:
    out = " ".join(cli(cli_store, "rm", "sentiment-analysis-minilm-l6@100", "--yes").split())
    assert "every object it uses is needed" not in out  # it only says what is true
    assert "frees no storage" in out and "and the rest are used by other snapshots" in out
    out = cli(
        cli_store,
        "prune",
        "sentiment-analysis-minilm-l6",
        "--keep-last",
        "0",
        "--include-tagged",
        "--yes",
    )
    assert "run `weightstore gc` to free" in out and "object(s)" in out


def test_verify_counts_stored_and_decoded_bytes_against_a_known_total(tmp_path: Path) -> None:
    import torch

    from weightstore import WeightStore

    with WeightStore.open(tmp_path / "s") as store:
        store.save("t", {"zeros": torch.zeros(4096), "r": torch.randn(512)}, step=1)
        totals: list[int] = []
        counted: list[int] = []
        result = store.verify(progress=counted.append, total=totals.append)
    assert totals == [sum(counted)] == [result.bytes_checked] == [4096 * 4 + 512 * 4]
    assert 0 < result.stored_bytes_checked < result.bytes_checked  # the zeros compress
    out = " ".join(cli(tmp_path / "s", "verify").split())
    assert "ok: 2 object(s) verified:" in out and "read, decoded to 18.0 KiB of tensors" in out
