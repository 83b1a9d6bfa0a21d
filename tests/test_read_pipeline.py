"""The one read pipeline and the bugs its copies caused: one fan-out rule, one target check for
restore and the loader (overlapping memory refused before any write), the loader over a
RemoteStore, keyset pages, batched existence checks, and the upload folder of an s3 store.

Every store is real (SQLite or PostgreSQL, objects on disk) and every server a real uvicorn on
127.0.0.1."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from served import Served, serve
from test_statement_counts import app_store, counted

from weightstore import TaskLoader, WeightStore
from weightstore.errors import IncompatibleTensor, InvalidInput
from weightstore.ports import fan_out
from weightstore.remote import RemoteStore
from weightstore.server import ServerSettings
from weightstore.settings import StoreSettings


@pytest.fixture
def store(tmp_path: Path, index_url: str) -> Iterator[WeightStore]:
    with WeightStore.open(
        tmp_path / "s", index_url=index_url, settings=StoreSettings(threads=2)
    ) as s:
        yield s


@pytest.fixture
def served(tmp_path: Path, index_url: str) -> Iterator[Served]:
    with serve(tmp_path / "server", index_url) as s:
        yield s


def variants() -> dict[str, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(3)
    base = {
        "w": torch.randn(64, 32, generator=g),
        "b": torch.randn(32, generator=g),
        "n": torch.arange(12, dtype=torch.int64),
    }
    tuned = {k: v + 1e-3 if v.is_floating_point() else v.clone() for k, v in base.items()}
    head = {**{k: v.clone() for k, v in base.items()}, "b": torch.randn(32, generator=g)}
    return {"base": base, "tuned": tuned, "head": head}


def holds(target: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> bool:
    return all(
        torch.equal(target[k].view(torch.uint8), expected[k].contiguous().view(torch.uint8))
        for k in expected
    )


# ----------------------------------------------------------------------------- fan-out


def test_fan_out_raises_only_after_every_started_item_finished() -> None:
    running: set[int] = set()
    finished: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        with lock:
            running.add(i)
        if i == 0:
            raise ValueError("item 0")
        time.sleep(0.2)
        with lock:
            running.discard(i)
            finished.append(i)

    with ThreadPoolExecutor(4) as pool, pytest.raises(ValueError, match="item 0"):
        fan_out(pool, work, range(100), limit=4)
    assert running == {0}  # nothing still runs when the caller sees the error
    assert len(finished) < 20  # and no new item started after the error was seen


def test_fan_out_keeps_at_most_limit_in_flight() -> None:
    in_flight = peak = 0
    lock = threading.Lock()

    def work(_: int) -> None:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.01)
        with lock:
            in_flight -= 1

    with ThreadPoolExecutor(8) as pool:
        fan_out(pool, work, range(40), limit=3)
    assert peak <= 3


# ----------------------------------------------------------------------------- one target check


def test_the_loader_refuses_an_expanded_target_before_writing(store: WeightStore) -> None:
    store.save("m", {"w": torch.randn(4, 8)})
    cell = torch.zeros(8)
    target = {"w": cell.expand(4, 8)}
    with TaskLoader(store, target) as loader:
        with pytest.raises(IncompatibleTensor, match="overlap"):
            loader.activate("m")
        assert loader.stats().failed_swaps == 0  # refused, not a failed swap
    assert not cell.any()
    with pytest.raises(IncompatibleTensor, match="overlap"):
        store.restore("m", into=target)


@pytest.mark.parametrize("kind", ["two views", "two dtypes"])
def test_targets_that_share_memory_are_refused_on_every_path(
    store: WeightStore, served: Served, tmp_path: Path, kind: str
) -> None:
    buf = torch.zeros(64)
    if kind == "two views":
        saved = {"a": torch.randn(5, 8), "b": torch.randn(4, 8)}
        target = {"a": buf[:40].view(5, 8), "b": buf[32:].view(4, 8)}
    else:
        saved = {"a": torch.randn(8, 8), "b": torch.arange(64, dtype=torch.int32).view(8, 8)}
        target = {"a": buf.view(8, 8), "b": buf.view(torch.int32).view(8, 8)}
    store.save("m", saved)
    served.store.save("m", saved)
    with RemoteStore(served.url, token=served.tokens["read"], cache_dir=tmp_path / "c") as r:
        for restore in (store.restore, r.restore):
            with pytest.raises(IncompatibleTensor, match="shares memory") as info:
                restore("m", into=target)
            assert "nothing was written" in str(info.value)
    with TaskLoader(store, target) as loader, pytest.raises(IncompatibleTensor, match="shares"):
        loader.activate("m")
    assert not buf.any()


def test_tied_weights_stay_one_slot(store: WeightStore) -> None:
    w = torch.randn(6, 4)
    store.save("m", {"embed": w, "out": w})
    shared = torch.zeros(6, 4)
    target = {"embed": shared, "out": shared}
    store.restore("m", into=target)
    with TaskLoader(store, target) as loader:
        assert loader.activate("m").tensors_total == 2
    assert torch.equal(shared, w)


# ----------------------------------------------------------------------------- the loader, remote


def test_the_loader_swaps_from_a_remote_store(served: Served, tmp_path: Path) -> None:
    tasks = variants()
    for name, sd in tasks.items():
        served.store.save(name, sd)
    target = {k: torch.zeros_like(v) for k, v in tasks["base"].items()}
    with (
        RemoteStore(served.url, token=served.tokens["read"], cache_dir=tmp_path / "c") as r,
        TaskLoader(r, target, host_cache="1MiB") as loader,
    ):
        first = loader.activate("base")
        assert holds(target, tasks["base"]) and first.bytes_store > 0
        report = loader.activate("head")  # only the head differs
        assert holds(target, tasks["head"]) and report.tensors_moved == 1
        back = loader.activate("base")  # from the host cache, not the wire
        assert holds(target, tasks["base"]) and back.bytes_store == 0
        fetched = r.bytes_received
        loader.activate("tuned")  # deltas decoded over bases the cache holds
        assert holds(target, tasks["tuned"])
        assert r.bytes_received > fetched
    with (
        RemoteStore(served.url, token=served.tokens["read"], cache_dir=tmp_path / "d") as r,
        TaskLoader(r, target, host_cache=0, staging=0) as loader,
    ):
        loader.activate("tuned")  # past the staging budget: straight into the target
        assert holds(target, tasks["tuned"])


def test_device_applies_from_a_remote_store_fetch_a_damaged_cached_delta_again(
    served: Served, tmp_path: Path
) -> None:
    g = torch.Generator().manual_seed(4)
    first = {"w": torch.randn(128, 128, generator=g)}
    second = {"w": first["w"] + 1e-4}
    served.store.save("ft", first, step=1)
    delta = served.store.save("ft", second, step=2).tensors[0].digest
    target = {"w": torch.zeros(128, 128)}
    cache = tmp_path / "c"
    with (
        RemoteStore(served.url, token=served.tokens["read"], cache_dir=cache) as r,
        TaskLoader(r, target, host_cache=0, apply_deltas="device") as loader,
    ):
        assert r.reader.chains([delta])[delta][0].base is not None  # stored as a delta
        loader.activate("ft@2")  # fetches the delta into the cache
        loader.activate("ft@1")
        (cached,) = [p for p in (cache / "objects").glob(f"*/??/{delta}")]
        cached.write_bytes(cached.read_bytes()[:-1] + b"\0")
        report = loader.activate("ft@2")  # applied in place, from a fresh copy
        assert holds(target, second) and report.bytes_delta_in_place == first["w"].nbytes


# ----------------------------------------------------------------------------- service routes


def test_snapshot_listings_page_by_keyset(served: Served, tmp_path: Path) -> None:
    for step in range(25):
        served.store.save("m", {"w": torch.full((4,), float(step))}, step=step)
    expected = [s.id for s in served.store.log("m")]
    with served.client() as http:
        seen: list[str] = []
        params: dict[str, str | int] = {"limit": 4}
        statements = []
        while True:
            with counted(app_store(served).index.engine) as stmts:
                page = http.get("/tasks/m/snapshots", params=params).json()
            statements.append(len(stmts))
            assert page["total"] == 25
            seen += [s["id"] for s in page["items"]]
            if page["next_cursor"] is None:
                break
            params = {"limit": 4, "cursor": page["next_cursor"]}
        assert seen == expected
        assert len(set(statements)) == 1  # the deepest page costs what the first does
        bad = http.get("/tasks/m/snapshots", params={"cursor": "bm90IGEgY3Vyc29y"})
        assert bad.status_code == 400 and "cursor" in bad.json()["detail"]
        page = http.get("/tasks/m/snapshots", params={"offset": 23, "limit": 4}).json()
        assert [s["id"] for s in page["items"]] == expected[23:] and page["next_offset"] is None
    with RemoteStore(served.url, token=served.tokens["read"], cache_dir=tmp_path / "c") as r:
        assert [s.id for s in r.log("m")] == expected


def test_missing_objects_are_asked_in_one_batch(served: Served) -> None:
    """One ``exists_many`` (a listing on S3), never ``exists`` once per digest."""
    snap = served.store.save("m", {f"t{i}": torch.full((4,), float(i)) for i in range(30)})
    backend = app_store(served).objects
    batches: list[int] = []
    inside = threading.local()
    exists, exists_many = backend.exists, backend.exists_many

    def one(key: str) -> bool:
        assert getattr(inside, "batch", False), "exists() called once per digest"
        return exists(key)

    def many(keys: object) -> set[str]:
        inside.batch = True
        try:
            found = exists_many(list(keys))  # type: ignore[call-overload]
            batches.append(len(found))
            return found
        finally:
            inside.batch = False

    backend.exists, backend.exists_many = one, many  # type: ignore[method-assign]
    digests = [t.digest for t in snap.tensors] + ["0" * 64]
    with served.client() as http:
        body = http.post("/objects/missing", json={"digests": digests})
    assert body.status_code == 200, body.text
    assert body.json()["missing"] == ["0" * 64]
    assert batches == [30]


def test_an_s3_store_spools_uploads_outside_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    folder = ServerSettings("s3://bucket/prefix").uploads_folder()
    assert folder.is_absolute() and "s3:" not in folder.parts
    assert ServerSettings(str(tmp_path / "s")).uploads_folder() == tmp_path / "s" / ".uploads"
    assert ServerSettings("s3://b/p", upload_dir="/spool").uploads_folder() == Path("/spool")
    with pytest.raises(InvalidInput):
        ServerSettings.from_json('{"store": "x", "upload_dir": 5, "nope": 1}')
