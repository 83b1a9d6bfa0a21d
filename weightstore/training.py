"""Training state beside the weights: optimizer, LR scheduler and RNG states, and back.

A checkpoint that can be resumed holds more than weights. Here:

- the optimizer's tensors (Adam's moments, step counters) become entries named
  ``::train/optimizer/<param index>/<key>``: stored like weights (deduplicated, delta-encoded
  against the previous checkpoint's entry of the same name), never returned as weights;
- everything else of ``optimizer.state_dict()`` (param groups, scalar state), the scheduler's
  ``state_dict()`` and the non-tensor parts of the RNG states go into the snapshot's metadata
  under ``weightstore.training``, as JSON (floats round-trip exactly);
- RNG states: torch's CPU generator and every CUDA device's (``uint8`` tensors), numpy's global
  generator (its key as a ``uint32`` entry), Python's ``random``.

:func:`capture_training` builds both parts; :func:`load_training` puts them back with
``load_state_dict`` / ``set_rng_state``. Nothing here writes or reads storage.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from weightstore.errors import InvalidInput
from weightstore.types import (
    CHECKPOINT_PREFIX,
    OPTIMIZER_PREFIX,
    RNG_PREFIX,
    TRAIN_PREFIX,
    TRAINING_KEY,
    Snapshot,
    TensorEntry,
)

if TYPE_CHECKING:  # training state is torch's: imported where it is captured or loaded
    import torch


class Stateful(Protocol):
    """What PyTorch optimizers and schedulers are: ``state_dict`` / ``load_state_dict``."""

    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...


def _json(value: object, what: str) -> Any:
    """``value`` as JSON data, or :class:`InvalidInput` naming ``what`` cannot be."""
    try:
        return json.loads(json.dumps(value, allow_nan=False, default=_plain))
    except (TypeError, ValueError) as e:
        raise InvalidInput(f"{what} cannot be kept as JSON ({e}): save it yourself") from e


def _plain(value: object) -> Any:
    torch = sys.modules.get("torch")  # not loaded: no tensor to convert
    if (
        torch is not None
        and isinstance(value, torch.Tensor)
        and value.numel() == 1
        and not value.is_floating_point()
    ):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def capture_training(
    optimizer: Stateful | None = None,
    scheduler: Stateful | None = None,
    rng: bool = False,
    extra: object = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The entries (name -> tensor, as the caller holds them: save copies them) and the
    metadata record of the training state asked for (``extra``: any other nested state, see
    :func:`flatten_checkpoint`); both empty when nothing is asked."""
    tensors: dict[str, torch.Tensor] = {}
    record: dict[str, Any] = {}
    if extra is not None:
        found, record["extra"] = flatten_checkpoint(extra)
        tensors.update(found)
    if optimizer is not None:
        import torch

        sd = optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for pid, values in sd.get("state", {}).items():
            for key, value in values.items():
                if "/" in str(key) or "/" in str(pid):
                    raise InvalidInput(f"optimizer state key {pid}/{key} holds a '/'")
                if isinstance(value, torch.Tensor):
                    tensors[f"{OPTIMIZER_PREFIX}{pid}/{key}"] = value
                else:
                    scalars.setdefault(str(pid), {})[str(key)] = value
        record["optimizer"] = {
            "class": type(optimizer).__name__,
            "param_groups": _json(sd.get("param_groups", []), "the optimizer's param groups"),
            "scalars": _json(scalars, "the optimizer's scalar state"),
            "pids": [_pid_json(p) for p in sd.get("state", {})],
        }
    if scheduler is not None:
        record["scheduler"] = {
            "class": type(scheduler).__name__,
            "state": _json(scheduler.state_dict(), "the scheduler's state"),
        }
    if rng:
        record["rng"] = _capture_rng(tensors)
    return tensors, record


def _pid_json(pid: object) -> Any:
    if isinstance(pid, (int, str)) and not isinstance(pid, bool):
        return pid
    raise InvalidInput(f"optimizer state is keyed by {type(pid).__name__}, not int or str")


