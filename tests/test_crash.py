"""A writer killed at any moment leaves a store that opens, verifies and restores, and faults
(a full disk, a lost commit race) leave no trace of the failed snapshot.

The kill tests run ``tests/procs/saver.py`` in a child process saving six deterministic
snapshots (``procs.workload.state``: 22 tensors of fp32/bf16/int64, about 3 MiB, each version a
small perturbation of the last so deltas are used), SIGKILL it after a seeded random delay spread
over a full run's duration (which includes creating the store), and then check in this process:
the store opens; ``verify()`` is clean; every snapshot the worker reported restores bit-exactly;
the interrupted one is either whole or absent; nothing else is listed; the ``latest`` tag moved
with each commit; the interrupted step can be saved again; and after ``gc(grace_seconds=0)`` all
of that still holds. Workers are forked by ``saver.py --fork-server`` (one torch import for the
whole module instead of one per kill). Two more kills happen at fixed moments of an object write
(before its bytes, and before its fsync and rename), and one halfway through writing the store's
config file.

The fault tests need no processes: an object backend that fails as a full disk would, and a
concurrent saver that takes the same step first (before our commit, or inside it).
"""

from __future__ import annotations

import random
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from procs.harness import ForkedWorker, ForkServer
from procs.workload import mismatches, state
from sqlalchemy import create_engine, event, text

from weightstore import StoreSettings, WeightStore
from weightstore.errors import Conflict, RefNotFound, StorageError
from weightstore.index import Index, IndexSettings, committing
from weightstore.objects import LocalBackend
from weightstore.testing.faults import FaultBackend, faults_of
from weightstore.types import VerifyResult

TASK = "crash"
STEPS = 6
SQLITE_SEEDS = list(range(12))
POSTGRES_SEEDS = [100, 101, 102]

# ------------------------------------------------------------------------------ helpers


def check_verify(result: VerifyResult) -> None:
    """``result`` is clean."""
    assert not result.problems, f"verify found problems: {result.problems}"


def check_restores(store: WeightStore, expected: dict[str, dict[str, torch.Tensor]]) -> None:
    """Every ref in ``expected`` restores to exactly those tensors (also with digests checked)."""
    for ref, tensors in expected.items():
        assert mismatches(store.restore(ref, verify=True), tensors) == [], ref


def jobs(seed: int, steps: range) -> list[list[Any]]:
    """Save version s at step s, each save moving the tag ``latest`` (in its commit)."""
    return [[TASK, s, seed, s, "latest"] for s in steps]


def run_and_kill(
    server: ForkServer,
    path: Path,
    index_url: str | None,
    seed: int,
    delay: float,
    background: bool = False,
) -> list[tuple[int, str]]:
    """Start a worker on the six-step job list (with ``save_async`` if ``background``),
    SIGKILL it after ``delay`` seconds and return the (step, snapshot id) pairs it reported
    committed."""
    config = {
        "store": str(path),
        "index_url": index_url,
        "jobs": jobs(seed, range(STEPS)),
        "async": background,
    }
    worker = server.start(config, path.parent / "worker.out")
    time.sleep(delay)
    status = worker.kill()
    assert status in (0, -signal.SIGKILL), worker.describe()
    assert not [line for line in worker.lines if line.startswith("failed")], worker.describe()
    committed = [(o.step, o.snapshot_id) for o in worker.outcomes()]
    assert [s for s, _ in committed] == list(range(len(committed))), worker.describe()
    return committed


