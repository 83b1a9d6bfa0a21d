"""The Hub-compatible routes against the real clients (issue 14): transformers,
sentence-transformers, PEFT and huggingface_hub, in a process of their own with
``HF_ENDPOINT`` pointing at a real uvicorn server on loopback and a fresh ``HF_HOME``
(tests/hub_client.py). Nothing is mocked and nothing is downloaded from outside: the models
are the packaged all-MiniLM-L6-v2 and tiny BERTs built here. Every tensor is compared bit
for bit, every file byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import torch
from hf_models import tiny_bert
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from served import Served, serve

from weightstore.demo.minilm_model import model_dir
from weightstore.remote import RemoteStore
from weightstore.testing.faultproxy import Fault, FaultProxy

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
pytest.importorskip("sentence_transformers")
pytest.importorskip("huggingface_hub")

CLIENT = Path(__file__).with_name("hub_client.py")
# The clients' own deprecation notices (transformers, peft) are not this project's to fix.
pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]


class Client:
    """One process of real clients, answering JSON commands."""

    def __init__(self, endpoint: str, home: Path, token: str, python: str = sys.executable) -> None:
        env = {
            **os.environ,
            "HF_ENDPOINT": endpoint,
            "HF_HOME": str(home),
            "HF_TOKEN": token,
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "TRANSFORMERS_VERBOSITY": "error",
            "TOKENIZERS_PARALLELISM": "false",
        }
        env.pop("HF_HUB_OFFLINE", None)
        env.pop("TRANSFORMERS_OFFLINE", None)
        self.proc = subprocess.Popen(
            [python, str(CLIENT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert json.loads(self._line()) == {"ready": True}

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the client process exited ({self.proc.wait()})")
        return line

    def __call__(self, op: str, *args: Any) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps([op, list(args)]) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self._line())
        if "error" in answer:
            raise AssertionError(f"{op}{args}: {answer['error']}\n{answer['detail']}")
        return answer["ok"]

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _digests(state: dict[str, torch.Tensor]) -> dict[str, str]:
    return {
        k: hashlib.sha256(
            v.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        ).hexdigest()
        for k, v in state.items()
    }


def _files(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@dataclass
class World:
    served: Served
    client: Client
    minilm: Path  # the packaged folder (step 100, tag best)
    tuned: Path  # a fine-tuned copy (step 1200, tag v2)
    commits: dict[str, str]  # "100" / "1200" -> commit
    tiny: Path  # an unsharded tiny BERT: PEFT's base, loaded from disk
    sharded: Path  # the same model in shards
    adapters: dict[str, Path]  # step -> LoRA adapter folder

    def requests(self, route: str | None = None) -> Any:
        """Requests served so far, by route (or of one route)."""
        metric = app_of(self.served).state.metrics.requests
        by_route: dict[str, float] = {}
        for m in metric.collect():
            for s in m.samples:
                if s.name.endswith("_total"):
                    r = s.labels["route"]
                    by_route[r] = by_route.get(r, 0.0) + s.value
        return by_route if route is None else by_route.get(route, 0.0)


def app_of(served: Served) -> Any:
    """The served FastAPI app (uvicorn wraps it in middleware)."""
    app: Any = served.server.config.loaded_app
    while not hasattr(app, "state"):
        app = app.app
    return app


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("hub")
    tuned = tmp / "tuned"
    shutil.copytree(model_dir(), tuned)
    weights = load_file(str(tuned / "model.safetensors"))
    for name in list(weights)[:10]:
        weights[name] = weights[name] + 1e-3 if weights[name].is_floating_point() else weights[name]
    save_file(weights, str(tuned / "model.safetensors"), metadata={"format": "pt"})

    tiny, sharded = tmp / "tiny", tmp / "sharded"
    tiny_bert(0).save_pretrained(tiny)
    tiny_bert(0).save_pretrained(sharded, max_shard_size="20KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    adapters = {}
    for step, seed in (("1200", 1), ("1300", 2)):
        torch.manual_seed(seed)
        lora = peft.LoraConfig(r=4, target_modules=["query", "value"], init_lora_weights=False)
        model = peft.get_peft_model(transformers.AutoModel.from_pretrained(tiny), lora)
        adapters[step] = tmp / f"lora-{step}"
        model.save_pretrained(adapters[step])

    with serve(tmp / "store", f"sqlite:///{tmp / 'index.db'}") as served:
        store = served.store
        commits = {
            "100": store.import_folder("team/minilm", model_dir(), step=100, tags=["best"]).id,
            "1200": store.import_folder("team/minilm", tuned, step=1200, tags=["v2"]).id,
        }
        store.import_folder("team/tiny-sharded", sharded, step=1)
        for step, folder in adapters.items():
            store.import_folder("team/tiny-lora", folder, step=int(step))
        store.save("bare", {"w": torch.arange(12.0).reshape(3, 4)}, step=5)
        client = Client(served.url, tmp / "hf", served.tokens["read"])
        try:
            yield World(served, client, model_dir(), tuned, commits, tiny, sharded, adapters)
        finally:
            client.close()


def test_from_pretrained_at_a_tag_a_step_a_commit_and_main(world: World) -> None:
    original = _digests(load_file(str(world.minilm / "model.safetensors")))
    tuned = _digests(load_file(str(world.tuned / "model.safetensors")))
    assert original != tuned
    for revision, expected in [
        ("best", original),
        ("100", original),
        (commit_of_id(world.commits["100"]), original),
        ("v2", tuned),
        ("main", tuned),
        (None, tuned),
    ]:
        got = world.client("model", "team/minilm", revision)
        assert {k: got[k] for k in expected if k in got} == {
            k: v for k, v in expected.items() if k in got
        }, revision
        assert len(got) >= len(expected) - 1  # position_ids may be a buffer, not a weight


def commit_of_id(snapshot_id: str) -> str:
    return snapshot_id[:40]


def test_a_second_load_at_a_commit_sends_no_file_request(world: World) -> None:
    """At a commit the cache answers: no file is asked for again. huggingface_hub's own calls
    send nothing at all; transformers 5 still lists the tree (``list_repo_tree``, its own
    choice: chat templates, tokenizer files) on every load."""
    commit = commit_of_id(world.commits["1200"])
    world.client("model", "team/minilm", commit)
    world.client("tokenizer", "team/minilm", commit)
    world.client("snapshot", "team/minilm", commit)
    before = world.requests()
    world.client("snapshot", "team/minilm", commit)
    world.client("download", "team/minilm", "config.json", commit)
    assert world.requests() == before
    world.client("model", "team/minilm", commit)
    world.client("tokenizer", "team/minilm", commit)
    assert world.requests("/{rest:path}") == before["/{rest:path}"]


def test_tokenizer_and_sentence_transformers_match_the_local_folder(world: World) -> None:
    assert world.client("tokenizer", "team/minilm", "best") == world.client(
        "tokenizer", str(world.minilm)
    )
    assert world.client("sentence", "team/minilm", "100") == world.client(
        "sentence", str(world.minilm)
    )
    assert world.client("sentence", "team/minilm", "v2") == world.client(
        "sentence", str(world.tuned)
    )


def test_snapshot_download_whole_and_with_patterns(world: World) -> None:
    assert world.client("snapshot", "team/minilm", "best") == _files(world.minilm)
    jsons = world.client("snapshot", "team/minilm", "v2", ["*.json"])
    jsons = {p: h for p, h in jsons.items() if p.endswith(".json")}  # the cache keeps others
    assert jsons == {p: h for p, h in _files(world.tuned).items() if p.endswith(".json")}
    assert "1_Pooling/config.json" in jsons


def test_model_info_and_tree_list_the_folder(world: World) -> None:
    info = world.client("info", "team/minilm", "best")
    assert info["sha"] == commit_of_id(world.commits["100"])
    assert info["files"] == sorted(_files(world.minilm))
    listed = world.client("tree", "team/minilm", "best")
    assert ["RepoFolder", "1_Pooling"] in listed
    assert sorted(p for kind, p in listed if kind == "RepoFile") == sorted(_files(world.minilm))


def test_a_sharded_model_loads_through_its_index(world: World) -> None:
    expected = _digests(transformers.AutoModel.from_pretrained(world.sharded).state_dict())
    assert world.client("model", "team/tiny-sharded", "1") == expected
    shards = sorted(p.name for p in world.sharded.glob("model-*.safetensors"))
    assert len(shards) > 1
    assert world.client("shard_files", "team/tiny-sharded", "1") == shards
    assert world.client("st_metadata", "team/tiny-sharded", "1")["sharded"] is True
    assert world.client("snapshot", "team/tiny-sharded", "main") == _files(world.sharded)


def test_peft_adapters_load_and_hotswap_by_revision(world: World) -> None:
    base = str(world.tiny)
    local = {s: world.client("peft", base, str(p)) for s, p in world.adapters.items()}
    assert local["1200"] != local["1300"]
    assert world.client("peft", base, "team/tiny-lora", "1200") == local["1200"]
    assert world.client("hotswap", base, "team/tiny-lora", "1200", "1300") == local["1300"]


def test_hf_file_system_lists_and_reads(world: World) -> None:
    assert "team/minilm/1_Pooling" in world.client("ls", "team/minilm")
    assert world.client("ls", "team/minilm/1_Pooling", "best") == [
        "team/minilm@best/1_Pooling/config.json"
    ]
    expected = hashlib.sha256((world.minilm / "config.json").read_bytes()).hexdigest()
    assert world.client("fs_read", "team/minilm/config.json", "best") == expected
    meta = world.client("st_metadata", "team/minilm", "best")
    assert meta == {
        "sharded": False,
        "tensors": len(load_file(str(world.minilm / "model.safetensors"))),
    }


def test_a_snapshot_of_bare_tensors_is_one_safetensors_file(world: World) -> None:
    digest = world.client("download", "bare", "model.safetensors", "5")
    path = world.served.root.parent / "bare.safetensors"
    world.served.store.export("bare@5", path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert world.client("st_metadata", "bare", "5") == {"sharded": False, "tensors": 1}


def test_missing_file_revision_and_repo_raise_the_clients_own_errors(world: World) -> None:
    c = world.client
    assert c("error", "download", "team/nope", "config.json") == "RepositoryNotFoundError"
    assert c("error", "download", "team/minilm", "config.json", "nope") == "RevisionNotFoundError"
    assert c("error", "download", "team/minilm", "config.json", "999") == "RevisionNotFoundError"
    assert c("error", "download", "team/minilm", "nope.json", "best") == "RemoteEntryNotFoundError"
    assert c("error", "model", "team/nope") == "OSError"  # transformers' own wording of it


@pytest.mark.parametrize("fault", ["truncate"])
def test_a_download_cut_midway_resumes_with_a_range(
    world: World, tmp_path: Path, fault: Fault
) -> None:
    cut: list[str] = []

    def plan(method: str, path: str) -> Fault:
        if method == "GET" and path.endswith("/model.safetensors") and not cut:
            cut.append(path)
            return fault
        return "pass"

    with FaultProxy(world.served.url, plan) as proxy:
        client = Client(proxy.endpoint_url, tmp_path / "hf", world.served.tokens["read"])
        try:
            got = client("download", "team/minilm", "model.safetensors", "best")
        finally:
            client.close()
    assert proxy.counts == {fault: 1}
    assert got == hashlib.sha256((world.minilm / "model.safetensors").read_bytes()).hexdigest()


# ------------------------------------------------------------------------- raw HTTP


def _http(world: World, token: str | None = "read") -> httpx.Client:
    headers = {"Authorization": f"Bearer {world.served.tokens[token]}"} if token else {}
    return httpx.Client(base_url=world.served.url, headers=headers, timeout=30)


def test_head_gives_what_hf_hub_download_reads(world: World) -> None:
    body = (world.minilm / "config.json").read_bytes()
    sha = hashlib.sha256(body).hexdigest()
    with _http(world) as h:
        r = h.head("/team/minilm/resolve/best/config.json")
    assert r.status_code == 200
    assert r.headers["x-repo-commit"] == commit_of_id(world.commits["100"])
    assert r.headers["etag"] == r.headers["x-linked-etag"] == f'"{sha}"'
    assert r.headers["x-linked-size"] == r.headers["content-length"] == str(len(body))
    assert r.headers["accept-ranges"] == "bytes"
    assert "content-encoding" not in r.headers


@pytest.mark.parametrize(
    ("range_", "status", "part"),
    [
        ("bytes=10-", 206, slice(10, None)),
        ("bytes=3-7", 206, slice(3, 8)),
        ("bytes=-5", 206, slice(-5, None)),
        ("bytes=0-999999999", 206, slice(0, None)),
        ("bytes=abc", 200, slice(None)),
        ("bytes=999999-", 416, None),
        ("bytes=" + "9" * 5000 + "-", 416, None),
    ],
)
def test_ranges_of_a_side_file_and_of_a_rebuilt_safetensors_file(
    world: World, range_: str, status: int, part: slice | None
) -> None:
    for name in ("config.json", "model.safetensors"):
        whole = (world.minilm / name).read_bytes()
        with _http(world) as h:
            r = h.get(f"/team/minilm/resolve/best/{name}", headers={"Range": range_})
        if name == "model.safetensors" and range_ == "bytes=999999-":
            assert r.status_code == 206  # the weights file is larger
            continue
        assert r.status_code == status, (name, range_)
        if part is not None:
            assert r.content == whole[part]
        if status == 206:
            assert r.headers["content-range"].startswith("bytes ")


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/team/nope/resolve/main/config.json", "RepoNotFound"),
        ("/team/minilm/resolve/nope/config.json", "RevisionNotFound"),
        ("/team/minilm/resolve/refs%2Fpr%2F1/config.json", "RevisionNotFound"),
        ("/team/minilm/resolve/best/%2E%2E/%2E%2E/etc/passwd", "EntryNotFound"),
        ("/team/minilm/resolve/best/..%2Fconfig.json", "EntryNotFound"),
        ("/team/minilm/resolve/best/", "EntryNotFound"),
        ("/api/models/team/nope", "RepoNotFound"),
        ("/api/models/team/minilm/revision/nope", "RevisionNotFound"),
        ("/api/models/team/minilm/tree/best/nope", "EntryNotFound"),
        ("/api/models/..%2F..%2Fetc", "RepoNotFound"),
    ],
)
def test_unknown_names_are_404s_the_clients_map(world: World, path: str, code: str) -> None:
    with _http(world) as h:
        for method in ("GET", "HEAD") if "/resolve/" in path else ("GET",):
            r = h.request(method, path)
            assert r.status_code == 404, (method, path, r.text)
            assert r.headers["x-error-code"] == code
            if code == "EntryNotFound":
                assert r.headers["x-repo-commit"] == commit_of_id(world.commits["100"])


def test_reads_need_a_token_unless_public(world: World) -> None:
    with _http(world, token=None) as h:
        assert h.head("/team/minilm/resolve/best/config.json").status_code == 401
        assert h.get("/api/models/team/minilm").status_code == 401
    with httpx.Client(base_url=world.served.url, headers={"Authorization": "Bearer nope"}) as h:
        assert h.get("/team/minilm/resolve/best/config.json").status_code == 401
    with _http(world, token=None) as h:  # an unknown route stays a 404 to anyone
        assert h.get("/no/such/route").status_code == 404


def test_paths_info_answers_form_and_json(world: World) -> None:
    with _http(world) as h:
        form = h.post(
            "/api/models/team/minilm/paths-info/best",
            data={"paths": ["config.json", "1_Pooling", "nope"], "expand": "True"},
        )
        as_json = h.post("/api/models/team/minilm/paths-info/best", json={"paths": ["config.json"]})
        bad = h.post("/api/models/team/minilm/paths-info/best", json={"paths": 5})
    assert [e["path"] for e in form.json()] == ["config.json", "1_Pooling"]
    assert [e["type"] for e in form.json()] == ["file", "directory"]
    assert as_json.json()[0]["size"] == (world.minilm / "config.json").stat().st_size
    assert bad.status_code == 400


def test_head_reads_no_object(world: World) -> None:
    """A HEAD is answered from the index: with every object file hidden it still answers."""
    objects = world.served.root / "objects"
    hidden = world.served.root / "objects-hidden"
    objects.rename(hidden)
    try:
        with _http(world) as h:
            r = h.head("/team/minilm/resolve/v2/model.safetensors")
    finally:
        hidden.rename(objects)
    assert r.status_code == 200
    assert r.headers["x-linked-size"] == str((world.tuned / "model.safetensors").stat().st_size)


def test_the_remote_client_exports_a_folder(world: World, tmp_path: Path) -> None:
    with RemoteStore(
        world.served.url, token=world.served.tokens["read"], cache_dir=tmp_path / "cache"
    ) as remote:
        remote.export("team/minilm:v2", tmp_path / "out")
    assert _files(tmp_path / "out") == _files(world.tuned)


# ----------------------------------------------------------------- huggingface_hub 0.x

HUB0_PYTHON = os.environ.get("WS_HUB0_PYTHON")


@pytest.fixture(scope="module")
def hub0(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """The 0.x client (it lists files from ``siblings``, the 1.x line from ``tree``)."""
    if not HUB0_PYTHON:
        pytest.skip("WS_HUB0_PYTHON names no huggingface_hub 0.x environment (scripts/test.sh)")
    client = Client(
        world.served.url, tmp_path_factory.mktemp("hf0"), world.served.tokens["read"], HUB0_PYTHON
    )
    version = subprocess.run(
        [HUB0_PYTHON, "-c", "import huggingface_hub as h; print(h.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert version.startswith("0."), version
    yield client
    client.close()


def test_hub0_downloads_snapshots_files_and_listings(world: World, hub0: Client) -> None:
    assert hub0("snapshot", "team/minilm", "best") == _files(world.minilm)
    jsons = hub0("snapshot", "team/minilm", "v2", ["*.json"])
    assert {p: h for p, h in jsons.items() if p.endswith(".json")} == {
        p: h for p, h in _files(world.tuned).items() if p.endswith(".json")
    }
    assert hub0("snapshot", "team/tiny-sharded", "1") == _files(world.sharded)
    expected = hashlib.sha256((world.tuned / "model.safetensors").read_bytes()).hexdigest()
    assert hub0("download", "team/minilm", "model.safetensors", "1200") == expected
    assert hub0("info", "team/minilm", "best")["files"] == sorted(_files(world.minilm))
    assert ["RepoFolder", "1_Pooling"] in hub0("tree", "team/minilm", "best")
    assert "team/minilm/1_Pooling" in hub0("ls", "team/minilm")
    assert hub0("st_metadata", "team/tiny-sharded", "1")["sharded"] is True


def test_hub0_maps_the_errors(hub0: Client) -> None:
    assert hub0("error", "download", "team/nope", "config.json") == "RepositoryNotFoundError"
    assert hub0("error", "download", "team/minilm", "a.json", "nope") == "RevisionNotFoundError"
    assert hub0("error", "download", "team/minilm", "nope.json", "best") in (
        "EntryNotFoundError",
        "RemoteEntryNotFoundError",
    )


_SEGMENTS = st.one_of(
    st.sampled_from(
        [
            "team",
            "minilm",
            "resolve",
            "revision",
            "tree",
            "paths-info",
            "best",
            "main",
            "100",
            "config.json",
            "1_Pooling",
            "..",
            ".",
            "%2F",
            "%2E%2E",
            "%00",
            "%ff",
            "",
            "api",
            "models",
        ]
    ),
    st.text(min_size=1, max_size=30).map(lambda t: quote(t, safe="")),
)
_RANGES = st.one_of(
    st.none(),
    st.from_regex(r"bytes=[0-9]{0,25}-[0-9]{0,25}", fullmatch=True),
    st.text(max_size=40).filter(lambda t: t.isprintable() and t.isascii()),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=st.sampled_from(["GET", "HEAD", "POST"]),
    segments=st.lists(_SEGMENTS, min_size=1, max_size=8),
    range_=_RANGES,
)
def test_no_request_to_the_hub_routes_is_a_server_error(
    world: World, method: str, segments: list[str], range_: str | None
) -> None:
    path = "/" + "/".join(segments)
    headers = {"Authorization": f"Bearer {world.served.tokens['read']}"}
    if range_ is not None:
        headers["Range"] = range_
    with httpx.Client(base_url=world.served.url, timeout=30) as h:
        r = h.request(method, path, headers=headers)
    assert r.status_code < 500, (method, path, range_, r.text[:300])


def test_a_damaged_object_cuts_the_response_never_sends_wrong_bytes(tmp_path: Path) -> None:
    """A flipped byte in a stored file ends its download early (the client sees a short body
    and raises), the HEAD still answers from the index, other files still download, and the
    server stays up."""
    src = tmp_path / "src"
    tiny_bert(3).save_pretrained(src)
    (src / "notes.txt").write_bytes(b"x" * 100_000)
    with serve(tmp_path / "store", f"sqlite:///{tmp_path / 'index.db'}") as served:
        snap = served.store.import_folder("team/tiny", src, step=1)
        entry = next(t for t in snap.tensors if t.name.endswith("notes.txt"))
        blob = served.root / "objects" / entry.digest[:2] / entry.digest
        data = bytearray(blob.read_bytes())
        data[-1] ^= 0xFF
        blob.write_bytes(bytes(data))
        with _http_of(served) as h:
            assert h.head("/team/tiny/resolve/main/notes.txt").status_code == 200
            with pytest.raises(httpx.RemoteProtocolError):
                h.get("/team/tiny/resolve/main/notes.txt")
        with _http_of(served) as h:
            config = h.get("/team/tiny/resolve/main/config.json")
            assert config.content == (src / "config.json").read_bytes()
            weights = h.get("/team/tiny/resolve/main/model.safetensors")
            assert weights.content == (src / "model.safetensors").read_bytes()


def _http_of(served: Served) -> httpx.Client:
    headers = {"Authorization": f"Bearer {served.tokens['read']}"}
    return httpx.Client(base_url=served.url, headers=headers, timeout=30)
