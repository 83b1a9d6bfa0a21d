"""Tokens never appear in the server's logs, its error bodies or its metrics (issue 17, item 4).

A real ``weightstore serve`` process (uvicorn, access log on) is sent the requests a client
makes with good, wrong, read-only, revoked and malformed tokens, on read and write routes of
the REST and Hub APIs; then everything the server wrote and answered is searched for every
token (and for the secret part of a token alone).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import torch
from safetensors.torch import save_file
from served import serve_cli

from weightstore import WeightStore
from weightstore.index.tokens import Tokens


def test_tokens_never_reach_logs_errors_or_metrics(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with WeightStore.open(root) as store:
        store.save("team/model", {"w": torch.randn(8, 8)}, step=1, tags=["best"])
        tokens = Tokens(store.index.engine)
        read = tokens.create("read", "reader")[1]
        write = tokens.create("write", "writer")[1]
        gone, revoked = tokens.create("write", "gone")
        tokens.revoke(gone.id)
    wrong = read[:-8] + "AAAAAAAA"  # well-formed, not issued
    secrets = [read, write, revoked, wrong]
    log = tmp_path / "server.log"
    with serve_cli(root, log=log) as base:
        bodies: list[str] = []
        weights = tmp_path / "w.safetensors"
        save_file({"w": torch.randn(8, 8)}, str(weights))
        for token in [*secrets, f"{read} extra", read[:-1], "Basic " + write]:
            auth = (
                {"Authorization": f"Bearer {token}"}
                if not token.startswith("Basic")
                else {"Authorization": token}
            )
            with httpx.Client(base_url=base, headers=auth, timeout=30) as c:
                answers = [
                    c.get("/v1/tasks"),
                    c.get("/v1/snapshots/team/model@1"),
                    c.get("/v1/snapshots/team/model@1/safetensors"),
                    c.get("/api/models/team/model"),
                    c.head("/team/model/resolve/main/model.safetensors"),
                    c.get("/team/model/resolve/main/model.safetensors"),
                    c.put(
                        "/v1/tasks/team/other/snapshots",
                        params={"step": 3},
                        content=weights.read_bytes(),
                    ),
                    c.post("/v1/objects/missing", json={"digests": ["0" * 64]}),
                    c.get("/v1/snapshots/nope@9"),
                ]
                bodies += [a.text for a in answers]
                bodies += [str(dict(a.headers)) for a in answers]
        bodies.append(httpx.get(f"{base}/metrics", timeout=30).text)
    text = log.read_text() + "\n".join(bodies)
    assert "GET /v1/tasks" in text  # the access log was on: requests were logged
    for secret in secrets:
        hidden = secret[-24:]  # the random part, however a token is framed
        assert hidden not in text, f"a token leaked: ...{secret[-4:]}"


def test_every_write_route_refuses_missing_wrong_read_only_and_revoked_tokens(
    tmp_path: Path,
) -> None:
    """Every route of the OpenAPI schema that is not a GET, with each bad credential; nothing
    in the store changes (the Hub routes are GET/HEAD, and paths-info only reads)."""
    from served import serve

    with serve(tmp_path / "server", "sqlite:///" + str(tmp_path / "index.sqlite")) as served:
        snap = served.store.save("team/model", {"w": torch.randn(8, 8)}, step=1, tags=["best"])
        digest = snap.tensors[0].digest
        tokens = Tokens(served.store.index.engine)
        gone, revoked = tokens.create("write", "gone")
        tokens.revoke(gone.id)
        spec = httpx.get(f"{served.url}/openapi.json", timeout=30).json()
        fill = {
            "{ref}": "team/model@1",
            "{task}": "team/model",
            "{tag}": "best",
            "{digest}": digest,
        }
        routes = [
            (method.upper(), path)
            for path, ops in spec["paths"].items()
            for method in ops
            if method in ("put", "post", "delete", "patch")
        ]
        assert len(routes) >= 6

        def state() -> object:
            s = served.store
            objects = sorted(str(p) for p in (served.root / "objects").rglob("*") if p.is_file())
            return [(x.id, x.tags) for x in s.log()], objects, [t.id for t in tokens.list()]

        before = state()
        creds = {
            "none": None,
            "wrong": served.tokens["read"][:-6] + "AAAAAA",
            "revoked": revoked,
            "malformed": "not-a-token",
            "read": served.tokens["read"],
        }
        for method, template in routes:
            path = template
            for key, value in fill.items():
                path = path.replace(key, value)
            for name, token in creds.items():
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                answer = httpx.request(
                    method, served.url + path, headers=headers, content=b"{}", timeout=30
                )
                if name != "read":
                    assert answer.status_code == 401, (method, path, name, answer.text)
                elif path != "/v1/objects/missing":  # the one POST that only reads
                    assert answer.status_code == 403, (method, path, name, answer.text)
        assert state() == before
