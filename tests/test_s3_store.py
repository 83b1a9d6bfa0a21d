"""A store on S3 (moto's standalone server) with its index on PostgreSQL: round trips through
the facade and the CLI, the store's identity, and faults injected by a loopback proxy
(weightstore.testing.faultproxy) between the backend and the server: saves retry and succeed,
or fail typed with nothing committed; restores never return wrong bytes."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from weightstore.cli.main import app
from weightstore.errors import (
    CorruptObject,
    IndexRequired,
    InvalidInput,
    StorageError,
    StoreMismatch,
    TransientStorageError,
    UnsupportedLocation,
)
from weightstore.objects.retry import RetryPolicy
from weightstore.objects.s3 import S3Backend
from weightstore.objects.s3config import S3Settings
from weightstore.settings import StoreSettings
from weightstore.store import WeightStore
from weightstore.testing.faultproxy import Fault, FaultProxy, random_faults

FAST = StoreSettings(fsync=False, threads=2, gc_grace_seconds=0)
QUICK_RETRY = RetryPolicy(attempts=10, base_delay=0.01, max_delay=0.1)


def weights(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    special = torch.tensor([float("nan"), -0.0, 0.0, float("inf"), -float("inf"), 1e-45])
    return {
        "w": torch.randn(256, 128, generator=g),
        "b": torch.randn(128, generator=g).to(torch.bfloat16),
        "special": special,
        "ids": torch.arange(100, dtype=torch.int64) * seed,
    }


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Bit-exact equality: NaN payloads and -0.0 included (views as integers)."""
    if a.keys() != b.keys():
        return False
    return all(
        a[k].dtype == b[k].dtype
        and a[k].shape == b[k].shape
        and torch.equal(a[k].contiguous().view(torch.uint8), b[k].contiguous().view(torch.uint8))
        for k in a
    )


@pytest.fixture
def s3(s3_url: str, s3_endpoint: str) -> S3Settings:
    return S3Settings.from_url(s3_url, endpoint_url=s3_endpoint, retry=QUICK_RETRY)


@pytest.fixture
def open_store(s3: S3Settings, postgres_url: str) -> Iterator[Callable[..., WeightStore]]:
    opened: list[WeightStore] = []

    def open_(**kw: object) -> WeightStore:
        options: dict[str, object] = {"index_url": postgres_url, "settings": FAST, "s3": s3}
        options.update(kw)
        store = WeightStore.open(s3.url, **options)  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


def test_save_restore_gc_verify_round_trip(open_store: Callable[..., WeightStore]) -> None:
    store = open_store()
    assert isinstance(store.objects, S3Backend)
    first, second = weights(1), weights(2)
    store.save("t", first, step=1)
    store.save("t", second, step=2, tags=["best"])

    assert same(store.restore("t@1"), first)
    assert same(store.restore("t:best"), second)
    assert store.verify().ok

    store.delete("t@1")
    result = store.gc(grace_seconds=0)
    assert result.objects_removed > 0
    assert same(store.restore("t"), second)
    assert store.verify().ok
    stored = {info.key for info in store.objects.iterate()}
    assert stored == store.index.reachable_digests()

    reopened = open_store()  # another client: same objects, same index
    assert reopened.store_id == store.store_id
    assert same(reopened.restore("t@2"), second)


def test_an_s3_store_needs_its_index_url(s3: S3Settings, postgres_url: str) -> None:
    with pytest.raises(IndexRequired, match="--index-url"):
        WeightStore.open(s3.url, s3=s3)
    with pytest.raises(InvalidInput, match="bucket"):
        WeightStore.open("s3://No_Such/bucket", index_url=postgres_url)
    with pytest.raises(UnsupportedLocation, match="gs://"):
        WeightStore.open("gs://bucket/x", index_url=postgres_url)
    no_bucket = dataclasses.replace(s3, bucket="no-such-bucket-here")
    with pytest.raises(StorageError, match="create the bucket"):
        WeightStore.open(no_bucket.url, index_url=postgres_url, s3=no_bucket)


def test_another_index_is_refused_and_changes_nothing(
    open_store: Callable[..., WeightStore], tmp_path: Path
) -> None:
    store = open_store()
    store.save("t", weights(1))
    before = sorted(info.key for info in store.objects.iterate())
    other = f"sqlite:///{tmp_path / 'other.db'}"

    with pytest.raises(StoreMismatch):
        open_store(index_url=other)

    assert sorted(info.key for info in store.objects.iterate()) == before
    assert store.objects.read_store_id() == store.store_id


def test_cli_on_s3_with_postgres(
    s3: S3Settings, s3_endpoint: str, postgres_url: str, tmp_path: Path
) -> None:
    runner = CliRunner()
    env = {
        "COLUMNS": "200",
        "WEIGHTSTORE_PATH": s3.url,
        "WEIGHTSTORE_INDEX_URL": postgres_url,
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_REGION": "us-east-1",
    }
    sd = weights(3)
    save_file(sd, str(tmp_path / "in.safetensors"))

    def run(*args: str, **extra: str | None) -> str:
        result = runner.invoke(app, list(args), env={**env, **extra})
        assert result.exit_code == 0, result.output
        return result.output

    assert s3.url in run("init")
    run("save", "cli", str(tmp_path / "in.safetensors"), "--step", "5")
    run("export", "cli@5", str(tmp_path / "out.safetensors"))
    assert same(load_file(str(tmp_path / "out.safetensors")), sd)
    run("verify")

    missing = runner.invoke(app, ["log"], env={**env, "WEIGHTSTORE_INDEX_URL": None})
    assert missing.exit_code == 2
    assert "--index-url" in missing.output


