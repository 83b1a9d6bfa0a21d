"""Many writers on one team store (PostgreSQL index, S3 objects on moto): eight processes save
while gc runs with no grace and two ``weightstore serve`` processes serve reads; nothing
committed is lost. And what a gc killed with SIGKILL leaves behind: its lock row, which keeps
the next gc out until ``weightstore db unlock gc`` (or the stale timeout).

Sized to stay well under a minute of work: the writers are forked from one process that
imported torch once (tests/procs/harness.py)."""

from __future__ import annotations

import subprocess
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from procs.harness import ForkServer
from procs.workload import mismatches, state
from sqlalchemy import select
from test_stack import CLI, cli, open_stack_store, served, stack_env  # noqa: F401

from weightstore.index.models import LockRow, ObjectRow
from weightstore.maintenance import GC_LOCK
from weightstore.remote import RemoteStore
from weightstore.types import ObjectRecord

WRITERS = 8
SAVES = 3  # per writer, each a version of the writer's model: deltas of the one before
SEED = 100  # writer i saves model SEED + i

# Each takes well under a minute alone; the bound is for a CI machine running other work.
pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def team_store(stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:  # noqa: F811
    """A served-store setup (schema, store id) with a read token; the AWS variables are set in
    this process too, so that the forked writers reach moto."""
    for key in ("AWS_ENDPOINT_URL", "AWS_REGION"):
        monkeypatch.setenv(key, stack_env[key])
    cli(stack_env, "db", "upgrade")
    cli(stack_env, "init")
    made = cli(stack_env, "token", "create", "--scope", "read")
    return next(w for w in made.split() if w.startswith("wst_"))


@pytest.mark.slow
def test_eight_writers_gc_and_two_servers_lose_nothing(
    stack_env: dict[str, str],  # noqa: F811
    team_store: str,
    tmp_path: Path,
) -> None:
    where, index_url = stack_env["WEIGHTSTORE_PATH"], stack_env["WEIGHTSTORE_INDEX_URL"]
    forks = ForkServer()
    stop = threading.Event()
    errors: list[BaseException] = []
    reads = [0, 0]
    gc_rounds: list[int] = []
    try:
        with (
            open_stack_store(stack_env) as store,
            served(stack_env) as url1,
            served(stack_env) as url2,
        ):
            # Computed up front: workload.state's cache is not thread-safe.
            expected = {
                (f"w{i}", k): state(SEED + i, k) for i in range(WRITERS) for k in range(SAVES)
            }
            expected["seed", 0] = state(SEED - 1, 0)
            store.save("seed", expected["seed", 0], step=0)

            def read(n: int, url: str) -> None:
                # Each server restores the seed and whatever the writers committed so far.
                with RemoteStore(url, token=team_store, cache_dir=tmp_path / f"cache{n}") as r:
                    while not stop.is_set():
                        try:
                            for snap in r.log():
                                assert snap.step is not None
                                want = expected[snap.task, snap.step]
                                assert mismatches(r.restore(snap.id), want) == [], snap.id
                                reads[n] += 1
                        except BaseException as e:
                            errors.append(e)
                            return

            def collect() -> None:
                while not stop.is_set():
                    try:
                        gc_rounds.append(store.gc(grace_seconds=0).objects_removed)
                    except BaseException as e:
                        errors.append(e)
                        return

            threads = [
                threading.Thread(target=read, args=(0, url1)),
                threading.Thread(target=read, args=(1, url2)),
                threading.Thread(target=collect),
            ]
            for t in threads:
                t.start()
            try:
                workers = [
                    forks.start(
                        {
                            "store": where,
                            "index_url": index_url,
                            "jobs": [[f"w{i}", k, SEED + i, k] for k in range(SAVES)],
                            # With no grace, gc may take a save's new objects before its commit:
                            # that save fails with StorageError and commits nothing.
                            "allow_storage_error": True,
                        },
                        tmp_path / f"w{i}.out",
                    )
                    for i in range(WRITERS)
                ]
                for w in workers:
                    assert w.finish(timeout=120) == 0, w.describe()
            finally:
                stop.set()
                for t in threads:
                    t.join(120)
            assert errors == []
            outcomes = [o for w in workers for o in w.outcomes()]
            assert len(outcomes) == WRITERS * SAVES
            failed = [o for o in outcomes if not o.ok]
            assert all(o.error.startswith("StorageError: ") for o in failed), failed
            committed = {o.snapshot_id: (o.task, o.step) for o in outcomes if o.ok}
            assert len(committed) >= WRITERS, failed  # every writer's first save has no rival
            assert {s.id for s in store.log()} - {store.resolve("seed@0")} == set(committed)

            def check() -> None:
                result = store.verify()
                assert result.ok, result.problems
                for sid, (task, step) in committed.items():
                    got = store.restore(sid, verify=True)
                    assert mismatches(got, expected[task, step]) == [], sid

            check()
            store.gc(grace_seconds=0)
            check()
            print(
                f"{len(committed)} committed, {len(failed)} failed saves; {len(gc_rounds)} gc "
                f"rounds removed {sum(gc_rounds)} objects; reads per server: {reads}"
            )
            assert min(reads) > 0, "a server served nothing while the writers saved"
    finally:
        forks.close()


@pytest.mark.slow
def test_a_killed_gc_keeps_its_lock_row_until_taken_over(
    stack_env: dict[str, str],  # noqa: F811
    team_store: str,
) -> None:
    """SIGKILL a gc mid-run: its lock row stays. The next gc on this host sees that the holder's
    process is gone and takes the lock over (a holder on another host is refused until ``db
    unlock gc``: tests/test_index.py); it finishes the work. Each object went in its own
    transaction, so what the killed gc did is consistent."""
    old = datetime(2000, 1, 1, tzinfo=timezone.utc)
    garbage = [f"{i:064x}" for i in range(600)]  # rows whose blobs are gone: slow enough to kill
    with open_stack_store(stack_env) as store:
        store.index.add_objects([ObjectRecord(d, 1, 1, "raw", None, 0) for d in garbage], old)
        gc = subprocess.Popen([*CLI, "gc", "--grace", "0"], env=stack_env)
        try:
            deadline = time.monotonic() + 120
            while True:
                with store.index.engine.connect() as conn:
                    holder = conn.scalar(select(LockRow.holder).where(LockRow.name == GC_LOCK))
                    left = len(conn.execute(select(ObjectRow.digest)).all())
                if holder is not None and left < len(garbage):
                    break  # holding the lock and part way through
                assert gc.poll() is None, "gc finished before it could be killed"
                assert time.monotonic() < deadline
                time.sleep(0.02)
            gc.kill()
            gc.wait(30)
        finally:
            if gc.poll() is None:
                gc.kill()
                gc.wait(30)
        with store.index.engine.connect() as conn:
            assert conn.scalar(select(LockRow.holder).where(LockRow.name == GC_LOCK)) == holder
        again = subprocess.run(
            [*CLI, "gc", "--grace", "0"], env=stack_env, capture_output=True, text=True
        )
        assert again.returncode == 0, again.stderr
        assert f"took over the gc lock of {holder}" in again.stderr
        assert "its process is gone" in again.stderr
        assert store.index.all_objects() == []
        assert store.index.lock_holder(GC_LOCK) is None
        assert store.verify().ok
        print(f"gc killed with {left} of {len(garbage)} rows left; lock of {holder} taken over")
