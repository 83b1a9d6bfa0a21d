"""The task loader: swaps task snapshots into a live model, from GPU and host caches or the
store, and reports what each swap cost."""

from weightstore.loader.budget import parse_bytes
from weightstore.loader.cache import TierStats
from weightstore.loader.core import TaskLoader
from weightstore.loader.report import LoaderStats, SwapReport

__all__ = ["LoaderStats", "SwapReport", "TaskLoader", "TierStats", "parse_bytes"]
