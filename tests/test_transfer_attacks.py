"""Transfers under attack (issue 17, item 4): a proxy that flips bytes of objects in transit on
pull, clone and a remote restore; two stores pushing the same task and step at once; a pull
killed with SIGKILL part-way, then resumed. Real uvicorn servers on loopback, real stores."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from served import Served, serve, serve_process

from weightstore.catalog import Catalog
from weightstore.errors import Conflict, CorruptObject, TransientStorageError
from weightstore.remote import RemoteStore
from weightstore.store import WeightStore
from weightstore.sync import pull, push
from weightstore.testing.faultproxy import Fault, FaultProxy, no_faults


@pytest.fixture
def served(tmp_path: Path, index_url: str) -> Iterator[Served]:
    with serve(tmp_path / "server", index_url) as s:
        yield s


def weights(seed: int, n: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {f"w{i}": torch.randn(64, 64, generator=g) for i in range(n)}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(a[k].view(torch.int32), b[k].view(torch.int32)) for k in a
    )


def flip_objects(method: str, path: str, body: bytes) -> bytes:
    """One bit of every object body, as a bad NIC or proxy would; manifests untouched."""
    if method == "GET" and path.startswith("/v1/objects/") and len(body) > 64:
        damaged = bytearray(body)
        damaged[len(damaged) * 3 // 4] ^= 0x10
        return bytes(damaged)
    return body


def test_bytes_flipped_in_transit_are_never_kept_or_handed_out(
    served: Served, tmp_path: Path
) -> None:
    sd = weights(1)
    served.store.save("t", sd, step=1)
    with FaultProxy(served.url, no_faults, rewrite=flip_objects) as proxy:
        remote = RemoteStore(
            proxy.endpoint_url, token=served.tokens["read"], cache_dir=tmp_path / "cache"
        )
        with WeightStore.open(tmp_path / "local") as local:
            report = pull(local, remote, ["t"])
            assert report.snapshots == 0 and report.damaged  # named, not kept
            assert local.log() == [] and local.verify().ok
        with pytest.raises(CorruptObject):
            remote.restore("t@1")
        remote.close()
    # Straight to the server, the same caches and stores recover: nothing bad was kept.
    remote = RemoteStore(served.url, token=served.tokens["read"], cache_dir=tmp_path / "cache")
    assert same(remote.restore("t@1"), sd)
    with WeightStore.open(tmp_path / "local") as local:
        assert pull(local, remote, ["t"]).snapshots == 1
        assert same(local.restore("t@1"), sd) and local.verify().ok
    remote.close()


def test_two_stores_pushing_one_task_and_step_at_once(served: Served, tmp_path: Path) -> None:
    stores = [WeightStore.open(tmp_path / f"s{i}") for i in range(2)]
    for i, s in enumerate(stores):
        s.save("shared", weights(10 + i), step=5)
    remotes = [RemoteStore(served.url, token=served.tokens["write"]) for _ in stores]
    results: list[object] = [None, None]

    def one(i: int) -> None:
        try:
            results[i] = push(stores[i], remotes[i], ["shared"])
        except Conflict as e:
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    pushed = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, Conflict)]
    assert len(pushed) + len(refused) == 2 and len(refused) <= 1
    on_server = served.store.log("shared")
    assert len(on_server) == 1 and on_server[0].step == 5  # one winner, no duplicate step
    winner = next(i for i, s in enumerate(stores) if s.log()[0].id == on_server[0].id)
    assert same(served.store.restore("shared@5"), weights(10 + winner))
    assert served.store.verify().ok
    for s, r in zip(stores, remotes, strict=True):
        r.close()
        s.close()


def kill_when(cmd: list[str], committed: Callable[[], int], wanted: int) -> None:
    """Run ``cmd`` and SIGKILL it as soon as ``committed()`` (polled: the snapshots it has
    committed) reaches ``wanted``: mid-transfer, for sure."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and committed() < wanted:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)