def check_after_kill(
    path: Path, index_url: str | None, seed: int, committed: list[tuple[int, str]]
) -> None:
    """Everything the module docstring promises about a store whose writer was killed."""
    with WeightStore.open(path, index_url=index_url) as store:
        check_verify(store.verify())
        expected = {sid: state(seed, step) for step, sid in committed}
        for step, sid in committed:
            assert store.resolve(f"{TASK}@{step}") == sid
        check_restores(store, expected)

        # The interrupted save: committed but not yet reported, or not there at all.
        steps = {sid: step for step, sid in committed}
        interrupted = len(committed)
        found: str | None
        try:
            found = store.resolve(f"{TASK}@{interrupted}")
        except RefNotFound:
            found = None
        if found is not None:
            steps[found] = interrupted
            expected[found] = state(seed, interrupted)
            check_restores(store, {found: expected[found]})
        assert {(s.task, s.step, s.id) for s in store.log()} == {
            (TASK, step, sid) for sid, step in steps.items()
        }
        if steps:  # the tag moved in the same transaction as each commit
            assert store.resolve(f"{TASK}:latest") == max(steps, key=steps.__getitem__)

        # The interrupted step can be saved again (or, if it made it, the next one).
        again = interrupted if found is None else interrupted + 1
        snap = store.save(TASK, state(seed, again), step=again, tags=["latest"])
        expected[snap.id] = state(seed, again)
        check_restores(store, {snap.id: expected[snap.id], f"{TASK}:latest": expected[snap.id]})

        store.gc(grace_seconds=0)
        check_verify(store.verify())
        check_restores(store, expected)
        assert {s.id for s in store.log()} == set(expected)


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def server() -> Iterator[ForkServer]:
    """Forks saver workers without importing torch again for each."""
    fork_server = ForkServer()
    try:
        yield fork_server
    finally:
        fork_server.close()


def _run_to_end(server: ForkServer, config: dict[str, Any], out: Path) -> ForkedWorker:
    worker = server.start(config, out)
    try:
        worker.finish(timeout=120)
    finally:
        if worker.status is None:
            worker.kill()
    return worker


@pytest.fixture(scope="module")
def run_seconds(server: ForkServer, tmp_path_factory: pytest.TempPathFactory) -> float:
    """How long an uninterrupted run takes from start to exit (store creation included); also
    checks that such a run commits every step, restores exactly and stores deltas."""
    path = tmp_path_factory.mktemp("full") / "store"
    start = time.monotonic()
    config = {"store": str(path), "index_url": None, "jobs": jobs(7, range(STEPS))}
    worker = _run_to_end(server, config, path.parent / "worker.out")
    seconds = time.monotonic() - start
    assert worker.status == 0, worker.describe()
    assert [o.step for o in worker.outcomes() if o.ok] == list(range(STEPS))
    with WeightStore.open(path) as store:
        check_restores(store, {f"{TASK}@{s}": state(7, s) for s in (0, STEPS - 1)})
        encodings = {rec.encoding for rec, _ in store.index.all_objects()}
        assert encodings & {"delta", "sub"}, "the workload must exercise delta objects"
        assert store.verify().ok
    return seconds


# ------------------------------------------------------------------------------ kill tests


@pytest.mark.parametrize("seed", SQLITE_SEEDS)
def test_kill_mid_save_sqlite(
    seed: int, server: ForkServer, run_seconds: float, tmp_path: Path
) -> None:
    delay = random.Random(seed).uniform(0.0, run_seconds)
    path = tmp_path / "store"
    committed = run_and_kill(server, path, None, seed, delay)
    check_after_kill(path, None, seed, committed)


@pytest.mark.parametrize("seed", POSTGRES_SEEDS)
def test_kill_mid_save_postgresql(
    seed: int, server: ForkServer, run_seconds: float, tmp_path: Path, postgres_url: str
) -> None:
    delay = random.Random(seed).uniform(0.0, run_seconds)
    path = tmp_path / "store"
    committed = run_and_kill(server, path, postgres_url, seed, delay)
    check_after_kill(path, postgres_url, seed, committed)


@pytest.mark.parametrize("seed", [200, 201, 202, 203, 204, 205])
def test_kill_during_background_saves_loses_nothing_completed(
    seed: int, server: ForkServer, run_seconds: float, tmp_path: Path
) -> None:
    """Issue 15: a process killed while ``save_async`` saves run in the background: every save
    whose Future completed is there and restores bit-exactly (the workload zeroes each state
    the moment ``save_async`` returns), the one in flight is whole or absent."""
    delay = random.Random(seed).uniform(0.0, run_seconds)
    path = tmp_path / "store"
    committed = run_and_kill(server, path, None, seed, delay, background=True)
    check_after_kill(path, None, seed, committed)


KILL_POINTS = {
    # The 30th object put starts: in step 1, after that object's index row was committed and
    # before any of its bytes were written.
    "before_put": {"kill_on_put": 30},
    # The 4th durability barrier of regular files (the store id's file takes one, step 0's
    # batch two: data, renames): in step 1, with its objects' bytes all in temp files, not yet
    # durable nor renamed.
    "in_put": {"kill_on_file_fsync": 4},
}


