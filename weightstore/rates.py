"""The minimum-rate rule for bodies that arrive over a network (Apache mod_reqtimeout's): a
body gets ``grace`` seconds, plus ``1 / rate`` seconds for each byte that has arrived; past
that it is too slow. Per-read timeouts alone let a peer trickle a byte at a time for ever.
One rule for request bodies (the server), S3 answers and the remote client's answers."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class MinRate:
    """The rule for one body, from ``start`` on a clock the caller names (``rate`` 0: none)."""

    grace: float
    rate: float
    start: float

    def left(self, received: int, now: float) -> float:
        """Seconds until the body is too slow, having ``received`` bytes at ``now``."""
        if self.rate <= 0:
            return math.inf
        return self.start + self.grace + received / self.rate - now
