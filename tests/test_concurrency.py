"""Concurrent writers and gc on one store, on SQLite and PostgreSQL: nothing committed is lost.

Process tests run ``tests/procs/saver.py`` workers (separate interpreters, started ahead of time
by a :class:`WarmPool` so that importing torch overlaps other work):

* two processes saving at once, each to its own task and to a shared task, with tensors that are
  identical across processes (both race to store the same digests): both commit everything;
* a process saving in a loop (re-saving content whose snapshots were deleted, so dedup finds
  unreferenced objects) while this process deletes snapshots and runs gc over and over: with a
  grace period every save shorter than it succeeds, with ``grace_seconds=0`` a save may fail
  with StorageError, and either way every committed snapshot restores bit-exactly.

In-process tests force, with hooks, the interleavings that a process test only hits by chance:
gc between a save's pin and its commit (both outcomes); a save's pin between gc's listing and
its delete (the pin wins); two gc runs at once (LockHeld); gc racing a commit transaction; two
saves of one digest encoded against different delta bases; and gc removing a save's object row
before its blob is written while a rival saver stores the same digest.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import torch
from procs.harness import Outcome, WarmPool, Worker
from procs.workload import mismatches, state
from sqlalchemy import create_engine, event, text

from weightstore import GcResult, StoreSettings, WeightStore
from weightstore.errors import LockHeld, RefNotFound, StorageError
from weightstore.testing.faults import FaultBackend, faults_of

FAST = StoreSettings(fsync=False, threads=1)
PROCESS_TIMEOUT = 120.0


@pytest.fixture(scope="module")
def pool() -> Iterator[WarmPool]:
    workers = WarmPool(size=2)
    try:
        yield workers
    finally:
        workers.close()


def _worker_url(index_url: str) -> str | None:
    """What a worker passes as ``index_url``: SQLite stores use their own ``index.sqlite``
    (so no process rewrites ``weightstore.json``), PostgreSQL ones the test schema."""
    return None if index_url.startswith("sqlite") else index_url


def _open(path: Path, index_url: str) -> WeightStore:
    return WeightStore.open(path, index_url=_worker_url(index_url), settings=FAST)


def _finish(worker: Worker) -> list[Outcome]:
    rc = worker.finish(timeout=PROCESS_TIMEOUT)
    assert rc == 0, worker.describe()
    assert worker.lines[-1] == "done", worker.describe()
    return worker.outcomes()


# ------------------------------------------------------------------------------ two savers

K = 4  # snapshots per process in each of its two tasks
SEEDS = {"a": 11, "b": 22}


def _two_saver_jobs(name: str) -> list[list[Any]]:
    """Process ``name`` saves version k of its model to its own task (step k) and to the shared
    task (step 2k or 2k+1), own task first for even k and shared first for odd k, so that some
    saves to the shared task encode deltas against the other process's objects. The frozen
    tensors (and the version-0 biases and norms) are identical in both processes: both race to
    store those digests. (Identical content has the same base here, hence the same encoding;
    test_same_content_saved_at_once_against_different_bases covers different bases.)"""
    seed, offset = SEEDS[name], 0 if name == "a" else 1
    jobs: list[list[Any]] = []
    for k in range(K):
        own = [f"own-{name}", k, seed, k]
        shared = ["shared", 2 * k + offset, seed, k]
        jobs += [own, shared] if k % 2 == 0 else [shared, own]
    return jobs


def test_two_processes_save_at_once(pool: WarmPool, tmp_path: Path, index_url: str) -> None:
    path = tmp_path / "store"
    _open(path, index_url).close()  # the store exists before the workers start
    workers = []
    try:
        workers = [pool.take(), pool.take()]
        for name, worker in zip("ab", workers, strict=True):
            jobs = _two_saver_jobs(name)
            worker.release({"store": str(path), "index_url": _worker_url(index_url), "jobs": jobs})
        outcomes = {name: _finish(w) for name, w in zip("ab", workers, strict=True)}
    finally:
        for w in workers:
            w.close()

    expected: dict[str, dict[str, torch.Tensor]] = {}
    for name, results in outcomes.items():
        assert all(o.ok for o in results), results
        assert len(results) == 2 * K
        for o in results:
            version = o.step if o.task.startswith("own") else o.step // 2
            expected[o.snapshot_id] = state(SEEDS[name], version)
    with _open(path, index_url) as store:
        assert {s.id for s in store.log()} == set(expected)
        assert len(store.log("shared")) == 2 * K
        for sid, tensors in expected.items():
            assert mismatches(store.restore(sid, verify=True), tensors) == [], sid
        assert store.verify().ok
        frozen = store.show("shared").tensors
        digests = {t.name: t.digest for t in frozen}
        for sid in expected:  # one object per distinct content, whoever stored it
            snap = store.show(sid)
            assert {t.digest for t in snap.tensors if t.name.startswith("frozen.")} == {
                digests["frozen.token_ids"],
                digests["frozen.pos_embed"],
            }


# ------------------------------------------------------------------------------ gc while saving

LOOP_SEED = 33
LOOP_SAVES = 16
VERSIONS = 8  # step i saves version i % 8, so versions come back after their snapshot went


@pytest.mark.parametrize("grace", [1.0, 0.0])
def test_gc_while_saving_loses_nothing(
    pool: WarmPool, tmp_path: Path, index_url: str, grace: float
) -> None:
    """While a worker saves, delete every odd-step snapshot but the newest (so the content of
    odd versions is unreferenced when it is saved again) and run gc, over and over."""
    path = tmp_path / "store"
    deleted: set[str] = set()
    removed = rounds = 0
    with _open(path, index_url) as store:
        worker = pool.take()
        try:
            worker.release(
                {
                    "store": str(path),
                    "index_url": _worker_url(index_url),
                    "jobs": [["loop", i, LOOP_SEED, i % VERSIONS] for i in range(LOOP_SAVES)],
                    "allow_storage_error": True,
                    "pause": 0.05,
                }
            )
            deadline = time.monotonic() + PROCESS_TIMEOUT
            while worker.proc.poll() is None:
                assert time.monotonic() < deadline, worker.describe()
                snaps = store.log("loop") if "loop" in store.tasks() else []
                for snap in snaps[1:]:  # never the newest: it is the parent of the next save
                    if snap.step is not None and snap.step % 2 and snap.id not in deleted:
                        store.delete(snap.id)
                        deleted.add(snap.id)
                removed += store.gc(grace_seconds=grace).objects_removed
                rounds += 1
                time.sleep(0.1)  # let some saves through between gc runs
            outcomes = _finish(worker)
        finally:
            worker.close()

        assert len(outcomes) == LOOP_SAVES, worker.describe()
        failed = [o for o in outcomes if not o.ok]
        assert all(o.error.startswith("StorageError: ") for o in failed), failed
        if grace > 0:
            # gc spares whatever a save pinned less than `grace` seconds before gc started.
            assert all(o.seconds >= grace for o in failed), failed
        else:
            assert removed > 0, "gc never collected anything while the worker saved"
        committed = {o.snapshot_id: o.step for o in outcomes if o.ok}
        assert deleted <= set(committed)
        kept = {sid: step for sid, step in committed.items() if sid not in deleted}
        assert {s.id for s in store.log()} == set(kept)
        expected = {sid: state(LOOP_SEED, step % VERSIONS) for sid, step in kept.items()}

        def check() -> None:
            result = store.verify()
            assert result.ok, result.problems
            for sid, tensors in expected.items():
                assert mismatches(store.restore(sid, verify=True), tensors) == [], sid
            for sid in deleted:
                with pytest.raises(RefNotFound):
                    store.show(sid)

        check()
        store.gc(grace_seconds=0)
        check()
        print(
            f"grace={grace}: {rounds} gc rounds removed {removed} objects; "
            f"{len(failed)} of {LOOP_SAVES} saves failed",
            sorted({o.error[:90] for o in failed}),
        )


# ------------------------------------------------------------------------------ forced orders


def _model() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return {
        "a": torch.randn(300, 100, generator=g),
        "b": torch.randn(40, generator=g).bfloat16(),
        "c": torch.arange(500, dtype=torch.int64),
    }


@contextlib.contextmanager
def _saver_and_collector(path: Path, url: str) -> Iterator[tuple[WeightStore, WeightStore]]:
    """Two stores open on one store folder and index: one saves, the other runs gc."""
    with (
        WeightStore.open(path, index_url=url, settings=FAST, wrap_objects=FaultBackend) as store,
        WeightStore.open(path, index_url=url, settings=FAST) as collector,
    ):
        yield store, collector


@pytest.mark.parametrize("when", ["before", "after"])
def test_gc_between_a_saves_pin_and_its_commit(tmp_path: Path, index_url: str, when: str) -> None:
    """A save re-uses objects nothing references any more; gc (grace 0) removes them right after
    the save pinned the first one. ``before`` the save checks that blob: it sees it gone and
    writes it again, and commits. ``after``: it already relied on the object, so its commit must
    find the row gone and fail with StorageError, leaving nothing behind; a retry works."""
    path = tmp_path / "store"
    weights = _model()
    with _saver_and_collector(path, index_url) as (store, collector):
        store.save("t", weights, step=0)
        store.delete("t@0")
        results: list[GcResult] = []

        def hook(op: str, key: str | None) -> None:
            # get (of the whole blob, for its checksum) is the last read of a save's check
            # that a stored object is sound before it is reused.
            if op == "get" and not results:
                results.append(collector.gc(grace_seconds=0))

        setattr(faults_of(store), when, hook)
        if when == "before":
            snap = store.save("t", weights, step=1)
            assert mismatches(store.restore(snap.id, verify=True), weights) == []
        else:
            with pytest.raises(StorageError, match="garbage-collected during the save; retry"):
                store.save("t", weights, step=1)
            assert store.log() == []
            snap = store.save("t", weights, step=1)  # the retry
            assert mismatches(store.restore(snap.id, verify=True), weights) == []
        assert results and results[0].objects_removed == len(weights)
        assert [s.id for s in store.log()] == [snap.id]
        assert store.verify().ok


def test_a_pin_after_gc_listed_an_object_wins(tmp_path: Path, index_url: str) -> None:
    """gc has listed an unreferenced, expired object and decided to delete it; a save pins it
    (re-uses it) just before gc's delete: the delete must see the fresh pin and keep the object,
    and the save then commits without writing it again."""
    path = tmp_path / "store"
    weights = _model()
    with _saver_and_collector(path, index_url) as (store, collector):
        store.save("t", weights, step=0)
        digests = [t.digest for t in store.show("t@0").tensors]
        store.delete("t@0")
        delete = collector.index.delete_object_if_unused
        pinned: list[set[str]] = []

        def pin_first(digest: str, cutoff: datetime, before_commit: Callable[[], None]) -> bool:
            if not pinned:  # the saver's pin_objects lands between gc's listing and its delete
                pinned.append(store.index.pin_objects(digests, datetime.now(timezone.utc)))
            return delete(digest, cutoff, before_commit)

        collector.index.delete_object_if_unused = pin_first  # type: ignore[method-assign]
        result = collector.gc(grace_seconds=0)
        assert pinned == [set(digests)]
        assert result.objects_removed == 0
        assert all(store.objects.exists(d) for d in digests)
        puts: list[str] = []

        faults_of(store).before = lambda op, key: puts.append(str(key)) if op == "put" else None
        snap = store.save("t", weights, step=1)
        assert puts == []  # deduplicated against the objects gc kept
        assert mismatches(store.restore(snap.id, verify=True), weights) == []
        assert store.verify().ok


def test_two_gc_runs_at_once(tmp_path: Path, index_url: str) -> None:
    """A second gc while one runs raises LockHeld naming the holder; once the first finishes
    (or fails) the lock is free again."""
    path = tmp_path / "store"
    inside, go_on = threading.Event(), threading.Event()

    failing = [False]

    def block(op: str, key: str | None) -> None:
        if op == "iterate":  # gc lists blobs while it holds the lock
            inside.set()
            assert go_on.wait(30)
            if failing[0]:
                raise StorageError("listing failed")

    with (
        WeightStore.open(
            path, index_url=index_url, settings=FAST, wrap_objects=FaultBackend
        ) as first,
        WeightStore.open(path, index_url=index_url, settings=FAST) as second,
    ):
        first.save("t", _model(), step=0)
        faults_of(first).before = block
        outcome: list[object] = []

        def run_first() -> None:
            try:
                outcome.append(first.gc(grace_seconds=0))
            except Exception as e:
                outcome.append(e)

        for fail in (False, True):
            failing[0] = fail
            inside.clear()
            go_on.clear()
            outcome.clear()
            thread = threading.Thread(target=run_first)
            thread.start()
            try:
                assert inside.wait(30), "the first gc never got going"
                holder = first._holder  # noqa: SLF001 (the name the lock error must give)
                with pytest.raises(LockHeld, match=re.escape(holder)):
                    second.gc(grace_seconds=0)
                with pytest.raises(LockHeld):
                    second.gc(dry_run=True)
            finally:
                go_on.set()
                thread.join(30)
            assert not thread.is_alive()
            if fail:
                assert isinstance(outcome[0], StorageError)
            else:
                assert isinstance(outcome[0], GcResult)
            assert isinstance(second.gc(grace_seconds=0), GcResult)  # free again
        assert mismatches(second.restore("t@0"), _model()) == []


def _gc_racing_a_commit(path: Path, url: str, wait_until_blocked: Callable[[], None]) -> None:
    """A save that re-uses an unreferenced object commits while gc (grace 0) tries to delete
    that object: gc must keep it (the commit references it) and finish without error."""
    weights = {"w": torch.randn(100, 100, generator=torch.Generator().manual_seed(9))}
    with _saver_and_collector(path, url) as (store, collector):
        store.save("t", weights, step=0)
        store.delete("t@0")
        outcome: list[object] = []
        threads: list[threading.Thread] = []

        def run_gc() -> None:
            try:
                outcome.append(collector.gc(grace_seconds=0))
            except Exception as e:
                outcome.append(e)

        @event.listens_for(store.index.engine, "before_cursor_execute")
        def inside_commit(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if statement.startswith("INSERT INTO snapshot_tensors") and not threads:
                threads.append(threading.Thread(target=run_gc))
                threads[0].start()
                wait_until_blocked()

        snap = store.save("t", weights, step=1)
        assert threads, "the hook never ran"
        threads[0].join(60)
        assert not threads[0].is_alive()
        assert isinstance(outcome[0], GcResult), outcome[0]
        assert mismatches(store.restore(snap.id, verify=True), weights) == []
        assert store.verify().ok


def test_gc_racing_a_commit_sqlite(tmp_path: Path) -> None:
    # SQLite serialises the two write transactions; gc's waits in busy_timeout meanwhile.
    _gc_racing_a_commit(
        tmp_path / "store", f"sqlite:///{tmp_path / 'index.db'}", lambda: time.sleep(0.5)
    )


def test_gc_racing_a_commit_postgresql(tmp_path: Path, postgres_url: str) -> None:
    """gc's DELETE of the object is made to wait on the row lock the commit transaction holds
    (seen in pg_stat_activity), then the commit goes through."""
    admin = create_engine(postgres_url.split("?")[0], isolation_level="AUTOCOMMIT")
    app = postgres_url.split("application_name=")[1].split("&")[0]

    def wait_until_blocked() -> None:
        deadline = time.monotonic() + 30
        with admin.connect() as conn:
            while time.monotonic() < deadline:
                waiting = conn.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = :app "
                        "AND wait_event_type = 'Lock' AND query LIKE 'DELETE FROM objects%'"
                    ),
                    {"app": app},
                )
                if waiting:
                    return
                time.sleep(0.01)
        raise AssertionError("gc's DELETE never waited on the commit")

    try:
        _gc_racing_a_commit(tmp_path / "store", postgres_url, wait_until_blocked)
    finally:
        admin.dispose()


def _three_versions() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three small perturbations of one tensor: each encodes as a delta against the others."""
    w = torch.randn(256, 256, generator=torch.Generator().manual_seed(4))
    in_x, in_y, new = w.clone(), w.clone(), w.clone()
    in_x.view(-1)[::100] += 1e-3
    in_y.view(-1)[1::100] += 1e-3
    new.view(-1)[2::100] += 1e-3
    return in_x, in_y, new