def test_a_pull_killed_part_way_resumes_and_loses_nothing(served: Served, tmp_path: Path) -> None:
    expected = {}
    for step in range(1, 9):
        expected[step] = {f"w{i}": torch.randn(256, 256) for i in range(8)}
        served.store.save("t", expected[step], step=step)
    local = tmp_path / "local"
    WeightStore.open(local).close()
    cmd = [
        sys.executable,
        "-m",
        "weightstore.cli.main",
        "--store",
        str(local),
        "pull",
        served.url,
        "t",
        "--token",
        served.tokens["read"],
    ]

    def committed() -> int:
        with Catalog.open(local) as catalog:
            return len(catalog.log())

    partial = 0
    for wanted in (1, 3, 5):
        kill_when(cmd, committed, wanted)
        with WeightStore.open(local) as store:
            assert store.verify().ok  # whatever it committed is whole
            snaps = store.log()
            partial += 0 < len(snaps) < 8
            for snap in snaps:
                assert snap.step is not None and same(store.restore(snap.id), expected[snap.step])
    assert partial  # at least one kill landed mid-pull
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with WeightStore.open(local) as store:
        assert sorted(s.step or 0 for s in store.log()) == list(range(1, 9))
        for step, sd in expected.items():
            assert same(store.restore(f"t@{step}"), sd)
        assert store.verify().ok


@pytest.mark.parametrize("grace", [0, None])  # None: the store's default (an hour)
def test_gc_racing_pushes_never_leaves_a_broken_snapshot(
    served: Served, tmp_path: Path, grace: float | None
) -> None:
    """gc with no grace may collect objects a push sent but has not committed yet: the commit
    must then be refused (typed error) or succeed whole, never commit a snapshot missing an
    object; a push retried after gc stops completes. At the default grace no push fails."""
    local = WeightStore.open(tmp_path / "local")
    expected = {}
    for step in range(1, 7):
        expected[step] = weights(200 + step, n=6)
        local.save("t", expected[step], step=step)
    remote = RemoteStore(served.url, token=served.tokens["write"])
    stop = threading.Event()
    collected: list[int] = []

    def collect() -> None:
        while not stop.is_set():
            collected.append(served.store.gc(grace_seconds=grace).objects_removed)

    gc = threading.Thread(target=collect)
    gc.start()
    failures: list[Exception] = []  # at grace 0 a push racing gc is refused, typed
    try:
        for _ in range(3):
            try:
                push(local, remote, ["t"])
            except (Conflict, CorruptObject, LookupError, ValueError) as e:  # typed, not silent
                failures.append(e)
            for snap in served.store.log():  # whatever committed is whole, now
                assert snap.step is not None
                assert same(served.store.restore(snap.id), expected[snap.step])
    finally:
        stop.set()
        gc.join(120)
    assert grace == 0 or not failures, failures
    push(local, remote, ["t"])
    assert sorted(s.step or 0 for s in served.store.log("t")) == list(range(1, 7))
    for step, sd in expected.items():
        assert same(served.store.restore(f"t@{step}"), sd)
    assert served.store.verify().ok and collected
    remote.close()
    local.close()