def _capture_rng(tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    import torch

    tensors[RNG_PREFIX + "torch"] = torch.get_rng_state()
    out: dict[str, Any] = {"python": _json(random.getstate(), "random's state")}
    if torch.cuda.is_available():
        states = torch.cuda.get_rng_state_all()
        for i, s in enumerate(states):
            tensors[f"{RNG_PREFIX}cuda/{i}"] = s
        out["cuda_devices"] = len(states)
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy comes with torch
        return out
    kind, key, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    keys = np.asarray(key, dtype=np.uint32)
    tensors[RNG_PREFIX + "numpy"] = torch.from_numpy(keys.view(np.int32).copy())
    out["numpy"] = {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "gauss": gauss}
    return out


def training_record(snap: Snapshot) -> dict[str, Any]:
    """What the snapshot's training record holds (empty for weights only)."""
    record = snap.metadata.get(TRAINING_KEY)
    return record if isinstance(record, dict) else {}


def training_entries(snap: Snapshot) -> list[TensorEntry]:
    return [t for t in snap.tensors if t.name.startswith(TRAIN_PREFIX)]


def require_training(
    snap: Snapshot,
    optimizer: Stateful | None = None,
    scheduler: Stateful | None = None,
    rng: bool = False,
) -> dict[str, Any]:
    """The snapshot's training record, if it holds every part asked for; else
    :class:`InvalidInput` (checked before a restore writes anything)."""
    record = training_record(snap)
    asked = {"optimizer": optimizer, "scheduler": scheduler, "rng": rng or None}
    for part, wanted in asked.items():
        if wanted is not None and part not in record:
            raise InvalidInput(f"snapshot {snap.short_id} holds no {part} state to restore")
    return record


def load_training(
    snap: Snapshot,
    read: Callable[[list[TensorEntry]], Mapping[str, torch.Tensor]],
    optimizer: Stateful | None = None,
    scheduler: Stateful | None = None,
    rng: bool = False,
) -> None:
    """Put the snapshot's training state back into ``optimizer``, ``scheduler`` and the RNGs;
    ``read`` decodes entries into CPU tensors by name. Everything is checked present first."""
    record = require_training(snap, optimizer, scheduler, rng)
    entries = training_entries(snap)
    tensors = read(entries) if entries else {}
    if optimizer is not None:
        optimizer.load_state_dict(_optimizer_state(record["optimizer"], tensors))
    if scheduler is not None:
        scheduler.load_state_dict(record["scheduler"]["state"])
    if rng:
        _load_rng(record["rng"], tensors)


def _optimizer_state(record: dict[str, Any], tensors: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    state: dict[Any, dict[str, Any]] = {pid: {} for pid in record.get("pids", [])}
    keyed = {str(pid): pid for pid in state}
    for name, t in tensors.items():
        if name.startswith(OPTIMIZER_PREFIX):
            pid, _, key = name[len(OPTIMIZER_PREFIX) :].partition("/")
            state.setdefault(keyed.get(pid, pid), {})[key] = t
    for pid, values in record.get("scalars", {}).items():
        state.setdefault(keyed.get(pid, pid), {}).update(values)
    return {"state": state, "param_groups": record["param_groups"]}


def _load_rng(record: dict[str, Any], tensors: Mapping[str, torch.Tensor]) -> None:
    import torch

    torch.set_rng_state(tensors[RNG_PREFIX + "torch"])
    version, internal, gauss = record["python"]
    random.setstate((version, tuple(internal), gauss))
    devices = int(record.get("cuda_devices", 0))
    if devices and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(
            [
                tensors[f"{RNG_PREFIX}cuda/{i}"]
                for i in range(min(devices, torch.cuda.device_count()))
            ]
        )
    saved = record.get("numpy")
    if saved is not None:
        import numpy as np

        key = tensors[RNG_PREFIX + "numpy"].numpy().view(np.uint32)
        np.random.set_state((saved["kind"], key, saved["pos"], saved["has_gauss"], saved["gauss"]))


def flatten_checkpoint(obj: object) -> tuple[dict[str, torch.Tensor], Any]:
    """A nested checkpoint (dicts, lists, tuples, tensors, numbers, strings) as entries named
    ``::train/checkpoint/<n>`` (in traversal order, so the same structure gives the same names
    and deltas line up) and a JSON skeleton that :func:`unflatten_checkpoint` reverses; other
    objects are :class:`InvalidInput` naming where they are."""
    import torch

    tensors: dict[str, torch.Tensor] = {}

    def walk(value: object, where: str) -> Any:
        if isinstance(value, torch.Tensor):
            name = f"{CHECKPOINT_PREFIX}{len(tensors)}"
            tensors[name] = value
            return {"__tensor__": name}
        if isinstance(value, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in value):
                return {k: walk(v, f"{where}.{k}") for k, v in value.items()}
            return {
                "__dict__": [[walk(k, where), walk(v, f"{where}[{k!r}]")] for k, v in value.items()]
            }
        if isinstance(value, (list, tuple)):
            items = [walk(v, f"{where}[{i}]") for i, v in enumerate(value)]
            return items if isinstance(value, list) else {"__tuple__": items}
        if (isinstance(value, float) and value != value) or value in (float("inf"), float("-inf")):
            return {"__float__": repr(value)}
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise InvalidInput(
            f"checkpoint entry {where or '<root>'} is a {type(value).__name__}: only tensors, "
            "numbers, strings, lists, tuples and dicts can be kept"
        )

    return tensors, walk(obj, "")


def unflatten_checkpoint(skeleton: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """The checkpoint :func:`flatten_checkpoint` took apart."""
    if isinstance(skeleton, list):
        return [unflatten_checkpoint(v, tensors) for v in skeleton]
    if not isinstance(skeleton, dict):
        return skeleton
    if "__tensor__" in skeleton:
        return tensors[skeleton["__tensor__"]]
    if "__tuple__" in skeleton:
        return tuple(unflatten_checkpoint(v, tensors) for v in skeleton["__tuple__"])
    if "__float__" in skeleton:
        return float(skeleton["__float__"])
    if "__dict__" in skeleton:
        return {
            unflatten_checkpoint(k, tensors): unflatten_checkpoint(v, tensors)
            for k, v in skeleton["__dict__"]
        }
    return {k: unflatten_checkpoint(v, tensors) for k, v in skeleton.items()}


def skeleton_names(skeleton: Any) -> set[str]:
    """The entry names a :func:`flatten_checkpoint` skeleton refers to."""
    if isinstance(skeleton, list):
        return set().union(*(skeleton_names(v) for v in skeleton))
    if not isinstance(skeleton, dict):
        return set()
    if "__tensor__" in skeleton:
        return {skeleton["__tensor__"]}
    return set().union(*(skeleton_names(v) for v in skeleton.values()))