@pytest.fixture(scope="module", params=sorted(KILL_POINTS))
def killed_store(
    request: pytest.FixtureRequest, server: ForkServer, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[tuple[int, str]]]:
    """A store whose writer was killed at a fixed moment of an object write (deterministic,
    unlike the random kills): the most likely moments for a real crash. Tests get copies."""
    path = tmp_path_factory.mktemp("killed") / "store"
    config = {"store": str(path), "index_url": None, "jobs": jobs(3, range(3))}
    worker = _run_to_end(server, {**config, **KILL_POINTS[request.param]}, path.parent / "out")
    assert worker.status == -signal.SIGKILL, worker.describe()
    committed = [(o.step, o.snapshot_id) for o in worker.outcomes()]
    assert [s for s, _ in committed] == [0], worker.describe()
    return path, committed


def _copy(store: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(store, tmp_path / "store"))


def test_kill_at_a_fixed_moment_of_an_object_write_recovers(
    killed_store: tuple[Path, list[tuple[int, str]]], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    template, committed = killed_store
    kill_point = request.node.callspec.params["killed_store"]
    path = _copy(template, tmp_path)
    objects = LocalBackend(path / "objects")
    temp_files = list((path / "objects").glob("*/.tmp-*"))
    if "kill_on_file_fsync" in KILL_POINTS[kill_point]:
        assert temp_files, "the kill was meant to land with objects in temp files"
    listed = {info.key for info in objects.iterate()}
    assert not any(f.name in listed for f in temp_files)  # leftovers are never objects
    check_after_kill(path, None, 3, committed)
    assert objects.cleanup_temp(older_than_seconds=0) == len(temp_files)
    with WeightStore.open(path) as store:
        assert store.verify().ok


def test_kill_at_a_fixed_moment_of_an_object_write_leaves_verify_clean(
    killed_store: tuple[Path, list[tuple[int, str]]], tmp_path: Path
) -> None:
    template, _ = killed_store
    with WeightStore.open(_copy(template, tmp_path)) as store:
        result = store.verify()
        assert result.ok, result.problems


def test_kill_while_writing_the_config_leaves_an_openable_store(
    server: ForkServer, tmp_path: Path
) -> None:
    path = tmp_path / "store"
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"  # a URL other than the default: it is saved
    config = {
        "store": str(path),
        "index_url": url,
        "jobs": jobs(4, range(1)),
        "tear_config_write": True,
    }
    worker = _run_to_end(server, config, tmp_path / "worker.out")
    assert worker.status == -signal.SIGKILL, worker.describe()
    with WeightStore.open(path, index_url=url) as store:
        snap = store.save(TASK, state(4, 0), step=0)
        check_restores(store, {snap.id: state(4, 0)})
    with WeightStore.open(path) as store:  # the URL was remembered after all
        check_restores(store, {snap.id: state(4, 0)})


# ------------------------------------------------------------------------------ faults


def full_disk(allowed: int) -> Callable[[str, str | None], None]:
    """A fault hook under which puts fail after ``allowed`` of them succeed, as on a full disk
    (a real full disk cannot be made in this test environment, so the error is raised instead)."""
    lock = threading.Lock()
    left = [allowed]

    def before(op: str, key: str | None) -> None:
        if op != "put":
            return
        with lock:
            left[0] -= 1
            full = left[0] < 0
        if full:
            raise StorageError(f"cannot write object {key!r}: [Errno 28] No space left on device")

    return before


FAST = StoreSettings(fsync=False, threads=2)


def _store_with_two_steps(path: Path, index_url: str) -> WeightStore:
    store = WeightStore.open(path, index_url=index_url, settings=FAST, wrap_objects=FaultBackend)
    for step in range(2):
        store.save(TASK, state(5, step), step=step)
    return store


def _full_disk_save(path: Path, index_url: str) -> None:
    """Save step 2 through a backend that fills up after 3 objects; it must fail cleanly."""
    index = Index.open(IndexSettings(url=index_url))
    with (
        WeightStore(
            index,
            FaultBackend(LocalBackend(path / "objects", fsync=False), before=full_disk(3)),
            FAST,
        ) as full,
        pytest.raises(StorageError, match="No space left"),
    ):
        full.save(TASK, state(5, 2), step=2, tags=["latest"])


def test_full_disk_mid_save_leaves_no_snapshot(tmp_path: Path, index_url: str) -> None:
    path = tmp_path / "store"
    with _store_with_two_steps(path, index_url) as store:
        before = [s.id for s in store.log()]
        _full_disk_save(path, index_url)
        assert [s.id for s in store.log()] == before
        with pytest.raises(RefNotFound):
            store.resolve(f"{TASK}@2")
        with pytest.raises(RefNotFound):
            store.resolve(f"{TASK}:latest")
        check_verify(store.verify())
        expected = {f"{TASK}@{s}": state(5, s) for s in range(2)}
        check_restores(store, expected)
        # Once there is space again the same save works.
        store.save(TASK, state(5, 2), step=2, tags=["latest"])
        expected[f"{TASK}:latest"] = state(5, 2)
        check_restores(store, expected)
        store.gc(grace_seconds=0)
        assert store.verify().ok
        check_restores(store, expected)


def test_full_disk_mid_save_leaves_verify_clean(tmp_path: Path, index_url: str) -> None:
    path = tmp_path / "store"
    with _store_with_two_steps(path, index_url) as store:
        _full_disk_save(path, index_url)
        result = store.verify()
        assert result.ok, result.problems


def _row_counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                table: int(conn.scalar(text(f"SELECT count(*) FROM {table}")) or 0)
                for table in ("snapshots", "snapshot_tensors", "tags")
            }
    finally:
        engine.dispose()


