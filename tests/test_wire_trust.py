"""Nothing on the wire is trusted (issue 19), against a real uvicorn server on loopback (SQLite
and PostgreSQL), with a tampering proxy (``weightstore.testing.faultproxy``) where the point is
the wire: manifests re-derive their ids, names cannot become other paths, unauthenticated
bodies are not read, the loader sees in-place changes, and the client cache heals."""

from __future__ import annotations

import dataclasses
import json
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from served import Served, serve
from sqlalchemy import text
from test_store import same_dict

from weightstore.errors import InvalidInput, InvalidRef, ManifestMismatch, NotFound
from weightstore.loader import TaskLoader
from weightstore.remote import RemoteStore
from weightstore.store import WeightStore
from weightstore.sync import pull
from weightstore.testing.faultproxy import FaultProxy, no_faults


@pytest.fixture
def served(tmp_path: Path, index_url: str) -> Iterator[Served]:
    with serve(tmp_path / "server", index_url) as s:
        yield s


def weights(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(16, 16, generator=g), "b": torch.randn(16, 16, generator=g)}


def tampered(served: Served, rewrite: Callable[[str, str, bytes], bytes]) -> FaultProxy:
    return FaultProxy(served.url, no_faults, rewrite=rewrite)


def on_manifests(change: Callable[[dict[str, Any]], None]) -> Callable[[str, str, bytes], bytes]:
    """A rewrite that applies ``change`` to every manifest (a JSON body with tensors)."""

    def rewrite(method: str, path: str, body: bytes) -> bytes:
        if method != "GET" or not path.startswith("/v1/snapshots/"):
            return body
        manifest = json.loads(body)
        if "tensors" in manifest:
            change(manifest)
        return json.dumps(manifest).encode()

    return rewrite


def flip_step(manifest: dict[str, Any]) -> None:
    manifest["step"] = 8  # one bit: 0 -> 8


def swap_names(manifest: dict[str, Any]) -> None:
    first, second = manifest["tensors"][:2]
    first["name"], second["name"] = second["name"], first["name"]


# -- 1. manifests are verified ------------------------------------------------------------------


@pytest.mark.parametrize("change", [flip_step, swap_names], ids=["step", "names"])
def test_an_altered_manifest_is_refused_by_pull_and_nothing_is_kept(
    served: Served, tmp_path: Path, change: Callable[[dict[str, Any]], None]
) -> None:
    served.store.save("m", weights(0), step=0)
    token = served.tokens["read"]
    with (
        tampered(served, on_manifests(change)) as proxy,
        RemoteStore(proxy.endpoint_url, token=token, cache_dir=tmp_path / "c") as r,
        WeightStore.open(tmp_path / "local") as local,
    ):
        with pytest.raises(ManifestMismatch, match="does not hash to its id"):
            pull(local, r)
        assert local.log() == []
        with pytest.raises(ManifestMismatch):
            r.restore("m", into=weights(1))
    # An honest pull afterwards brings the snapshot as it is.
    with (
        RemoteStore(served.url, token=token, cache_dir=tmp_path / "c") as r,
        WeightStore.open(tmp_path / "local") as local,
    ):
        pull(local, r)
        assert local.show("m@0").id == served.store.show("m@0").id
        assert same_dict(local.restore("m@0"), weights(0))


def test_post_snapshots_refuses_a_manifest_that_does_not_hash_to_its_id(
    served: Served,
) -> None:
    snap = served.store.save("m", weights(0), step=0)
    with served.client("write") as c:
        manifest = c.get(f"/snapshots/{snap.id}").json()
        served.store.delete(snap.id)
        manifest["step"] = 8
        r = c.post("/snapshots", json=manifest)
        assert r.status_code == 400, r.text
        assert "ManifestMismatch" in r.json()["type"]
        assert served.store.log() == []
        manifest["step"] = 0
        assert c.post("/snapshots", json=manifest).status_code == 201


def test_verify_finds_a_manifest_changed_at_rest_and_survives_a_deleted_parent(
    served: Served,
) -> None:
    store = served.store
    first = store.save("m", weights(0), step=0)
    second = store.save("m", weights(1), step=1)
    store.delete(first.id)  # the child loses its parent; its id still derives
    assert store.verify().ok
    with store.index.engine.begin() as conn:
        conn.execute(text("UPDATE snapshots SET step = 8 WHERE id = :id"), {"id": second.id})
    result = store.verify()
    assert [p.digest for p in result.problems] == [second.id]
    assert "does not hash to its id" in result.problems[0].problem


