"""weightstore: versioned, content-addressed, delta-compressed snapshots of neural-network weights.

from weightstore import WeightStore
store = WeightStore.open("runs/store")
store.save("task-a", model, step=100, tags=["best"])
store.restore("task-a@100", into=model)

The names below are imported on first use (module ``__getattr__``), so that importing a light
part of the package (the CLI's listing commands, the index) does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from weightstore.errors import WeightstoreError
    from weightstore.loader import SwapReport, TaskLoader
    from weightstore.settings import CodecSettings, StoreSettings
    from weightstore.store import WeightStore
    from weightstore.types import (
        Diff,
        GcResult,
        Snapshot,
        StoreStats,
        TensorEntry,
        VerifyResult,
    )

_EXPORTS = {
    "CodecSettings": "weightstore.settings",
    "Diff": "weightstore.types",
    "GcResult": "weightstore.types",
    "Snapshot": "weightstore.types",
    "StoreSettings": "weightstore.settings",
    "StoreStats": "weightstore.types",
    "SwapReport": "weightstore.loader",
    "TaskLoader": "weightstore.loader",
    "TensorEntry": "weightstore.types",
    "VerifyResult": "weightstore.types",
    "WeightStore": "weightstore.store",
    "WeightstoreError": "weightstore.errors",
}

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


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import version

        globals()[name] = found = version("weightstore")
        return found
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'weightstore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
