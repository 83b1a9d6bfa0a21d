"""The ObjectBackend conformance suite (:mod:`weightstore.testing.conformance`) run against
every backend: local folder, memory, S3 on moto's server, and the wrappers around them."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from weightstore.errors import StorageError, TransientStorageError
from weightstore.objects import (
    LocalBackend,
    MemoryBackend,
    ObjectBackend,
    RetryingBackend,
    WrappedBackend,
)
from weightstore.objects.retry import RetryPolicy
from weightstore.objects.s3config import S3Settings
from weightstore.testing.conformance import KEY, ObjectBackendContract
from weightstore.testing.faults import FaultBackend

# -- the backends ---------------------------------------------------------------------------


class TestLocal(ObjectBackendContract):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[ObjectBackend]:
        with LocalBackend(tmp_path / "store") as store:
            yield store

    def description(self, backend: ObjectBackend) -> str:
        assert isinstance(backend, LocalBackend) and backend.root.is_absolute()
        return re.escape(f"local:{backend.root}")

    def raw_read(self, backend: ObjectBackend, key: str) -> bytes | None:
        assert isinstance(backend, LocalBackend)
        path = backend.root / key[:2] / key
        return path.read_bytes() if path.exists() else None

    def raw_write(self, backend: ObjectBackend, key: str, data: bytes) -> None:
        assert isinstance(backend, LocalBackend)
        path = backend.root / key[:2] / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def age_stamp(self, store: ObjectBackend, key: str) -> float:
        # Backdating the real file beats sleeping through the file system's clock granularity.
        assert isinstance(store, LocalBackend)
        old = time.time() - 3600
        os.utime(store.root / key[:2] / key, (old, old))
        return store.stat(key).modified

    @pytest.mark.timeout(30)  # the bug this guards against blocked forever
    @pytest.mark.parametrize("make", [os.mkfifo, os.mkdir])
    def test_a_store_id_that_is_not_a_regular_file_is_refused_without_blocking(
        self, backend: ObjectBackend, make: Callable[[Path], None]
    ) -> None:
        assert isinstance(backend, LocalBackend)
        backend.write_store_id("0123abcd")
        path = backend.root / "store-id"
        path.unlink()
        make(path)  # a FIFO: opening it for reading without O_NONBLOCK waits for a writer

        with pytest.raises(StorageError, match="store-id is not a regular file"):
            backend.read_store_id()


class TestMemory(ObjectBackendContract):
    @pytest.fixture
    def backend(self) -> Iterator[ObjectBackend]:
        with MemoryBackend() as store:
            yield store

    def description(self, backend: ObjectBackend) -> str:
        return "memory"

    # The memory backend has no outside: its dict is the oracle.
    def raw_read(self, backend: ObjectBackend, key: str) -> bytes | None:
        assert isinstance(backend, MemoryBackend)
        entry = backend._objects.get(key)  # noqa: SLF001
        return None if entry is None else entry[0]

    def raw_write(self, backend: ObjectBackend, key: str, data: bytes) -> None:
        assert isinstance(backend, MemoryBackend)
        backend._objects[key] = (bytes(data), time.time())  # noqa: SLF001


class TestS3(ObjectBackendContract):
    """On moto's standalone server (conftest's ``s3_url``: a fresh bucket per test)."""

    stamp_granularity = 1.0  # S3 stamps in whole seconds

    @pytest.fixture(autouse=True)
    def _raw_client(self, s3_url: str, s3_endpoint: str) -> None:
        import boto3

        self.client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
        self.bucket, _, prefix = s3_url.removeprefix("s3://").partition("/")
        self.objects = f"{prefix}/objects/"  # the layout documented in weightstore.objects.s3

    def raw_read(self, backend: ObjectBackend, key: str) -> bytes | None:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self.objects + key)
        except self.client.exceptions.NoSuchKey:
            return None
        return bytes(answer["Body"].read())

    def raw_write(self, backend: ObjectBackend, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.objects + key, Body=data)

    @pytest.fixture
    def backend(self, s3_url: str, s3_endpoint: str) -> Iterator[ObjectBackend]:
        from weightstore.objects.s3 import S3Backend

        # A 5 MiB threshold (S3's smallest part) sends BIG up in parts.
        settings = S3Settings.from_url(
            s3_url, endpoint_url=s3_endpoint, multipart_threshold=5 << 20, part_size=5 << 20
        )
        with S3Backend(settings) as store:
            yield store

    def description(self, backend: ObjectBackend) -> str:
        return r"s3://ws-test-[0-9a-f]{16}/store"


class TestWrappedLocal(TestLocal):
    """A fault wrapper with no hooks over a retry wrapper over the local backend keeps the
    contract; the oracles and hooks reach the local backend with ``unwrap()``."""

    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[ObjectBackend]:
        with FaultBackend(RetryingBackend(LocalBackend(tmp_path / "store"))) as store:
            yield store

    def description(self, backend: ObjectBackend) -> str:
        assert isinstance(backend, WrappedBackend)
        return super().description(backend.unwrap())

    def raw_read(self, backend: ObjectBackend, key: str) -> bytes | None:
        assert isinstance(backend, WrappedBackend)
        return super().raw_read(backend.unwrap(), key)

    def raw_write(self, backend: ObjectBackend, key: str, data: bytes) -> None:
        assert isinstance(backend, WrappedBackend)
        super().raw_write(backend.unwrap(), key, data)

    def age_stamp(self, store: ObjectBackend, key: str) -> float:
        assert isinstance(store, WrappedBackend)
        return super().age_stamp(store.unwrap(), key)

    @pytest.mark.parametrize("make", [os.mkfifo])
    def test_a_store_id_that_is_not_a_regular_file_is_refused_without_blocking(
        self, backend: ObjectBackend, make: Callable[[Path], None]
    ) -> None:
        assert isinstance(backend, WrappedBackend)
        super().test_a_store_id_that_is_not_a_regular_file_is_refused_without_blocking(
            backend.unwrap(), make
        )


def test_retrying_backend_retries_transient_failures_only(tmp_path: Path) -> None:
    failures = {"put": 2, "get": 1}
    calls: list[str] = []

    def flaky(op: str, key: str | None) -> None:
        calls.append(op)
        if failures.get(op, 0) > 0:
            failures[op] -= 1
            raise TransientStorageError(f"{op} timed out")

    inner = FaultBackend(LocalBackend(tmp_path / "store", fsync=False), before=flaky)
    slept: list[float] = []
    backend = RetryingBackend(inner, RetryPolicy(attempts=3, base_delay=0.01), sleep=slept.append)
    backend.put(KEY, b"data")
    assert backend.get(KEY) == b"data"
    assert calls == ["put", "put", "put", "get", "get"]
    assert len(slept) == 3
    inner.before = lambda op, key: (_ for _ in ()).throw(StorageError("disk gone"))
    with pytest.raises(StorageError, match="disk gone"):
        backend.get(KEY)
    assert len(slept) == 3, "a permanent failure is not retried"
    failures["get"] = 5
    inner.before = flaky
    with pytest.raises(TransientStorageError):
        backend.get(KEY)
    assert backend.unwrap() is inner.inner


def test_fault_hooks_see_every_call_and_can_be_disarmed(tmp_path: Path) -> None:
    seen: list[tuple[str, str | None]] = []
    backend = FaultBackend(
        LocalBackend(tmp_path / "store", fsync=False), after=lambda op, key: seen.append((op, key))
    )
    backend.put_many([(KEY, b"a")])
    backend.get_range(KEY, 0, 1)
    list(backend.iterate())
    assert seen == [("put", KEY), ("get_range", KEY), ("iterate", None)]
    backend.disarm()
    backend.delete(KEY)
    assert len(seen) == 3
