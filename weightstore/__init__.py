"""weightstore: versioned, content-addressed, delta-compressed snapshots of neural-network weights.

from weightstore import WeightStore
store = WeightStore.open("runs/store")
store.save("task-a", model, step=100, tags=["best"])
store.restore("task-a@100", into=model)
"""

from weightstore.errors import WeightstoreError
from weightstore.loader import SwapReport, TaskLoader
from weightstore.settings import CodecSettings, StoreSettings
from weightstore.store import WeightStore
from weightstore.types import Diff, GcResult, Snapshot, StoreStats, TensorEntry, VerifyResult

__all__ = [
    "CodecSettings",
    "Diff",
    "GcResult",
    "Snapshot",
    "StoreSettings",
    "StoreStats",
    "SwapReport",
    "TaskLoader",
    "TensorEntry",
    "VerifyResult",
    "WeightStore",
    "WeightstoreError",
]