# ------------------------------------------------------------------------------------- faults


def _through(proxy: FaultProxy, s3: S3Settings, **changes: object) -> S3Settings:
    return dataclasses.replace(s3, endpoint_url=proxy.endpoint_url, **changes)  # type: ignore[arg-type]


def test_saves_and_restores_retry_through_faults(
    open_store: Callable[..., WeightStore], s3: S3Settings, s3_endpoint: str
) -> None:
    faults = random_faults(0.2, ("error", "reset", "reset_after"), seed=7)
    with FaultProxy(s3_endpoint, faults) as proxy:
        store = open_store(s3=_through(proxy, s3))
        saved = {step: weights(step) for step in range(1, 4)}
        for step, sd in saved.items():
            store.save("t", sd, step=step)
        for step, sd in saved.items():
            assert same(store.restore(f"t@{step}"), sd)
        assert store.verify().ok
        assert sum(proxy.counts.values()) > 5, proxy.counts  # the faults did happen


def test_timeouts_are_retried(
    open_store: Callable[..., WeightStore], s3: S3Settings, s3_endpoint: str
) -> None:
    faults = random_faults(0.1, ["delay"], methods=("PUT", "GET"), seed=3)
    with FaultProxy(s3_endpoint, faults, delay=1.5) as proxy:
        store = open_store(s3=_through(proxy, s3, read_timeout=0.5))
        sd = weights(4)
        store.save("t", sd)
        assert same(store.restore("t"), sd)
        assert proxy.counts.get("delay", 0) > 0


def test_a_save_that_cannot_reach_s3_fails_typed_and_commits_nothing(
    open_store: Callable[..., WeightStore], s3: S3Settings, s3_endpoint: str
) -> None:
    store = open_store()
    store.save("t", weights(1), step=1)
    every_put_fails = random_faults(1.0, ("error", "reset"), methods=("PUT", "POST"))
    with FaultProxy(s3_endpoint, every_put_fails) as proxy:
        broken = open_store(s3=_through(proxy, s3, retry=RetryPolicy(3, 0.01, 0.02)))
        with pytest.raises(TransientStorageError, match="failed 3 times"):
            broken.save("t", weights(2), step=2)
    assert [s.step for s in store.log("t")] == [1]
    assert store.gc(grace_seconds=0).objects_kept > 0
    assert store.verify().ok


def test_restores_never_return_damaged_bytes(
    open_store: Callable[..., WeightStore], s3: S3Settings, s3_endpoint: str
) -> None:
    store = open_store()
    sd = weights(5)
    store.save("t", sd)

    def corrupt_every_object(method: str, path: str) -> Fault:
        return "corrupt" if method == "GET" and "/objects/" in path else "pass"

    with FaultProxy(s3_endpoint, corrupt_every_object) as proxy:
        reader = open_store(s3=_through(proxy, s3, retry=RetryPolicy(2, 0.01, 0.02)))
        with pytest.raises((CorruptObject, StorageError)):
            reader.restore("t")
        assert proxy.counts["corrupt"] > 0
    assert same(store.restore("t"), sd)


def test_permanent_errors_are_not_retried(s3: S3Settings, s3_endpoint: str) -> None:
    calls: list[str] = []

    def plan(method: str, path: str) -> Fault:
        calls.append(method)
        return "pass"

    with FaultProxy(s3_endpoint, plan) as proxy:
        backend = S3Backend(_through(proxy, s3, bucket="no-such-bucket-here", prefix=""))
        with pytest.raises(StorageError, match="NoSuchBucket") as info:
            backend.put("k", b"x")
        assert not isinstance(info.value, TransientStorageError)
    assert calls == ["PUT"]


def test_multipart_uploads_survive_faults(s3: S3Settings, s3_endpoint: str) -> None:
    big = torch.randint(
        0, 256, (11 << 20,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    blob = big.numpy().tobytes()
    with FaultProxy(s3_endpoint, random_faults(0.3, seed=11)) as proxy:
        backend = S3Backend(_through(proxy, s3, multipart_threshold=5 << 20, part_size=5 << 20))
        backend.put("big", blob)
        assert backend.get("big") == blob
        assert backend.get_range("big", (5 << 20) - 3, 6) == blob[(5 << 20) - 3 : (5 << 20) + 3]
    direct = S3Backend(s3)
    direct.cleanup_temp(0)  # aborts uploads whose abort the faults cut off
    assert direct.cleanup_temp(0) == 0
    assert [info.key for info in direct.iterate()] == ["big"]


def test_an_answer_trickling_inside_the_read_timeout_is_cut_off(
    s3: S3Settings, s3_endpoint: str
) -> None:
    """64 bytes every 0.3 s never trips a 1 s read timeout: only the minimum rate ends the
    read (a transient error, retried, then typed) in bounded time; a normal read passes."""
    blob = bytes(range(256)) * 64  # 16 KiB: 256 pieces, 77 s at that pace
    S3Backend(s3).put("k", blob)

    def trickle_gets(method: str, path: str) -> Fault:
        return "trickle" if method == "GET" else "pass"

    with FaultProxy(s3_endpoint, trickle_gets, delay=0.3) as proxy:
        slow = S3Backend(
            _through(
                proxy, s3, read_timeout=1.0, min_read_rate=4096, retry=RetryPolicy(2, 0.01, 0.02)
            )
        )
        start = time.monotonic()
        with pytest.raises(TransientStorageError, match="slower than 4096 bytes/s"):
            slow.get("k")
        assert time.monotonic() - start < 20  # two tries of about 5 s, not 2 x 77 s
        assert proxy.counts["trickle"] == 2
    assert S3Backend(s3).get("k") == blob
