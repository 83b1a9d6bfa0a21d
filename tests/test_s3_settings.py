"""S3 locations and settings, and the retry policy: no server needed."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from weightstore.errors import InvalidInput, ObjectNotFound, StorageError, TransientStorageError
from weightstore.location import object_url
from weightstore.objects.retry import RetryPolicy, call_with_retries
from weightstore.objects.s3config import S3Settings, parse_s3_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3://bucket", ("bucket", "")),
        ("s3://bucket/", ("bucket", "")),
        ("s3://my.bucket-1/a/b/", ("my.bucket-1", "a/b")),
        ("s3://bkt/runs/store=2", ("bkt", "runs/store=2")),
    ],
)
def test_s3_urls_parse(url: str, expected: tuple[str, str]) -> None:
    assert parse_s3_url(url) == expected
    assert object_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "s3://",
        "s3://B",
        "s3://ab",
        "s3://Upper/x",
        "s3://a..b/x",
        "s3://bkt/../x",
        "s3://bkt/a//b",
        "s3://bkt/./x",
        "s3://bkt/a b",
        "http://bkt/x",
        "s3://-bkt/x",
    ],
)
def test_bad_s3_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidInput):
        parse_s3_url(url)


def test_settings_come_from_the_aws_variables_when_asked() -> None:
    env = {
        "AWS_ENDPOINT_URL": "http://generic:9000",
        "AWS_ENDPOINT_URL_S3": "http://minio:9000",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "id",
        "AWS_SECRET_ACCESS_KEY": "secret",
    }
    s = S3Settings.from_environ("s3://bkt/p", env)
    assert (s.bucket, s.prefix, s.endpoint_url, s.region) == (
        "bkt",
        "p",
        "http://minio:9000",
        "eu-west-1",
    )
    assert (s.access_key_id, s.secret_access_key, s.session_token) == ("id", "secret", None)
    assert "secret" not in repr(s)
    assert S3Settings.from_environ("s3://bkt", {}).endpoint_url is None
    assert s.with_location("s3://other/q").url == "s3://other/q"


def test_settings_refuse_parts_s3_cannot_take() -> None:
    with pytest.raises(InvalidInput):
        S3Settings("bkt", part_size=1 << 20)
    with pytest.raises(InvalidInput):
        S3Settings("bkt", multipart_threshold=5 << 20, part_size=8 << 20)
    with pytest.raises(InvalidInput):
        RetryPolicy(attempts=0)


def test_transient_failures_are_retried_with_growing_capped_delays() -> None:
    calls: list[int] = []
    sleeps: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise TransientStorageError("503")
        return "ok"

    policy = RetryPolicy(attempts=5, base_delay=0.5, max_delay=1.0)
    assert call_with_retries(flaky, policy, what="GET x", sleep=sleeps.append) == "ok"
    assert len(calls) == 4
    assert len(sleeps) == 3 and all(0 <= d <= min(1.0, 0.5 * 2**i) for i, d in enumerate(sleeps))


def test_retries_end_with_a_typed_error_naming_the_attempts() -> None:
    calls = []

    def down() -> None:
        calls.append(1)
        raise TransientStorageError("connection reset")

    with pytest.raises(TransientStorageError, match=r"GET x failed 3 times.*connection reset"):
        call_with_retries(down, RetryPolicy(3, 0, 0), what="GET x", sleep=lambda _: None)
    assert len(calls) == 3


@pytest.mark.parametrize("error", [StorageError("403"), ObjectNotFound("gone"), ValueError("bug")])
def test_permanent_failures_are_not_retried(error: Exception) -> None:
    calls = []

    def fails() -> None:
        calls.append(1)
        raise error

    with pytest.raises(type(error)):
        call_with_retries(fails, RetryPolicy(5, 0, 0), what="x", sleep=lambda _: None)
    assert len(calls) == 1


@given(retry=st.integers(0, 40), base=st.floats(0, 10), cap=st.floats(0, 10))
def test_delays_never_exceed_the_cap(retry: int, base: float, cap: float) -> None:
    delay = RetryPolicy(2, base, cap).delay(retry, random.Random(retry))
    assert 0 <= delay <= cap
