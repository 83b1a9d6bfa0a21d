"""The REST service against a real uvicorn server on 127.0.0.1, on SQLite and PostgreSQL:
downloads equal export bit for bit, ranges, auth, and bad requests refused with nothing
written."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save as save_bytes
from safetensors.torch import save_file
from served import MAX_UPLOAD, Served, serve
from test_dtypes import bits, safetensors_dtypes, sample
from test_store import every_dtype, same

from weightstore.codec import Codec
from weightstore.codec import digest as digest_of
from weightstore.dtypes import dtype_info
from weightstore.errors import IncompatibleTensor
from weightstore.forms import snapshot_json, tasks_json
from weightstore.index.tokens import Tokens
from weightstore.manifests import snapshot_id
from weightstore.remote import RemoteStore
from weightstore.tensors import tensor_bytes
from weightstore.types import TensorEntry


@pytest.fixture
def served(tmp_path: Path, index_url: str) -> Iterator[Served]:
    with serve(tmp_path / "store", index_url) as s:
        yield s


def footprint(s: Served) -> tuple[list[str], int, set[str]]:
    """What a refused request must leave unchanged: snapshots, object rows, blob files."""
    snaps = sorted(x.id for x in s.store.log())
    blobs = {p.name for p in (s.root / "objects").glob("??/*")}
    return snaps, len(s.store.index.all_objects()), blobs


def object_path(s: Served, digest: str) -> Path:
    return s.root / "objects" / digest[:2] / digest


def test_download_equals_export_with_etag_and_ranges(served: Served, tmp_path: Path) -> None:
    sd = every_dtype()
    snap = served.store.save("org/model", sd, step=3, tags=["best"])
    exported = tmp_path / "export.safetensors"
    served.store.export("org/model@3", exported)
    with served.client() as c:
        r = c.get("/snapshots/org/model:best/safetensors")
        assert r.status_code == 200
        assert r.content == exported.read_bytes()
        assert r.headers["content-length"] == str(exported.stat().st_size)
        assert r.headers["etag"] == f'"{snap.id}"'
        down = tmp_path / "down.safetensors"
        down.write_bytes(r.content)
        with safe_open(str(down), framework="pt") as f:
            assert sorted(f.keys()) == sorted(sd)
            assert all(same(f.get_tensor(k), sd[k]) for k in sd)

        assert (
            c.get(
                "/snapshots/org/model/safetensors", headers={"If-None-Match": r.headers["etag"]}
            ).status_code
            == 304
        )

        # A lazy reader: the header length, the header, then one tensor's bytes.
        (n,) = struct.unpack(
            "<Q",
            c.get(
                url := "/snapshots/org/model@3/safetensors", headers={"Range": "bytes=0-7"}
            ).content,
        )
        head = c.get(url, headers={"Range": f"bytes=8-{7 + n}"})
        assert head.status_code == 206
        assert head.headers["content-range"] == f"bytes 8-{7 + n}/{len(r.content)}"
        lo, hi = json.loads(head.content)["f64"]["data_offsets"]
        part = c.get(url, headers={"Range": f"bytes={8 + n + lo}-{8 + n + hi - 1}"})
        assert part.status_code == 206
        restored = served.store.restore("org/model@3")["f64"]
        assert part.content == restored.numpy().tobytes()
        assert c.get(url, headers={"Range": "bytes=-5"}).content == r.content[-5:]

        bad = c.get(url, headers={"Range": f"bytes={len(r.content)}-"})
        assert bad.status_code == 416
        assert bad.headers["content-range"] == f"bytes */{len(r.content)}"

        one = c.get("/snapshots/org/model@3/tensors/f32.specials")
        assert one.status_code == 200
        assert one.headers["x-weightstore-dtype"] == "float32"
        got = torch.frombuffer(bytearray(one.content), dtype=torch.float32)
        assert same(got, sd["f32.specials"])


def test_download_equals_export_for_every_safetensors_dtype(served: Served, tmp_path: Path) -> None:
    """The header the service builds is export's own, packed dtypes' shapes included
    (float4_e2m1fn_x2: safetensors counts 4-bit values, twice torch's last dimension)."""
    sd = {str(d).removeprefix("torch."): sample(d) for d in safetensors_dtypes()}
    snap = served.store.save("org/dtypes", sd)
    exported = tmp_path / "export.safetensors"
    served.store.export(snap.id, exported)
    with served.client() as c:
        r = c.get(f"/snapshots/{snap.id}/safetensors")
    assert r.status_code == 200
    assert r.content == exported.read_bytes()
    (n,) = struct.unpack("<Q", r.content[:8])
    header = json.loads(r.content[8 : 8 + n])
    for name, t in sd.items():
        info = dtype_info(t.dtype)
        assert header[name]["dtype"] == info.safetensors
        assert header[name]["shape"] == info.safetensors_shape(tuple(t.shape))
    if hasattr(torch, "float4_e2m1fn_x2"):
        f4 = sd["float4_e2m1fn_x2"]
        assert header["float4_e2m1fn_x2"]["shape"] == [f4.shape[0], f4.shape[1] * 2]
    down = tmp_path / "down.safetensors"
    down.write_bytes(r.content)
    with safe_open(str(down), framework="pt") as f:
        assert sorted(f.keys()) == sorted(sd)
        for name, t in sd.items():
            got = f.get_tensor(name)
            assert got.dtype == t.dtype and got.shape == t.shape
            assert torch.equal(bits(got), bits(t))


def test_read_endpoints(served: Served) -> None:
    served.store.save("a", {"w": torch.zeros(3)}, step=1)
    served.store.save("a", {"w": torch.ones(3), "v": torch.zeros(2)}, step=2, tags=["best"])
    served.store.save("b", {"x": torch.zeros(1)})
    with served.client() as c:
        tasks = c.get("/tasks").json()
        assert [(t["task"], t["snapshots"]) for t in tasks] == [("a", 2), ("b", 1)]
        # Listings are the index's summaries: what each snapshot added is counted, not 0.
        assert tasks == tasks_json(served.store.index.task_summaries())
        assert all(t["latest"]["added_bytes"] > 0 for t in tasks)
        page = c.get("/tasks/a/snapshots", params={"limit": 1}).json()
        assert (page["total"], page["next_offset"], page["items"][0]["step"]) == (2, 1, 2)
        page2 = c.get("/tasks/a/snapshots", params={"limit": 1, "offset": 1}).json()
        assert (page2["items"][0]["step"], page2["next_offset"]) == (1, None)
        summaries = served.store.index.list_summaries("a")
        assert page["items"] + page2["items"] == [snapshot_json(x) for x in summaries]
        assert all(x["added_bytes"] > 0 for x in page["items"] + page2["items"])
        manifest = c.get("/snapshots/a:best").json()
        assert manifest == snapshot_json(served.store.show("a:best"), tensors=True)
        d = c.get("/snapshots/a@1/diff/a@2").json()
        assert [t["name"] for t in d["added"]] == ["v"] and d["changed"][0]["name"] == "w"
        # Both snapshots in full: a client rebuilds the Diff from this one response.
        assert d["a"] == snapshot_json(served.store.show("a@1"), tensors=True)
        assert d["b"] == snapshot_json(served.store.show("a@2"), tensors=True)
        assert c.get("/stats").json()["total"]["snapshots"] == 3
        assert c.get("/readyz").status_code == 200
        assert c.get("/tasks/nope/snapshots").status_code == 404
        problem = c.get("/snapshots/a@9")
        assert problem.status_code == 404
        assert problem.headers["content-type"] == "application/problem+json"
        assert "Traceback" not in problem.text
    metrics = httpx.get(f"{served.url}/metrics").text
    assert 'weightstore_http_requests_total{method="GET"' in metrics
    schema = httpx.get(f"{served.url}/openapi.json").json()
    ops = {op["operationId"] for path in schema["paths"].values() for op in path.values()}
    assert {"downloadSafetensors", "putObject", "commitManifest", "listSnapshots"} <= ops


def test_the_client_diffs_in_one_request_and_restores_into_reading_each_object_once(
    served: Served, tmp_path: Path
) -> None:
    base = {"w": torch.randn(64, 16), "b": torch.randn(16), "n": torch.arange(10)}
    served.store.save("m", base, step=1)
    tuned = {k: v + 1 if v.is_floating_point() else v for k, v in base.items()}
    served.store.save("m", tuned, step=2)
    with RemoteStore(served.url, token=served.tokens["read"], cache_dir=tmp_path / "cache") as r:
        requests: list[str] = []
        hooks = r._http.event_hooks  # noqa: SLF001 (to count the client's requests)
        hooks["request"].append(lambda q: requests.append(q.url.path))
        d = r.diff("m@1", "m@2")
        assert len(requests) == 1
        assert d == served.store.diff("m@1", "m@2")

        digests = {t.digest for t in served.store.show("m@2").tensors}
        chains = {d: [rec.digest for rec in c] for d, c in r.reader.chains(digests).items()}
        reads: list[str] = []
        get = r.cache.get

        def counted(digest: str) -> bytes | None:
            reads.append(digest)
            return get(digest)

        r.cache.get = counted  # type: ignore[method-assign]
        target = {k: torch.zeros_like(v) for k, v in base.items()}
        r.restore("m@2", into=target)
        assert all(same(target[k], tuned[k]) for k in tuned)
        assert sorted(reads) == sorted(d for names in chains.values() for d in names)

        wrong = {**{k: torch.zeros_like(v) for k, v in base.items()}, "b": torch.zeros(3)}
        with pytest.raises(IncompatibleTensor, match="nothing was written"):
            r.restore("m@2", into=wrong)
        assert not any(t.any() for t in wrong.values())


def test_tokens_and_scopes(served: Served) -> None:
    served.store.save("a", {"w": torch.zeros(3)})
    before = footprint(served)
    with served.client(None) as anon:
        r = anon.get("/tasks")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert anon.delete("/snapshots/a").status_code == 401
    with served.client(None) as c:
        c.headers["Authorization"] = "Bearer wst_0123456789abcdef_" + "x" * 43
        assert c.get("/tasks").status_code == 401
        c.headers["Authorization"] = "Basic dXNlcjpwYXNz"
        assert c.get("/tasks").status_code == 401
    with served.client("read") as c:
        assert c.get("/tasks").status_code == 200
        assert c.delete("/snapshots/a").status_code == 403
        assert c.put("/snapshots/a/tags/x").status_code == 403
    assert footprint(served) == before
    tokens = Tokens(served.store.index.engine)
    tokens.revoke(served.tokens["read"])
    with served.client("read") as c:
        assert c.get("/tasks").status_code == 401
    with served.client("write") as c:
        assert c.put("/snapshots/a/tags/x").status_code == 200
        assert c.put("/snapshots/a/tags/release/v1").json()["tags"] == ["release/v1", "x"]
        assert c.get("/snapshots/a:release/v1").status_code == 200
        assert c.delete("/tasks/a/tags/release/v1").status_code == 204
        assert c.delete("/tasks/a/tags/x").status_code == 204
        assert c.delete("/snapshots/a").status_code == 204
    assert served.store.log() == []
    assert all(t.scope != "read" for t in tokens.list())


def test_public_read_serves_reads_only(tmp_path: Path, index_url: str) -> None:
    with serve(tmp_path / "s", index_url, public_read=True) as s:
        s.store.save("a", {"w": torch.zeros(3)})
        with s.client(None) as anon:
            assert anon.get("/snapshots/a/safetensors").status_code == 200
            assert anon.delete("/snapshots/a").status_code == 401
        assert len(s.store.log()) == 1


@pytest.mark.parametrize(
    "path",
    [
        "/snapshots/%2e%2e/safetensors",
        "/snapshots/..%2Fetc/safetensors",
        "/snapshots/a%00b",
        "/snapshots//etc/passwd",
        "/tasks/%2e%2e/snapshots",
        "/tasks/a%00/snapshots",
        "/objects/..%2F..%2Findex.sqlite",
        "/objects/" + "A" * 64,
        "/objects/%2e%2e",
    ],
)
def test_path_tricks_are_refused(served: Served, path: str) -> None:
    served.store.save("a", {"w": torch.zeros(3)})
    before = footprint(served)
    with served.client("write") as c:
        for method in ("GET", "PUT", "DELETE"):
            r = c.request(method, path, content=b"x")
            assert 400 <= r.status_code < 500, (method, r.status_code, r.text)
            assert "Traceback" not in r.text
    assert footprint(served) == before


def test_safetensors_upload(served: Served, tmp_path: Path) -> None:
    sd = {"w": torch.randn(64, 8), "i": torch.arange(5)}
    f = tmp_path / "m.safetensors"
    save_file(sd, str(f))
    with served.client("write") as c:
        r = c.put("/tasks/up/snapshots", params={"step": 7, "tag": "best"}, content=f.read_bytes())
        assert r.status_code == 201, r.text
        assert r.json()["step"] == 7 and r.json()["tags"] == ["best"]
    got = served.store.restore("up:best")
    assert sorted(got) == sorted(sd) and all(same(got[k], sd[k]) for k in sd)
    assert not list((served.root / ".uploads").glob("*"))  # the temporary file is gone


@pytest.mark.parametrize("damage", ["truncated", "garbage", "bad_header", "pickle", "oversize"])
def test_bad_uploads_write_nothing(served: Served, tmp_path: Path, damage: str) -> None:
    f = tmp_path / "m.safetensors"
    save_file({"w": torch.randn(256, 64)}, str(f))
    data = f.read_bytes()
    body = {
        "truncated": data[: len(data) - 100],
        "garbage": os.urandom(5000),
        "bad_header": struct.pack("<Q", 40) + b'{"w": {"dtype": "F32", "shape": [9' + b" " * 8,
        "pickle": b"\x80\x04\x95" + os.urandom(200),
        "oversize": b"\0" * (MAX_UPLOAD + 1),
    }[damage]
    before = footprint(served)
    with served.client("write") as c:
        r = c.put("/tasks/up/snapshots", content=body)
    assert r.status_code == (413 if damage == "oversize" else 400), r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert footprint(served) == before
    assert not list((served.root / ".uploads").glob("*"))


def test_object_exchange_verifies_before_keeping(served: Served) -> None:
    codec = Codec()
    base = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    tuned = base + 1e-3
    layout = dtype_info("float32").layout
    raw_b, raw_t = tensor_bytes(base), tensor_bytes(tuned)
    d_b, d_t = digest_of(memoryview(raw_b)), digest_of(memoryview(raw_t))  # type: ignore[arg-type]
    plain = codec.encode_plain(raw_b, layout).blob
    delta = codec.encode_delta(raw_t, raw_b, d_b, layout).blob
    before = footprint(served)
    with served.client("write") as c:
        assert c.post("/objects/missing", json={"digests": [d_b, d_t]}).json()["missing"] == [
            d_b,
            d_t,
        ]
        assert c.put(f"/objects/{d_t}", content=delta).status_code == 400  # base absent
        assert c.put(f"/objects/{d_t}", content=plain).status_code == 400  # wrong digest
        flipped = bytearray(plain)
        # Mid-payload: a mantissa plane, so the decoded bytes change (a flip in a zstd frame's
        # padding bits could decode to the same bytes, which would rightly be accepted).
        flipped[len(flipped) // 2] ^= 1
        assert c.put(f"/objects/{d_b}", content=bytes(flipped)).status_code == 400
        assert c.put(f"/objects/{d_b}", content=plain[:50]).status_code == 400
        big = b"\0" * (MAX_UPLOAD + 1)
        assert c.put(f"/objects/{d_b}", content=big).status_code == 413
        manifest: dict[str, Any] = {
            "task": "pushed",
            "created_at": "2026-01-01T00:00:00+00:00",
            "tensors": [
                {"name": "w", "dtype": "float32", "shape": [1000], "nbytes": 4000, "digest": d_b}
            ],
        }
        manifest["id"] = snapshot_id(
            task="pushed",
            step=None,
            parent=None,
            created_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
            message="",
            metadata_json="{}",
            tensors=[TensorEntry("w", "float32", (1000,), d_b, 4000)],
        )
        assert c.post("/snapshots", json=manifest).status_code == 400  # its object is absent
        assert footprint(served) == before
        with served.client("read") as reader:
            assert reader.put(f"/objects/{d_b}", content=plain).status_code == 403
        assert c.put(f"/objects/{d_b}", content=plain).status_code == 201
        assert c.put(f"/objects/{d_t}", content=delta).status_code == 201
        assert c.get(f"/objects/{d_t}").content == delta
        assert c.post("/objects/missing", json={"digests": [d_b, d_t]}).json()["missing"] == []
        r = c.post("/snapshots", json=manifest)
        assert r.status_code == 201, r.text
        wrong = {**manifest, "id": "cd" * 32}
        wrong["tensors"] = [{**manifest["tensors"][0], "shape": [999]}]
        assert c.post("/snapshots", json=wrong).status_code == 400
    assert same(served.store.restore("pushed")["w"], base)


def test_a_corrupt_object_is_never_served_as_good_bytes(served: Served) -> None:
    sd = {"a": torch.randn(300, 300), "b": torch.randn(300, 300)}
    snap = served.store.save("t", sd)
    path = object_path(served, snap.tensors[1].digest)
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with served.client() as c:
        # Headers (200, Content-Length) went out before tensor "b" was decoded: the body stops
        # short instead, and the client sees a broken transfer, never a complete wrong file.
        with pytest.raises(httpx.RemoteProtocolError):
            c.get("/snapshots/t/safetensors")
        r = c.get("/snapshots/t/tensors/b")
        assert r.status_code == 500 and r.headers["content-type"] == "application/problem+json"
        assert "Traceback" not in r.text
        assert c.get("/snapshots/t/tensors/a").status_code == 200  # the good one still reads


@pytest.mark.parametrize(
    "header",
    ["bytes=" + "9" * 5000 + "-", "bytes=0-" + "9" * 5000, "bytes=-" + "9" * 5000],
    ids=["start", "end", "suffix"],
)
def test_range_numbers_of_thousands_of_digits_are_answered(served: Served, header: str) -> None:
    served.store.save("m", {"w": torch.arange(100, dtype=torch.float32)})
    with served.client() as c:
        whole = c.get("/snapshots/m/safetensors").content
        r = c.get("/snapshots/m/safetensors", headers={"Range": header})
    if header.startswith("bytes=9"):
        assert r.status_code == 416, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
    else:  # to the end of the file, or a suffix longer than it: the whole file
        assert r.status_code in (200, 206), r.text
        assert r.content == whole


def test_upload_metadata_nested_thousands_deep_is_a_400(served: Served) -> None:
    data = save_bytes({"w": torch.zeros(4)})
    with served.client("write") as c:
        deep = "[" * 3000 + "]" * 3000
        r = c.put("/tasks/m/snapshots", params={"metadata": deep}, content=data)
        assert r.status_code == 400, r.text
        assert "nested too deeply" in r.json()["detail"]
    assert served.store.log() == []
