"""An object backend on an S3-compatible service (AWS S3, MinIO, moto), through boto3.

Layout under ``s3://bucket/prefix``: objects at ``prefix/objects/<key>``, the store's id at
``prefix/store-id``, outside the key space. An S3 PUT is atomic (readers see the old object
or the new one, never part), so no temp names are needed; objects of at least
``multipart_threshold`` bytes go up in parts, and a failed upload is aborted (``cleanup_temp``
aborts those a killed writer left). Every request is retried with backoff on transient
failures (5xx, throttling, timeouts, reset connections: ``TransientStorageError`` once spent)
and never on permanent ones (``ObjectNotFound``, ``StorageError``). boto3's own retries are
off, so that one policy, :class:`~weightstore.objects.retry.RetryPolicy`, decides.
docs/design.md ("S3 client") has the measurements behind choosing boto3.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    FlexibleChecksumError,
    HTTPClientError,
    IncompleteReadError,
)

from weightstore.errors import ObjectNotFound, StorageError, TransientStorageError
from weightstore.objects.base import (
    ObjectBackend,
    ObjectInfo,
    byte_view,
    validate_key,
    validate_range,
)
from weightstore.objects.retry import call_with_retries
from weightstore.objects.s3config import S3Settings
from weightstore.rates import MinRate

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ListObjectsV2OutputTypeDef

__all__ = ["S3Backend"]

T = TypeVar("T")

_STORE_ID = "store-id"
_OBJECTS = "objects/"
# Answers that may differ on a second try: throttling and server-side failures.
_TRANSIENT_STATUS = {429, 500, 502, 503, 504}
_TRANSIENT_CODES = {
    "SlowDown",
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "ConditionalRequestConflict",  # a concurrent conditional write on the same key
}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


class S3Backend(ObjectBackend):
    """Objects in an S3-compatible bucket under a prefix. Safe to share between threads."""

    def __init__(self, settings: S3Settings, *, client: S3Client | None = None) -> None:
        self.settings = settings
        root = f"{settings.prefix}/" if settings.prefix else ""
        self._root = root
        self._objects = root + _OBJECTS
        self._owns_client = client is None
        self._client: S3Client = client or _make_client(settings)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"S3Backend({self.describe()!r})"

    # --------------------------------------------------------------------------- plumbing

    def _name(self, key: str) -> str:
        return self._objects + validate_key(key)

    def _call(self, what: str, call: Callable[[], T], *, key: str | None = None) -> T:
        """``call()`` with retries, botocore's errors translated into weightstore's."""

        def attempt() -> T:
            try:
                return call()
            except ClientError as e:
                raise self._translate(e, what, key) from e
            except (ConnectionError, HTTPClientError, IncompleteReadError) as e:
                raise TransientStorageError(f"{what}: {e}") from e
            except FlexibleChecksumError as e:  # bytes damaged in transit: fetch them again
                raise TransientStorageError(f"{what}: {e}") from e
            except BotoCoreError as e:  # no credentials, bad parameters: permanent
                raise StorageError(f"{what} on {self.describe()}: {e}") from e

        return call_with_retries(attempt, self.settings.retry, what=what)

    def _translate(
        self, e: ClientError, what: str, key: str | None
    ) -> ObjectNotFound | StorageError:
        code = str(e.response.get("Error", {}).get("Code", ""))
        status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if key is not None and (code in _MISSING_CODES or status == 404) and code != "NoSuchBucket":
            return ObjectNotFound(f"object {key!r} not found in {self.describe()}")
        if status in _TRANSIENT_STATUS or code in _TRANSIENT_CODES:
            return TransientStorageError(f"{what}: {code or status} from the S3 service")
        hint = {
            "NoSuchBucket": ": create the bucket first",
            "AccessDenied": ": check the credentials (AWS_ACCESS_KEY_ID, ...)",
            "InvalidAccessKeyId": ": check AWS_ACCESS_KEY_ID",
            "SignatureDoesNotMatch": ": check AWS_SECRET_ACCESS_KEY",
        }.get(code, "")
        return StorageError(f"{what} on {self.describe()} failed: {code or status}{hint}")

    def _map(self, fn: Callable[[str], T], items: Iterable[str]) -> list[T]:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.settings.max_connections, "weightstore-s3")
            pool = self._pool
        return list(pool.map(fn, items))

    # ----------------------------------------------------------------------------- writing

    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        name = self._name(key)
        with byte_view(data) as view:
            blob = view.tobytes()  # the stored object must not follow later changes to data
        if len(blob) >= self.settings.multipart_threshold:
            self._put_multipart(key, name, blob)
            return
        self._call(
            f"PUT {name}",
            lambda: self._client.put_object(Bucket=self.settings.bucket, Key=name, Body=blob),
        )

    def _put_multipart(self, key: str, name: str, blob: bytes) -> None:
        bucket, size = self.settings.bucket, self.settings.part_size
        upload = self._call(
            f"start upload of {name}",
            lambda: self._client.create_multipart_upload(Bucket=bucket, Key=name),
        )["UploadId"]
        try:
            parts = []
            for number in range(1, math.ceil(len(blob) / size) + 1):
                part = blob[(number - 1) * size : number * size]
                answer = self._call(
                    f"upload part {number} of {name}",
                    functools.partial(
                        self._client.upload_part,
                        Bucket=bucket,
                        Key=name,
                        UploadId=upload,
                        PartNumber=number,
                        Body=part,
                    ),
                )
                parts.append({"PartNumber": number, "ETag": answer["ETag"]})
            self._complete(key, name, upload, parts, len(blob))
        except BaseException:
            with contextlib.suppress(ClientError, BotoCoreError):  # else cleanup_temp does
                self._client.abort_multipart_upload(Bucket=bucket, Key=name, UploadId=upload)
            raise

    def _complete(self, key: str, name: str, upload: str, parts: list[Any], size: int) -> None:
        bucket = self.settings.bucket
        try:
            self._call(
                f"complete upload of {name}",
                lambda: self._client.complete_multipart_upload(
                    Bucket=bucket, Key=name, UploadId=upload, MultipartUpload={"Parts": parts}
                ),
                key=key,
            )
        except ObjectNotFound:
            # NoSuchUpload: a retry after the server completed the upload but the answer was
            # lost. The object is there then, whole: S3 completes atomically.
            if self.stat(key).size != size:
                raise StorageError(f"upload of {name} vanished before completing") from None

    def put_many(self, items: Sequence[tuple[str, bytes | bytearray | memoryview]]) -> None:
        checked = [(validate_key(key), data) for key, data in items]
        by_key = dict(checked)
        self._map(lambda k: self.put(k, by_key[k]), list(by_key))

    def delete(self, key: str) -> bool:
        name = self._name(key)
        # S3's DELETE succeeds whether or not the key exists: ask first to report which.
        existed = self.exists(key)
        self._call(
            f"DELETE {name}",
            lambda: self._client.delete_object(Bucket=self.settings.bucket, Key=name),
        )
        return existed

    def write_store_id(self, store_id: str) -> None:
        name, body = self._root + _STORE_ID, (store_id + "\n").encode()
        self._call(
            f"PUT {name}",
            lambda: self._client.put_object(Bucket=self.settings.bucket, Key=name, Body=body),
        )

    def cleanup_temp(self, older_than_seconds: float = 3600) -> int:
        bucket, cutoff, aborted = self.settings.bucket, time.time() - older_than_seconds, 0
        answer = self._call(
            "list unfinished uploads",
            lambda: self._client.list_multipart_uploads(Bucket=bucket, Prefix=self._objects),
        )
        for upload in answer.get("Uploads", []):
            if upload["Initiated"].timestamp() < cutoff:
                self._call(
                    f"abort upload of {upload['Key']}",
                    functools.partial(
                        self._client.abort_multipart_upload,
                        Bucket=bucket,
                        Key=upload["Key"],
                        UploadId=upload["UploadId"],
                    ),
                )
                aborted += 1
        return aborted

    # ----------------------------------------------------------------------------- reading

    def _read(self, key: str, name: str, range_header: str | None = None) -> bytes:
        bucket = self.settings.bucket

        def call() -> bytes:
            if range_header is None:
                answer = self._client.get_object(Bucket=bucket, Key=name)
            else:
                answer = self._client.get_object(Bucket=bucket, Key=name, Range=range_header)
            body = self._body(answer, name)
            if len(body) != answer["ContentLength"]:  # a connection cut mid-body
                raise TransientStorageError(
                    f"GET {name}: {len(body)} of {answer['ContentLength']} bytes arrived"
                )
            return body

        return self._call(f"GET {name}", call, key=key)

    def _body(self, answer: Any, name: str) -> bytes:
        """The answer's body as fast as ``rates.MinRate`` asks (``read_timeout`` its grace,
        ``min_read_rate`` its rate), else a transient error. Read a piece at a time with
        urllib3's ``read1`` (at most one read of the socket, itself bounded by
        ``read_timeout``), so the rule is checked between pieces: botocore's ``read()`` would
        wait for the whole body however slowly it came."""
        size, rate = answer["ContentLength"], self.settings.min_read_rate
        read1 = getattr(getattr(answer["Body"], "_raw_stream", None), "read1", None)
        if rate <= 0 or read1 is None:  # no minimum, or a urllib3 without read1
            return bytes(answer["Body"].read())
        rule = MinRate(self.settings.read_timeout, rate, time.monotonic())
        parts: list[bytes] = []
        got = 0
        while got < size:
            piece = read1(1 << 20)
            if not piece:
                break  # cut short: the caller's length check says so
            parts.append(piece)
            got += len(piece)
            if got < size and rule.left(got, time.monotonic()) < 0:
                answer["Body"].close()
                raise TransientStorageError(
                    f"GET {name}: {got} of {size} bytes arrived in "
                    f"{time.monotonic() - rule.start:.1f} s (slower than {rate:g} bytes/s)"
                )
        return b"".join(parts)

    def get(self, key: str) -> bytes:
        return self._read(key, self._name(key))

    def get_range(self, key: str, start: int, length: int) -> bytes:
        name = self._name(key)
        start, length = validate_range(start, length)
        if length == 0:
            self.stat(key)  # a missing object is still an error
            return b""
        try:
            return self._read(key, name, f"bytes={start}-{start + length - 1}")
        except StorageError as e:
            if _code(e.__cause__) == "InvalidRange":  # start at or past the end
                return b""
            raise

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except ObjectNotFound:
            return False
        return True

    def exists_many(self, keys: Iterable[str]) -> set[str]:
        checked = sorted({validate_key(k) for k in keys})
        present = self._map(self.exists, checked)
        return {k for k, there in zip(checked, present, strict=True) if there}

    def stat(self, key: str) -> ObjectInfo:
        name = self._name(key)
        answer = self._call(
            f"HEAD {name}",
            lambda: self._client.head_object(Bucket=self.settings.bucket, Key=name),
            key=key,
        )
        return ObjectInfo(key, answer["ContentLength"], _seconds(answer["LastModified"]))

    def iterate(self) -> Iterator[ObjectInfo]:
        prefix = self._objects
        token: str | None = None
        while True:
            page = self._call(f"LIST {prefix}", functools.partial(self._list, token))
            for item in page.get("Contents", []):
                key = item["Key"][len(prefix) :]
                if "/" not in key:
                    yield ObjectInfo(key, item["Size"], _seconds(item["LastModified"]))
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    def read_store_id(self) -> str | None:
        name = self._root + _STORE_ID
        try:
            body = self._read(_STORE_ID, name)
        except ObjectNotFound:
            return None
        return body.decode().strip() or None

    def is_empty(self) -> bool:
        answer = self._call(f"LIST {self._objects}", functools.partial(self._list, None, 1))
        return not answer.get("Contents")

    def _list(self, token: str | None, max_keys: int = 1000) -> ListObjectsV2OutputTypeDef:
        """One page of the object listing, from ``token`` on."""
        bucket, prefix = self.settings.bucket, self._objects
        if token:
            return self._client.list_objects_v2(
                Bucket=bucket, Prefix=prefix, MaxKeys=max_keys, ContinuationToken=token
            )
        return self._client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=max_keys)

    def describe(self) -> str:
        return self.settings.url

    def close(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        if self._owns_client:
            self._client.close()  # its pooled connections; a new call would open new ones


def _code(error: BaseException | None) -> str:
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", ""))
    return ""


def _seconds(stamp: Any) -> float:
    # HEAD answers in whole seconds (HTTP dates), listings in milliseconds: agree on seconds.
    return float(math.floor(stamp.timestamp()))


def _make_client(settings: S3Settings) -> S3Client:
    session = boto3.session.Session(
        aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=settings.secret_access_key,
        aws_session_token=settings.session_token,
        region_name=settings.region or ("us-east-1" if settings.endpoint_url else None),
    )
    config = Config(
        retries={"total_max_attempts": 1, "mode": "standard"},  # ours decide, see the docstring
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        max_pool_connections=settings.max_connections,
        s3={"addressing_style": "path"} if settings.endpoint_url else None,
    )
    client: S3Client = session.client("s3", endpoint_url=settings.endpoint_url, config=config)
    return client
