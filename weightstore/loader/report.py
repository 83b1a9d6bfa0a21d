"""What a swap cost (:class:`SwapReport`); what the tiers hold (:class:`LoaderStats`)."""

from __future__ import annotations

from dataclasses import dataclass

from weightstore.loader.cache import TierStats


@dataclass(frozen=True)
class SwapReport:
    """One ``activate``: what moved, from which tier, how fast.

    ``tensors_total``: snapshot tensors copied into the target (the names both have);
    ``tensors_changed``: those whose digest differs from what the target held; ``tensors_moved``:
    copies made (tied weights and repeated digests count once per piece of target memory).
    ``bytes_*``: bytes written into the target, by the tier they came from;
    ``bytes_delta_in_place``: those decoded from what the target itself held (only the deltas
    above it read: ``delta_bytes_read`` compressed bytes for them). ``gb_per_s``:
    bytes written per second of wall time (10^9 bytes). ``verified``: every byte that came
    from the store (now or when it was cached) had its digest re-derived.
    """

    ref: str
    snapshot_id: str
    tensors_total: int
    tensors_changed: int
    tensors_moved: int
    bytes_gpu_cache: int
    bytes_host_cache: int
    bytes_store: int
    wall_ms: float
    gb_per_s: float
    verified: bool
    bytes_delta_in_place: int = 0
    delta_bytes_read: int = 0

    @property
    def bytes_moved(self) -> int:
        return (
            self.bytes_gpu_cache
            + self.bytes_host_cache
            + self.bytes_store
            + self.bytes_delta_in_place
        )


@dataclass(frozen=True)
class LoaderStats:
    """Per tier: bytes held, their peak, hits, misses, evictions; and the swaps so far."""

    gpu_cache: TierStats
    host_cache: TierStats
    staging_budget: int
    staging_peak: int
    swaps: int
    failed_swaps: int
    bytes_moved: int