# -- 2, 3. names cannot become other paths -----------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda r: r.untag("x", "../../../snapshots/victim@3"),
        lambda r: r.tag("victim@3", "../../x"),
        lambda r: r.show("../victim@3"),
        lambda r: r.untag("x/../victim", "best"),
        lambda r: r.diff("victim@3", "victim?@3"),
    ],
    ids=["untag-tag", "tag-name", "show", "untag-task", "diff"],
)
def test_names_are_checked_before_any_request(
    served: Served, tmp_path: Path, call: Callable[[RemoteStore], object]
) -> None:
    victim = served.store.save("victim", weights(0), step=3, tags=["keep"])
    requests: list[str] = []
    with RemoteStore(served.url, token=served.tokens["admin"], cache_dir=tmp_path / "c") as r:
        hooks = r._http.event_hooks  # noqa: SLF001 (to see what the client sends)
        hooks["request"].append(lambda q: requests.append(q.url.path))
        with pytest.raises(InvalidRef):
            call(r)
    assert requests == []
    assert served.store.show("victim@3").id == victim.id
    assert served.store.show("victim:keep").id == victim.id


@pytest.mark.parametrize(
    "name", ["x/tags/a", "x/diff/x", "x/safetensors", "org/snapshots", "a/resolve/main"]
)
def test_names_with_a_route_word_as_a_segment_are_refused(
    served: Served, tmp_path: Path, name: str
) -> None:
    with pytest.raises(InvalidRef, match="reserved"):
        served.store.save(name, weights(0))
    with RemoteStore(served.url, token=served.tokens["write"], cache_dir=tmp_path / "c") as r:
        with pytest.raises(InvalidRef, match="reserved"):
            r.save(name, weights(0))
        with pytest.raises(InvalidRef, match="reserved"):
            r.show(name)
    with served.client("write") as c:
        for path in (f"/snapshots/{name}", f"/tasks/{name}/snapshots"):
            answer = c.get(path)
            assert answer.status_code in (400, 404), (path, answer.text)
            assert answer.headers["content-type"].startswith("application/problem+json")
    assert served.store.tasks() == []


def test_a_tag_route_cannot_reach_another_tasks_snapshot(served: Served) -> None:
    """PUT /snapshots/x/tags/a/tags/b reads as ref ``x/tags/a`` (refused), never as tag
    ``a/tags/b`` of ``x`` nor as a tag of another task."""
    snap = served.store.save("x", weights(0), step=1)
    with served.client("write") as c:
        answer = c.put("/snapshots/x/tags/a/tags/b")
        assert answer.status_code == 400, answer.text
        answer = c.delete("/tasks/x/tags/a/tags/b")
        assert answer.status_code == 400, answer.text
    assert served.store.show("x").tags == ()
    assert served.store.show("x").id == snap.id


# -- 4. one validation for every way a snapshot enters ------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m["tensors"][0].update(shape=[-16, -16]),
        lambda m: m["tensors"][0].update(name=""),
        lambda m: m["tensors"][0].update(name="a\0b"),
        lambda m: m["tensors"][0].update(name="n" * 100_000),
        lambda m: m["tensors"][0].update(dtype="float33"),
        lambda m: m["tensors"][0].update(shape=[16, 16.5]),
        lambda m: m.update(metadata={"x": "a\0"}),
    ],
    ids=["negative-dims", "empty-name", "nul-name", "long-name", "dtype", "float-dim", "meta"],
)
def test_post_snapshots_applies_the_save_rules(
    served: Served, change: Callable[[dict[str, Any]], None]
) -> None:
    snap = served.store.save("m", weights(0), step=0)
    with served.client("write") as c:
        manifest = c.get(f"/snapshots/{snap.id}").json()
        served.store.delete(snap.id)
        change(manifest)
        answer = c.post("/snapshots", json=manifest)
        assert answer.status_code in (400, 422), answer.text
    assert served.store.log() == []


def test_a_pulled_manifest_with_impossible_shapes_is_refused(
    served: Served, tmp_path: Path
) -> None:
    served.store.save("m", weights(0), step=0)

    def negative(manifest: dict[str, Any]) -> None:
        manifest["tensors"][0]["shape"] = [-16, -16]

    with (
        tampered(served, on_manifests(negative)) as proxy,
        RemoteStore(proxy.endpoint_url, token=served.tokens["read"], cache_dir=tmp_path) as r,
        WeightStore.open(tmp_path / "local") as local,
    ):
        with pytest.raises((InvalidInput, ManifestMismatch)):
            pull(local, r)
        assert local.log() == []


# -- 5. unauthenticated bodies are not read -----------------------------------------------------


