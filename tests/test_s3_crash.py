"""kill -9 during saves to S3 (moto) + PostgreSQL: committed snapshots restore bit-exactly and
verify stays clean, with the same worker and checks as test_crash.py's local kill tests.

The workers (``tests/procs/saver.py``, forked by one server) open ``s3://...`` like the CLI
does: endpoint and credentials from the AWS environment variables.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from procs.harness import ForkServer
from test_crash import STEPS, check_after_kill, jobs

SEEDS = [200, 201, 202]


@pytest.fixture(scope="module")
def s3_workers(s3_endpoint: str) -> Iterator[ForkServer]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ENDPOINT_URL", s3_endpoint)  # the fork server passes it on to workers
        server = ForkServer()
    try:
        yield server
    finally:
        server.close()


def _save(
    server: ForkServer, url: str, index_url: str, seed: int, out: Path, delay: float | None
) -> list[tuple[int, str]]:
    """Run the six saves; SIGKILL the worker after ``delay`` seconds (None: let it finish).
    Return the (step, snapshot id) pairs it reported committed."""
    worker = server.start(
        {"store": url, "index_url": index_url, "jobs": jobs(seed, range(STEPS))}, out
    )
    if delay is None:
        worker.finish(timeout=300)
        assert worker.status == 0, worker.describe()
    else:
        time.sleep(delay)
        assert worker.kill() in (0, -signal.SIGKILL), worker.describe()
    assert not [line for line in worker.lines if line.startswith("failed")], worker.describe()
    committed = [(o.step, o.snapshot_id) for o in worker.outcomes()]
    assert [s for s, _ in committed] == list(range(len(committed))), worker.describe()
    return committed


@pytest.fixture(scope="module")
def s3_run_seconds(
    s3_workers: ForkServer, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> float:
    """How long an uninterrupted run on S3 takes (the kills spread over it); also checks that
    such a run commits every step. Its index is SQLite, so that the module needs no schema."""
    import boto3

    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(
        Bucket="ws-crash-full"
    )
    folder = tmp_path_factory.mktemp("s3-full")
    start = time.monotonic()
    committed = _save(
        s3_workers,
        "s3://ws-crash-full/store",
        f"sqlite:///{folder / 'index.db'}",
        7,
        folder / "worker.out",
        None,
    )
    assert [step for step, _ in committed] == list(range(STEPS))
    return time.monotonic() - start


@pytest.mark.parametrize("seed", SEEDS)
def test_kill_mid_save_s3_postgresql(
    seed: int,
    s3_workers: ForkServer,
    s3_run_seconds: float,
    s3_endpoint: str,
    s3_url: str,
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    delay = random.Random(seed).uniform(0.0, s3_run_seconds)
    committed = _save(s3_workers, s3_url, postgres_url, seed, tmp_path / "worker.out", delay)
    check_after_kill(s3_url, postgres_url, seed, committed)  # type: ignore[arg-type]
