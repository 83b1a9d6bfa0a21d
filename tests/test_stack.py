"""End to end through the native stack that docker-compose.yml runs in containers: moto as the
S3 service, PostgreSQL on 127.0.0.1:5432 as the index, and ``weightstore db upgrade``, ``init``
and ``serve`` as separate processes configured only by the environment variables the compose
file sets. A trainer pushes over HTTP with a write token, another machine pulls, both restore
bit-exactly; gc and verify then run on the served store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from procs.workload import same
from served import wait_ready

from weightstore.objects.s3config import S3Settings
from weightstore.remote import RemoteStore
from weightstore.store import WeightStore
from weightstore.sync import pull, push
from weightstore.testing.s3server import free_port

CLI = [sys.executable, "-m", "weightstore.cli.main"]


@pytest.fixture
def stack_env(s3_endpoint: str, s3_url: str, postgres_url: str) -> dict[str, str]:
    """The variables docker-compose.yml gives the weightstore container, pointed at moto and
    the test schema on PostgreSQL (and no --store / --index-url anywhere)."""
    return {
        **os.environ,
        "WEIGHTSTORE_PATH": s3_url,
        "WEIGHTSTORE_INDEX_URL": postgres_url,
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"weightstore {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


@contextmanager
def served(env: dict[str, str]) -> Iterator[str]:
    """``weightstore serve`` as the container runs it; yields its URL once /readyz answers."""
    port = free_port()
    proc = subprocess.Popen(
        [*CLI, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def open_stack_store(env: dict[str, str]) -> WeightStore:
    """The served store, opened in this process as the service opens it."""
    where = env["WEIGHTSTORE_PATH"]
    s3 = S3Settings.from_url(where, endpoint_url=env["AWS_ENDPOINT_URL"])
    return WeightStore.open(where, index_url=env["WEIGHTSTORE_INDEX_URL"], s3=s3)


def weights(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(256, 64, generator=g)
    w[0, :3] = torch.tensor([float("nan"), -0.0, float("inf")])
    return {
        "w": w,
        "b": torch.randn(64, generator=g).to(torch.bfloat16),
        "steps": torch.arange(10, dtype=torch.int64) * seed,
    }


@pytest.mark.slow
def test_push_pull_restore_gc_verify_through_the_served_s3_postgres_store(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    cli(stack_env, "db", "upgrade")
    cli(stack_env, "init")
    made = cli(stack_env, "token", "create", "--scope", "write", "--name", "e2e")
    token = next(w for w in made.split() if w.startswith("wst_"))
    base, tuned = weights(1), weights(1)
    tuned["w"] = tuned["w"] + 1e-3  # a fine-tune: stored as a delta of step 1
    with served(stack_env) as url:
        with WeightStore.open(tmp_path / "trainer") as trainer:
            trainer.save("m", base, step=1)
            trainer.save("m", tuned, step=2)
            trainer.save("scratch", weights(7), step=1)
            with RemoteStore(url, token=token, cache_dir=tmp_path / "cache1") as remote:
                push(trainer, remote)
        with (
            WeightStore.open(tmp_path / "inference") as inference,
            RemoteStore(url, token=token, cache_dir=tmp_path / "cache2") as remote,
        ):
            pull(inference, remote, ["m"])
            assert [s.step for s in inference.log("m")] == [2, 1]
            for step, expected in ((1, base), (2, tuned)):
                got = inference.restore(f"m@{step}")
                assert got.keys() == expected.keys()
                assert all(same(got[k], expected[k]) for k in expected)
        # Drop a task on the served store so gc has something to remove there.
        with open_stack_store(stack_env) as server:
            server.delete("scratch@1")
        gc = json.loads(cli(stack_env, "gc", "--grace", "0", "--json"))
        assert gc["objects_removed"] == 3, gc
        cli(stack_env, "verify")
        # After gc the service still serves every kept snapshot bit-exactly.
        with RemoteStore(url, token=token, cache_dir=tmp_path / "cache3") as remote:
            got = remote.restore("m@2")
            assert all(same(got[k], tuned[k]) for k in tuned)