def _wrap_index(store: WeightStore, names: tuple[str, ...], before: Callable[[], None]) -> None:
    """Call ``before()`` at the start of each of the store's Index methods ``names`` that exist
    (``add_object`` or the batched ``add_objects``: whichever the save path uses)."""
    for name in names:
        method = getattr(store.index, name, None)
        if method is None:
            continue

        def wrapped(*args: Any, _method: Any = method, **kwargs: Any) -> Any:
            before()
            return _method(*args, **kwargs)

        setattr(store.index, name, wrapped)


def test_same_content_saved_at_once_against_different_bases(tmp_path: Path, index_url: str) -> None:
    """Tasks x and y hold different versions of tensor w; two stores then save the same new w
    to x and to y at once, so one encodes it as a delta against x's w and the other against
    y's. Forced order: both find the digest absent (pin), store A records the object row first,
    store B records it (finding A's row) only after A wrote its blob, so B's blob is written
    last. Both snapshots must restore exactly: the row and the blob must describe the same
    encoding."""
    path = tmp_path / "store"
    in_x, in_y, new = _three_versions()
    with (
        WeightStore.open(path, index_url=index_url, settings=FAST, wrap_objects=FaultBackend) as a,
        WeightStore.open(path, index_url=index_url, settings=FAST, wrap_objects=FaultBackend) as b,
    ):
        a.save("x", {"w": in_x}, step=0)
        a.save("y", {"w": in_y}, step=0)
        b_looked, a_wrote = threading.Event(), threading.Event()
        order: list[str] = []
        # Waits with a timeout and no failure, so a library that orders these steps differently
        # cannot hang the test; the order assertion below says whether the race was forced.
        pin_b = b.index.pin_objects

        def pin_then_signal(*args: Any, **kwargs: Any) -> set[str]:
            found: set[str] = pin_b(*args, **kwargs)
            order.append("b looked")
            b_looked.set()
            return found

        def a_records() -> None:
            b_looked.wait(5)
            order.append("a records")

        def b_records() -> None:
            a_wrote.wait(5)
            order.append("b records")

        def wrote(name: str, event: threading.Event | None) -> Callable[[str, str | None], None]:
            def after(op: str, key: str | None) -> None:
                if op == "put":
                    order.append(f"{name} wrote")
                    if event is not None:
                        event.set()

            return after

        b.index.pin_objects = pin_then_signal  # type: ignore[method-assign]
        _wrap_index(a, ("add_object", "add_objects"), a_records)
        _wrap_index(b, ("add_object", "add_objects"), b_records)
        faults_of(a).after = wrote("a", a_wrote)
        faults_of(b).after = wrote("b", None)
        errors: list[BaseException] = []

        def save_b() -> None:
            try:
                b.save("y", {"w": new}, step=1)
            except BaseException as e:
                errors.append(e)

        thread = threading.Thread(target=save_b)
        thread.start()
        try:
            a.save("x", {"w": new}, step=1)
        finally:
            a_wrote.set()
            b_looked.set()
            thread.join(30)
        assert not errors, errors
        assert order == ["b looked", "a records", "a wrote", "b records", "b wrote"], order
        for ref in ("x@1", "y@1"):
            assert mismatches(a.restore(ref, verify=True), {"w": new}) == [], ref
        assert a.verify().ok


