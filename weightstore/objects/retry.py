"""Retries with capped, jittered exponential backoff for calls that fail transiently.

Only :class:`~weightstore.errors.TransientStorageError` is retried; every other error (a
missing object, bad credentials, a bad request) is raised at once, since trying again cannot
change the answer and would only delay it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from weightstore.errors import InvalidInput, TransientStorageError

__all__ = ["RetryPolicy", "call_with_retries"]

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts``: calls in all (1: no retry). The n-th retry waits a random time up to
    ``min(max_delay, base_delay * 2**n)`` seconds ("full jitter"), so many clients that failed
    together do not retry together."""

    attempts: int = 6
    base_delay: float = 0.1
    max_delay: float = 5.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_delay < 0 or self.max_delay < 0:
            raise InvalidInput(
                f"retry policy needs attempts >= 1 and non-negative delays, got {self}"
            )

    def delay(self, retry: int, rng: random.Random) -> float:
        return rng.uniform(0.0, min(self.max_delay, self.base_delay * 2.0**retry))


def call_with_retries(
    call: Callable[[], T],
    policy: RetryPolicy,
    *,
    what: str,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> T:
    """Return ``call()``, calling it again after a transient failure while attempts are left.

    The last transient failure is re-raised with ``what`` and the attempt count in its message.
    """
    rng = rng or random.Random()
    for attempt in range(policy.attempts):
        try:
            return call()
        except TransientStorageError as e:
            if attempt + 1 >= policy.attempts:
                raise TransientStorageError(
                    f"{what} failed {policy.attempts} times, the last with: {e}; "
                    "the storage service may be overloaded or unreachable, try again later"
                ) from e
            sleep(policy.delay(attempt, rng))
    raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover
