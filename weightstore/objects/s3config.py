"""Where an S3-compatible object location is and how to reach it: ``S3Settings``.

Kept apart from the backend so that a location can be parsed and checked (and a missing
client library reported by name) without importing boto3. Nothing reads the environment at
import: :meth:`S3Settings.from_environ` is called when a store is opened.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from weightstore.errors import InvalidInput
from weightstore.objects.retry import RetryPolicy

__all__ = ["ENV_VARS", "S3Settings", "parse_s3_url"]

# S3's bucket naming rules (also MinIO's): 3-63 of lowercase letters, digits, '.', '-'.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=+-]{0,127}")


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")``; raise ``InvalidInput``."""
    if not isinstance(url, str) or not url.startswith("s3://"):
        raise InvalidInput(f"not an S3 location: {url!r} (expected s3://bucket/prefix)")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise InvalidInput(
            f"invalid bucket name {bucket!r} in {url!r}: 3 to 63 lowercase letters, digits, "
            "'.' or '-'"
        )
    segments = prefix.strip("/").split("/") if prefix.strip("/") else []
    for segment in segments:
        if not _SEGMENT.fullmatch(segment):
            raise InvalidInput(
                f"invalid prefix {prefix!r} in {url!r}: each '/'-separated part must be "
                "letters, digits, '._=+-', starting with a letter or digit"
            )
    return bucket, "/".join(segments)


@dataclass(frozen=True)
class S3Settings:
    """How to reach an S3-compatible service and where in it the store's objects live.

    ``endpoint_url``: the service (None: AWS itself; MinIO or moto give theirs).
    ``region``, ``access_key_id``, ``secret_access_key``, ``session_token``: None leaves
    them to the client's own lookup (config files, instance roles).
    ``multipart_threshold`` and ``part_size``: objects of at least the threshold are uploaded
    in parts of ``part_size`` bytes (S3's minimum part is 5 MiB).
    ``retry``: attempts and backoff on transient failures; ``connect_timeout`` and
    ``read_timeout`` bound each request (seconds), each read of an answer; ``min_read_rate``:
    past ``read_timeout`` seconds an answer's body must average that many bytes a second (0:
    no minimum), so an endpoint trickling bytes inside the read timeout cannot hold a read for
    ever (a transient error, retried); ``max_connections``: pooled connections, and threads
    for batched calls.
    """

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    multipart_threshold: int = 64 * 1024 * 1024
    part_size: int = 16 * 1024 * 1024
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    max_connections: int = 16
    min_read_rate: float = 64 * 1024

    def __post_init__(self) -> None:
        parse_s3_url(self.url)  # checks bucket and prefix
        if self.part_size < 5 * 1024 * 1024 or self.multipart_threshold < self.part_size:
            raise InvalidInput(
                "S3 parts must be at least 5 MiB and multipart_threshold at least part_size, "
                f"got part_size={self.part_size} multipart_threshold={self.multipart_threshold}"
            )
        if (
            self.max_connections < 1
            or self.connect_timeout <= 0
            or self.read_timeout <= 0
            or self.min_read_rate < 0
        ):
            raise InvalidInput(
                "max_connections must be >= 1, timeouts positive and min_read_rate not "
                f"negative, got {self.max_connections}, {self.connect_timeout}, "
                f"{self.read_timeout}, {self.min_read_rate}"
            )

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    @classmethod
    def from_url(cls, url: str, **options: object) -> S3Settings:
        """Settings for ``s3://bucket/prefix`` with ``options`` (fields of this class)."""
        bucket, prefix = parse_s3_url(url)
        return cls(bucket, prefix, **options)  # type: ignore[arg-type]

    @classmethod
    def from_environ(cls, url: str, environ: Mapping[str, str] | None = None) -> S3Settings:
        """Settings for ``url`` from the usual AWS variables: ``AWS_ENDPOINT_URL_S3`` or
        ``AWS_ENDPOINT_URL``, ``AWS_REGION`` or ``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID``,
        ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN`` (``environ`` defaults to the process
        environment, read now)."""
        env = os.environ if environ is None else environ

        def var(*names: str) -> str | None:
            return next((env[n] for n in names if env.get(n)), None)

        return cls.from_url(
            url,
            endpoint_url=var("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
            region=var("AWS_REGION", "AWS_DEFAULT_REGION"),
            access_key_id=var("AWS_ACCESS_KEY_ID"),
            secret_access_key=var("AWS_SECRET_ACCESS_KEY"),
            session_token=var("AWS_SESSION_TOKEN"),
        )

    def with_location(self, url: str) -> S3Settings:
        """These settings for another ``s3://bucket/prefix``."""
        bucket, prefix = parse_s3_url(url)
        return replace(self, bucket=bucket, prefix=prefix)


#: The environment variables :meth:`S3Settings.from_environ` reads.
ENV_VARS = (
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)