def test_gc_between_recording_and_writing_an_object_with_a_rival_saver(
    tmp_path: Path, index_url: str
) -> None:
    """Store A saves new w to x and has recorded its object row (a delta against x's w), but
    not yet written the blob, when gc (grace 0: A's save counts as older than the grace) removes
    that row, and store B saves the same w to y (a delta against y's w) and commits. Then A
    writes its blob and commits. A may fail with StorageError, but every snapshot that was
    committed must restore exactly."""
    path = tmp_path / "store"
    in_x, in_y, new = _three_versions()
    with (
        WeightStore.open(path, index_url=index_url, settings=FAST, wrap_objects=FaultBackend) as a,
        WeightStore.open(path, index_url=index_url, settings=FAST) as b,
        WeightStore.open(path, index_url=index_url, settings=FAST) as collector,
    ):
        a.save("x", {"w": in_x}, step=0)
        a.save("y", {"w": in_y}, step=0)
        meanwhile: list[object] = []

        def race(op: str, key: str | None) -> None:
            if op == "put" and not meanwhile:
                meanwhile.append(collector.gc(grace_seconds=0))
                meanwhile.append(b.save("y", {"w": new}, step=1))

        faults_of(a).before = race
        with contextlib.suppress(StorageError):  # allowed: A's object went during its save
            a.save("x", {"w": new}, step=1)
        gc_result = meanwhile[0]
        assert isinstance(gc_result, GcResult) and gc_result.objects_removed == 1
        committed = [s.id for s in a.log() if s.step == 1]
        assert committed, "B's snapshot at least was committed"
        for sid in committed:
            assert mismatches(a.restore(sid, verify=True), {"w": new}) == [], sid
        assert a.verify().ok