HOLD_GC_LOCK = """
import sys, time
from weightstore import WeightStore
store = WeightStore.open(sys.argv[1])
with store.index.lock("gc", store._holder, stale_after=__import__("datetime").timedelta(hours=1)):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_gc_killed_while_it_holds_its_lock_does_not_block_the_next(tmp_path: Path) -> None:
    """A process holding the gc lock (as a running gc does) is killed with SIGKILL; the next
    gc on this host sees the holder is dead and takes the lock over at once instead of refusing
    for an hour; a real gc killed part-way loses nothing a snapshot reaches either."""
    root = tmp_path / "store"
    kept = weights(300, n=4)
    with WeightStore.open(root) as store:
        store.save("keep", kept, step=1)
        for i in range(40):
            store.save(f"junk{i}", weights(400 + i, n=2), step=1)
            store.delete(store.resolve(f"junk{i}"))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_GC_LOCK, str(root)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    holder.send_signal(signal.SIGKILL)
    holder.wait(30)
    holder.stdout.close()
    with WeightStore.open(root) as store:
        assert store.index.lock_holder("gc") is not None  # left behind by the dead process
        assert store.gc(grace_seconds=0).objects_removed > 0  # not LockHeld: taken over
        assert store.index.lock_holder("gc") is None
        assert same(store.restore("keep@1"), kept) and store.verify().ok
    # A real `weightstore gc` killed at once, then run again.
    cmd = [sys.executable, "-m", "weightstore.cli.main", "--store", str(root), "gc", "--grace", "0"]
    for delay in (0.6, 0.9):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    with WeightStore.open(root) as store:
        assert same(store.restore("keep@1"), kept) and store.verify().ok
        assert [s.task for s in store.log()] == ["keep"]


def eight_snapshots(root: Path) -> dict[int, dict[str, torch.Tensor]]:
    """Task "t" at steps 1-8 in a new store at ``root`` (2 MB each); the weights per step."""
    expected = {}
    with WeightStore.open(root) as store:
        for step in range(1, 9):
            expected[step] = {f"w{i}": torch.randn(256, 256) for i in range(8)}
            store.save("t", expected[step], step=step)
    return expected


def test_a_push_killed_part_way_resumes_and_the_server_loses_nothing(
    served: Served, tmp_path: Path
) -> None:
    local = tmp_path / "local"
    expected = eight_snapshots(local)
    cmd = [
        sys.executable,
        "-m",
        "weightstore.cli.main",
        "--store",
        str(local),
        "push",
        served.url,
        "t",
        "--token",
        served.tokens["write"],
    ]
    partial = 0
    for wanted in (1, 4):
        kill_when(cmd, lambda: len(served.store.index.list_snapshots()), wanted)
        snaps = served.store.log()
        partial += 0 < len(snaps) < 8
        for snap in snaps:  # whatever the server committed is whole
            assert snap.step is not None and same(
                served.store.restore(snap.id), expected[snap.step]
            )
    assert partial
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert sorted(s.step or 0 for s in served.store.log("t")) == list(range(1, 9))
    for step, sd in expected.items():
        assert same(served.store.restore(f"t@{step}"), sd)
    assert served.store.verify().ok


class _GcBeforeFirstCommit:
    """A receiving store whose gc (grace 0) runs between the objects' arrival and the first
    manifest: what a gc with a grace shorter than the transfer does."""

    def __init__(self, store: WeightStore) -> None:
        self.store, self.collected = store, 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    def commit_manifest(self, snap: object) -> object:
        if not self.collected:
            self.collected = self.store.gc(grace_seconds=0).objects_removed
        return self.store.commit_manifest(snap)  # type: ignore[arg-type]


def test_a_push_resends_objects_a_gc_collected_before_its_commit(
    tmp_path: Path, index_url: str
) -> None:
    sd = weights(500)
    with (
        WeightStore.open(tmp_path / "src") as src,
        WeightStore.open(tmp_path / "dst", index_url=index_url) as dst,
    ):
        src.save("t", sd, step=1)
        racing = _GcBeforeFirstCommit(dst)
        report = push(src, racing, ["t"])  # type: ignore[arg-type]
        assert racing.collected == len(sd)  # every object it sent was collected once
        assert report.snapshots == 1
        assert same(dst.restore("t@1"), sd) and dst.verify().ok


def test_clone_through_a_proxy_flipping_objects_keeps_nothing_damaged(
    served: Served, tmp_path: Path
) -> None:
    sd = weights(600)
    served.store.save("t", sd, step=1)
    target = tmp_path / "copy"
    with FaultProxy(served.url, no_faults, rewrite=flip_objects) as proxy:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "weightstore.cli.main",
                "clone",
                proxy.endpoint_url,
                str(target),
                "--token",
                served.tokens["read"],
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert done.returncode == 5, done.stdout + done.stderr  # damaged: named, exit 5
    assert "Traceback" not in done.stderr and "t@1" in done.stdout + done.stderr
    if target.exists():
        with WeightStore.open(target) as store:
            assert store.log() == [] and store.verify().ok  # nothing damaged was kept
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "weightstore.cli.main",
            "--store",
            str(target),
            "pull",
            served.url,
            "--token",
            served.tokens["read"],
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr
    with WeightStore.open(target) as store:
        assert same(store.restore("t@1"), sd) and store.verify().ok


def test_serve_killed_at_random_points_of_a_push_loses_nothing_committed(tmp_path: Path) -> None:
    """kill -9 of ``weightstore serve`` at seeded random moments while a client pushes: after
    each kill the server's store verifies clean and every snapshot it lists restores
    bit-exactly; a push to the restarted server sends the rest."""
    import random
    import sqlite3

    from weightstore.index.tokens import Tokens

    root = tmp_path / "server"
    with WeightStore.open(root) as store:
        token = Tokens(store.index.engine).create("write", "pusher")[1]
    local = tmp_path / "local"
    expected = eight_snapshots(local)

    def committed() -> int:
        with sqlite3.connect(root / "index.sqlite", timeout=30) as conn:
            return int(conn.execute("SELECT count(*) FROM snapshots").fetchone()[0])

    rng = random.Random(17)
    counts = []
    for attempt in range(4):
        last = attempt == 3
        with serve_process(root) as (url, server):
            failed: list[BaseException] = []

            def pushing(url: str = url, failed: list[BaseException] = failed) -> None:
                try:
                    with WeightStore.open(local) as src, RemoteStore(url, token=token) as dst:
                        push(src, dst)
                except BaseException as e:  # the server vanished under it
                    failed.append(e)

            pusher = threading.Thread(target=pushing)
            pusher.start()
            if not last:  # once it committed 1, 3, 5 snapshots, then a random moment more
                deadline = time.monotonic() + 60
                while committed() < 2 * attempt + 1 and time.monotonic() < deadline:
                    time.sleep(0.005)
                time.sleep(rng.uniform(0, 0.02))
                server.send_signal(signal.SIGKILL)
            pusher.join(120)
            assert not pusher.is_alive()
            assert not last or not failed, failed
        with WeightStore.open(root) as store:
            assert store.verify().ok
            for snap in store.log():
                assert snap.step is not None
                assert same(store.restore(snap.id), expected[snap.step])
            counts.append(len(store.log()))
            if last:
                assert sorted(s.step or 0 for s in store.log()) == list(range(1, 9))
    assert any(0 < n < 8 for n in counts[:-1]), counts  # a kill did land mid-push


def test_a_server_trickling_its_answers_cannot_hold_a_pull(served: Served, tmp_path: Path) -> None:
    """64 bytes every 0.3 s never trips a 1 s read timeout: only the client's minimum rate ends
    the read, in bounded time, with a typed error; nothing of it is kept, and a pull
    straight from the server afterwards completes."""
    sd = {"w": torch.randn(64, 64)}  # 16 KiB: 77 s at that pace
    served.store.save("t", sd, step=1)

    def trickle_objects(method: str, path: str) -> Fault:
        return "trickle" if method == "GET" and "/v1/objects/" in path else "pass"

    local = WeightStore.open(tmp_path / "local")
    with FaultProxy(served.url, trickle_objects, delay=0.3) as proxy:
        slow = RemoteStore(
            proxy.endpoint_url, token=served.tokens["read"], timeout=1.0, min_rate=4096
        )
        start = time.monotonic()
        with pytest.raises(TransientStorageError, match="slower than 4096 bytes/s"):
            pull(local, slow, ["t"])
        assert time.monotonic() - start < 30
        assert proxy.counts["trickle"] >= 1
        slow.close()
    assert local.log() == []
    with RemoteStore(served.url, token=served.tokens["read"]) as direct:
        pull(local, direct, ["t"])
    assert same(local.restore("t@1"), sd)
    local.close()