@pytest.mark.parametrize("moment", ["before_commit", "inside_commit"])
def test_losing_a_step_race_writes_no_snapshot_rows(
    tmp_path: Path, index_url: str, moment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another saver commits the same step while ours runs: ours raises Conflict and leaves no
    snapshot, tensor or tag row behind. ``before_commit``: the rival commits while our objects
    are written (our commit transaction finds the step taken); ``inside_commit`` (PostgreSQL
    only; SQLite serialises writers): the rival commits after our transaction checked the step
    and before it inserts the snapshot row (the unique constraint rejects ours)."""
    if moment == "inside_commit" and index_url.startswith("sqlite"):
        pytest.skip("SQLite transactions that write are serialised: there is no such moment")
    path = tmp_path / "store"
    rival_weights = {"w": torch.arange(10, dtype=torch.float32)}
    with (
        _store_with_two_steps(path, index_url) as store,
        WeightStore.open(path, index_url=index_url, settings=FAST) as rival,
    ):
        fired: list[str] = []
        once = threading.Lock()

        def rival_commits() -> None:
            with once:  # our save's worker threads may get here at the same time
                if not fired:
                    fired.append(rival.save(TASK, rival_weights, step=2).id)

        if moment == "before_commit":
            faults_of(store).before = lambda op, key: rival_commits() if op == "put" else None
        else:

            @event.listens_for(store.index.engine, "before_cursor_execute")
            def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
                if statement.lstrip().upper().startswith("INSERT INTO SNAPSHOTS "):
                    rival_commits()

        explained: list[Exception] = []
        explain = committing.explain_rejected

        def spy(*args: Any) -> Exception:
            explained.append(explain(*args))
            return explained[-1]

        monkeypatch.setattr(committing, "explain_rejected", spy)
        counts = _row_counts(index_url)
        with pytest.raises(Conflict, match="already has a snapshot at step 2"):
            store.save(TASK, state(5, 2), step=2, tags=["ours"])
        assert fired, "the rival never ran"
        # inside_commit must have gone through the unique-constraint path, before_commit not.
        assert len(explained) == (moment == "inside_commit")
        assert store.resolve(f"{TASK}@2") == fired[0]
        after = _row_counts(index_url)
        assert after == {
            "snapshots": counts["snapshots"] + 1,
            "snapshot_tensors": counts["snapshot_tensors"] + 1,
            "tags": counts["tags"],
        }
        with pytest.raises(RefNotFound):
            store.resolve(f"{TASK}:ours")
        assert store.verify().ok
        check_restores(
            store,
            {f"{TASK}@0": state(5, 0), f"{TASK}@1": state(5, 1), f"{TASK}@2": rival_weights},
        )
        store.gc(grace_seconds=0)
        assert store.verify().ok
