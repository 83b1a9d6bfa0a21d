"""The HTTP client store and push / pull, against a real uvicorn server on 127.0.0.1 (SQLite
and PostgreSQL): the read API decodes locally and bit-exactly, through its cache; push and pull
move only missing objects and round-trip every dtype."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from safetensors.torch import save_file
from served import Served, serve, serve_process
from test_store import every_dtype, same, same_dict
from typer.testing import CliRunner

from weightstore.cli.main import app
from weightstore.errors import CorruptObject, Forbidden, RefNotFound, Unauthorized
from weightstore.index.tokens import Tokens
from weightstore.remote import RemoteStore, open_store
from weightstore.store import WeightStore
from weightstore.sync import pull, push


@pytest.fixture
def served(tmp_path: Path, index_url: str) -> Iterator[Served]:
    with serve(tmp_path / "server", index_url) as s:
        yield s


def remote(
    s: Served, tmp_path: Path, scope: str = "write", cache_bytes: int = 8 << 30
) -> RemoteStore:
    cache = tmp_path / "cache"
    return RemoteStore(s.url, token=s.tokens[scope], cache_dir=cache, cache_bytes=cache_bytes)


def finetune(sd: dict[str, torch.Tensor], scale: float = 1e-3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        k: (v.float() + scale * torch.randn(v.shape, generator=g)).to(v.dtype)
        if v.is_floating_point() and v.element_size() > 1
        else v.clone()
        for k, v in sd.items()
    }


def test_read_api_decodes_locally_through_the_cache(served: Served, tmp_path: Path) -> None:
    base = {"w": torch.randn(256, 64), "b": torch.randn(64), "n": torch.arange(10)}
    served.store.save("m", base, step=1)
    tuned = finetune(base)
    served.store.save("m", tuned, step=2, tags=["best"])  # stored as deltas on step 1
    with remote(served, tmp_path, "read") as r:
        assert r.tasks() == ["m"]
        assert [s.step for s in r.log("m")] == [2, 1]
        assert r.show("m:best").tensors == served.store.show("m@2").tensors
        d = r.diff("m@1", "m@2")
        assert {c.name for c in d.changed} == {"w", "b"} and d.unchanged == ("n",)
        assert same_dict(r.restore("m:best"), tuned)
        fetched = r.bytes_received
        assert fetched > 0
        target = {k: torch.zeros_like(v) for k, v in base.items()}
        assert same_dict(r.restore("m@2", into=target), tuned)
        assert same_dict(target, tuned)
        assert r.bytes_received == fetched  # all from the cache
        assert r.cache.hits > 0
        r.export("m@2", tmp_path / "remote.safetensors")
        served.store.export("m@2", tmp_path / "local.safetensors")
        assert (tmp_path / "remote.safetensors").read_bytes() == (
            tmp_path / "local.safetensors"
        ).read_bytes()
        with pytest.raises(RefNotFound):
            r.show("m@99")
    with remote(served, tmp_path) as w:
        saved = w.save("up", tuned, step=5, tags=["x"])
        assert saved.step == 5 and saved.tags == ("x",)
        got = w.restore("up:x")
        assert sorted(got) == sorted(tuned) and all(same(got[k], tuned[k]) for k in tuned)
    with remote(served, tmp_path, "read") as r, pytest.raises(Forbidden):
        r.delete("m@1")
    with RemoteStore(served.url, cache_dir=tmp_path / "c2") as anon, pytest.raises(Unauthorized):
        anon.tasks()


def test_cache_budget_and_a_damaged_cache_file(served: Served, tmp_path: Path) -> None:
    sd = {f"t{i}": torch.randn(64, 64) for i in range(6)}  # ~16 KiB each
    served.store.save("m", sd)
    with remote(served, tmp_path, "read", cache_bytes=40_000) as r:
        assert same_dict(r.restore("m"), sd)
        cached = [p for p in (tmp_path / "cache" / "objects").glob("*/??/*")]
        assert 0 < sum(p.stat().st_size for p in cached) <= 40_000
        victim = cached[0]
        victim.write_bytes(victim.read_bytes()[:-1] + b"\0")
        assert same_dict(r.restore("m"), sd)  # dropped and fetched again


def test_a_corrupt_object_on_the_server_is_an_error_on_the_client(
    served: Served, tmp_path: Path
) -> None:
    snap = served.store.save("m", {"w": torch.randn(100, 100)})
    path = served.root / "objects" / snap.tensors[0].digest[:2] / snap.tensors[0].digest
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x04
    path.write_bytes(bytes(data))
    with remote(served, tmp_path, "read") as r, pytest.raises(CorruptObject):
        r.restore("m")


def test_push_then_pull_round_trips_every_dtype_and_sends_only_what_is_missing(
    served: Served, tmp_path: Path
) -> None:
    sd = every_dtype()
    with WeightStore.open(tmp_path / "a") as a, remote(served, tmp_path) as r:
        a.save("org/m", sd, step=1, tags=["base"], metadata={"lr": 0.1}, message="first")
        first = push(a, r)
        assert first.snapshots == 1 and first.objects == len(
            {t.digest for t in a.show("org/m").tensors}
        )
        assert r.bytes_sent == first.object_bytes
        assert served.store.show("org/m:base").id == a.show("org/m").id
        again = push(a, r)
        assert (again.snapshots, again.objects, again.object_bytes) == (0, 0, 0)

        a.save("org/m", finetune(sd), step=2, tags=["best"])
        sent_before = r.bytes_sent
        delta = push(a, r, ["org/m"])
        assert delta.snapshots == 1
        tuned_bytes = r.bytes_sent - sent_before
        full = sum(t.nbytes for t in a.show("org/m@2").tensors)
        assert 0 < tuned_bytes < full  # deltas travel, not the model

        with WeightStore.open(tmp_path / "c") as c:
            got = pull(c, r, ["org/m"])
            assert got.snapshots == 2
            for ref in ("org/m@1", "org/m:best"):
                assert same_dict(c.restore(ref), a.restore(ref))
                assert c.show(ref) == a.show(ref)
            assert c.verify().ok
            assert pull(c, r).snapshots == 0


def test_local_to_local_push_and_an_interrupted_push_resumes(
    served: Served, tmp_path: Path
) -> None:
    sd = {f"t{i}": torch.randn(50, 50) for i in range(5)}
    with WeightStore.open(tmp_path / "a") as a, remote(served, tmp_path) as r:
        a.save("m", sd, step=1)
        digests = [t.digest for t in a.show("m").tensors]
        # An interrupted push: some objects arrived, no manifest.
        for d in digests[:2]:
            r.put_object(d, a.objects.get(d))
        assert r.log() == []
        sent_before = r.bytes_sent
        report = push(a, r)
        assert report.objects == 3 and r.bytes_sent > sent_before
        with WeightStore.open(tmp_path / "b") as b:
            push(a, b)
            assert same_dict(b.restore("m@1"), sd)


def test_cli_tokens_push_pull_and_serve_with_two_workers(tmp_path: Path) -> None:
    runner = CliRunner()
    server_root, local = tmp_path / "server", tmp_path / "local"
    assert runner.invoke(app, ["--store", str(server_root), "init"]).exit_code == 0
    made = runner.invoke(app, ["--store", str(server_root), "token", "create", "--scope", "write"])
    assert made.exit_code == 0, made.output
    token = next(w for w in made.output.split() if w.startswith("wst_"))
    listed = runner.invoke(app, ["--store", str(server_root), "token", "list"]).output
    assert "write" in listed and token not in listed
    with WeightStore.open(local) as s:
        s.save("m", {"w": torch.randn(10, 10)}, step=1)
    with serve_process(server_root, "--workers", "2") as (url, _):
        pushed = runner.invoke(app, ["--store", str(local), "push", url, "m", "--token", token])
        assert pushed.exit_code == 0, pushed.output
        copy = ["--store", str(tmp_path / "copy")]
        pulled = runner.invoke(app, [*copy, "pull", url, "--token", token])
        assert pulled.exit_code == 0, pulled.output
        cloned = runner.invoke(app, ["clone", url, str(tmp_path / "clone"), "--token", token])
        assert cloned.exit_code == 0, cloned.output
        assert runner.invoke(app, ["clone", url, str(local), "--token", token]).exit_code == 2
        revoke = ["--store", str(server_root), "token", "revoke", token]
        assert runner.invoke(app, revoke).exit_code == 0
        refused = runner.invoke(app, ["--store", str(local), "push", url, "--token", token])
        assert refused.exit_code == 8  # Unauthorized
    with WeightStore.open(local) as a:
        for name in ("copy", "clone"):
            with open_store(tmp_path / name) as c:
                assert isinstance(c, WeightStore)
                assert same(c.restore("m@1")["w"], a.restore("m@1")["w"])


def test_a_server_killed_mid_upload_leaves_the_store_consistent(tmp_path: Path) -> None:
    root = tmp_path / "server"
    with WeightStore.open(root) as s:
        s.save("kept", {"w": torch.randn(10)})
        token = Tokens(s.index.engine).create("write")[1]
    f = tmp_path / "big.safetensors"
    save_file({"w": torch.randn(1 << 20)}, str(f))
    data = f.read_bytes()
    with serve_process(root) as (url, proc):

        def body() -> Iterator[bytes]:
            yield data[: len(data) // 2]
            proc.kill()  # mid-body
            proc.wait(30)
            yield data[len(data) // 2 :]

        with pytest.raises(httpx.TransportError):
            httpx.put(
                f"{url}/v1/tasks/up/snapshots",
                content=body(),
                headers={"Authorization": f"Bearer {token}"},
            )
    with WeightStore.open(root, create=False) as s:
        assert [x.task for x in s.log()] == ["kept"]
        assert s.verify().ok
        assert s.index.all_objects() and len(s.index.all_objects()) == 1


def test_readers_keep_working_while_writers_push_and_gc_runs_without_collecting(
    served: Served, tmp_path: Path
) -> None:
    """gc runs throughout with a 60 s grace, so it collects nothing here: with grace 0 it would
    remove objects a push has sent but whose manifest has not landed yet (the grace is what
    protects an in-flight push)."""
    first = {f"t{i}": torch.randn(64, 64) for i in range(4)}
    served.store.save("m", first, step=0)
    expected = httpx.get(
        f"{served.url}/v1/snapshots/m@0/safetensors",
        headers={"Authorization": f"Bearer {served.tokens['read']}"},
    ).content
    stop = threading.Event()
    errors: list[BaseException] = []
    reads = [0, 0]
    removed: list[int] = []

    def read(n: int) -> None:
        with served.client() as c:
            while not stop.is_set():
                try:
                    assert c.get("/snapshots/m@0/safetensors").content == expected
                    reads[n] += 1
                except BaseException as e:
                    errors.append(e)
                    return

    def collect() -> None:
        while not stop.is_set():
            try:
                removed.append(served.store.gc(grace_seconds=60).objects_removed)
            except BaseException as e:
                errors.append(e)
                return

    threads = [threading.Thread(target=read, args=(n,)) for n in range(2)]
    threads.append(threading.Thread(target=collect))
    for t in threads:
        t.start()
    try:
        with WeightStore.open(tmp_path / "trainer") as local, remote(served, tmp_path) as r:
            pull(local, r)
            for step in range(1, 4):
                local.save("m", finetune(first, 1e-3 * step), step=step)
                push(local, r)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert errors == []
    assert min(reads) > 0, f"a reader completed no GET: {reads}"
    assert removed and not any(removed), f"gc rounds removed objects: {removed}"
    assert [s.step for s in served.store.log("m")] == [3, 2, 1, 0]
    assert served.store.verify().ok


def test_restore_into_fetches_everything_before_writing(served: Served, tmp_path: Path) -> None:
    snap = served.store.save("m", {"a": torch.randn(10), "b": torch.randn(10)})
    (served.root / "objects" / snap.tensors[1].digest[:2] / snap.tensors[1].digest).unlink()
    target = {"a": torch.zeros(10), "b": torch.zeros(10)}
    with remote(served, tmp_path, "read") as r, pytest.raises(LookupError):
        r.restore("m", into=target)
    assert not target["a"].any() and not target["b"].any()