def _raw_post(url: str, path: str, body: bytes, token: str | None) -> tuple[int, float]:
    """POST ``body`` over a raw socket; the status and the share of the body sent before the
    server answered."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            + (f"Authorization: Bearer {token}\r\n" if token else "")
            + "\r\n"
        )
        s.sendall(head.encode())
        sent = 0
        s.settimeout(0.05)
        answer = b""
        while sent < len(body):
            try:
                answer += s.recv(4096)
                if answer:
                    break
            except TimeoutError:
                pass
            try:
                s.sendall(body[sent : sent + (1 << 20)])
            except OSError:
                break
            sent += 1 << 20
        s.settimeout(30)
        while b"\r\n" not in answer:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
    status = int(answer.split(b" ")[1]) if answer else 0
    return status, min(sent, len(body)) / len(body)


@pytest.mark.parametrize("path", ["/v1/snapshots", "/v1/objects/missing"])
def test_bodies_are_not_read_without_a_valid_token(served: Served, path: str) -> None:
    """What the app read of the body is counted on the server side (the share the client
    got to send before the 401 depends on scheduling, and is only shown)."""
    body = b'{"digests": [' + b'"' + b"a" * 64 + b'",' * 400_000 + b'"x"]}'  # ~27 MB
    for token in (None, "not-a-token"):
        status, share = _raw_post(served.url, path, body, token)
        assert status == 401
        read = served.received.get(path, 0)
        assert read < 64 << 10, f"{read} bytes of the body read before the 401 ({share:.0%} sent)"
    _raw_post(served.url, path, body, served.tokens["write"])  # the count sees a body read
    assert served.received.get(path, 0) > 64 << 10


def test_json_bodies_are_bounded(tmp_path: Path, index_url: str) -> None:
    with serve(tmp_path / "s", index_url) as served:
        app: Any = served.server.config.app
        app.state.settings = dataclasses.replace(app.state.settings, max_json_bytes=1000)
        with served.client("read") as c:
            small = c.post("/objects/missing", json={"digests": ["a" * 64]})
            assert small.status_code == 200, small.text
            big = c.post("/objects/missing", json={"digests": ["a" * 64] * 100})
            assert big.status_code == 413, big.text


# -- 6. the loader sees a model changed behind its back -----------------------------------------


@pytest.mark.parametrize("how", ["optimizer", "load_state_dict", "in-place"])
def test_activate_rewrites_what_changed_in_place_outside_the_loader(
    tmp_path: Path, how: str
) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 4))
    with WeightStore.open(tmp_path / "s") as store:
        store.save("base", model)
        saved = {k: v.clone() for k, v in model.state_dict().items()}
        loader = TaskLoader(store, model)
        loader.activate("base")
        if how == "optimizer":
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            torch.autograd.backward(model(torch.randn(2, 8)).sum())
            opt.step()
        elif how == "load_state_dict":
            model.load_state_dict({k: torch.randn_like(v) for k, v in saved.items()})
        else:
            first = model[0]
            assert isinstance(first, torch.nn.Linear)
            with torch.no_grad():
                first.bias.add_(1)
        assert not same_dict(dict(model.state_dict()), saved)
        report = loader.activate("base")
        assert report.tensors_changed > 0
        assert same_dict(dict(model.state_dict()), saved)
        assert loader.activate("base").tensors_changed == 0
        loader.close()


# -- 7, 8. the client cache heals and never mixes servers -----------------------------------------


@pytest.mark.parametrize("damage", ["empty", "truncated", "header-byte", "payload-byte"])
def test_a_damaged_cache_entry_is_fetched_again(
    served: Served, tmp_path: Path, damage: str
) -> None:
    sd = weights(0)
    served.store.save("m", sd)
    with RemoteStore(served.url, token=served.tokens["read"], cache_dir=tmp_path / "c") as r:
        assert same_dict(r.restore("m"), sd)
        for path in (tmp_path / "c" / "objects").glob("*/??/*"):
            data = bytearray(path.read_bytes())
            if damage == "empty":
                data = bytearray()
            elif damage == "truncated":
                data = data[: len(data) // 3]
            elif damage == "header-byte":
                data[5] ^= 0x01
            else:
                data[-3] ^= 0x10
            path.write_bytes(bytes(data))
        assert same_dict(r.restore("m"), sd)
        assert same_dict(r.restore("m"), sd)


def test_one_cache_for_two_servers_does_not_mix_their_encodings(
    tmp_path: Path, index_url: str
) -> None:
    base, tuned = weights(0), {k: v + 1e-3 for k, v in weights(0).items()}
    cache = tmp_path / "cache"
    other_index = f"sqlite:///{tmp_path / 'b-index.db'}"  # two stores, not one index twice
    with serve(tmp_path / "a", index_url) as a, serve(tmp_path / "b", other_index) as b:
        a.store.save("m", base, step=0)
        a.store.save("m", tuned, step=1)  # deltas against step 0 on server A
        b.store.save("m", tuned, step=1)  # stored plainly on server B
        with RemoteStore(a.url, token=a.tokens["read"], cache_dir=cache) as r:
            assert same_dict(r.restore("m@1"), tuned)
        # A's bases leave the cache (evicted); A's deltas stay.
        bases = {t.digest for t in a.store.show("m@0").tensors}
        for path in (cache / "objects").glob("*/??/*"):
            if path.name in bases:
                path.unlink()
        with RemoteStore(b.url, token=b.tokens["read"], cache_dir=cache) as r:
            assert same_dict(r.restore("m@1"), tuned)
        folders = {p.name for p in (cache / "objects").iterdir()}
        assert len(folders) == 2 and all(re.fullmatch("[0-9a-f]{16}", f) for f in folders)


def test_unknown_refs_still_give_not_found(served: Served, tmp_path: Path) -> None:
    with (
        RemoteStore(served.url, token=served.tokens["read"], cache_dir=tmp_path) as r,
        pytest.raises(NotFound),
    ):
        r.show("nothing-here@3")
