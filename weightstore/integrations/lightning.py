"""A Lightning ``CheckpointIO`` plugin that checkpoints into a store.

    trainer = L.Trainer(plugins=[WeightstoreCheckpointIO(store, task="run")], ...)

``save_checkpoint`` keeps ``checkpoint["state_dict"]`` as the snapshot's weights and every other
part of Lightning's checkpoint (optimizer and scheduler states, loops, callbacks, hparams) as
its ``extra`` state (tensors as entries, the rest as JSON; ``training.flatten_checkpoint``), as
``task@global_step``, in the background by default. The path Lightning names the checkpoint by
(``ModelCheckpoint``'s ``epoch=0-step=100.ckpt``) becomes a tag, so ``load_checkpoint(path)``
(``trainer.fit(ckpt_path=...)``) and ``remove_checkpoint(path)`` (``save_top_k``) find it;
``teardown`` waits for pending saves. A path that names a real file is read from disk.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import CheckpointIO

from weightstore.errors import RefNotFound
from weightstore.store import WeightStore

LIGHTNING_KEY = "lightning"
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def checkpoint_tag(path: str | os.PathLike[str]) -> str:
    """The tag a checkpoint path maps to: its file name without ``.ckpt``, in tag characters."""
    name = Path(path).name.removesuffix(".ckpt")
    tag = _TAG_UNSAFE.sub("_", name).strip("-") or "checkpoint"
    return f"ckpt-{tag}" if tag.isdigit() else tag


class WeightstoreCheckpointIO(CheckpointIO):
    """Lightning checkpoints as snapshots of ``task`` (see the module docstring)."""

    def __init__(self, store: WeightStore, task: str, *, async_: bool = True) -> None:
        super().__init__()
        self.store = store
        self.task = task
        self.async_ = async_
        self._steps: set[int] = set()

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        rest = {k: v for k, v in checkpoint.items() if k != "state_dict"}
        metadata = {LIGHTNING_KEY: {"path": str(path)}}
        step = checkpoint.get("global_step")
        if not isinstance(step, int) or step in self._steps or self._taken(step):
            step = None  # a second file at one step (``last.ckpt`` beside a top-k one), or a
            # step an earlier run of the task saved: the tag names it
        else:
            self._steps.add(step)
        save = self.store.save_async if self.async_ else self.store.save
        # A tag moves to the newest save of its name, as ``last.ckpt`` is overwritten.
        tags = [checkpoint_tag(path)]
        save(
            self.task, checkpoint["state_dict"], step=step, tags=tags, metadata=metadata, extra=rest
        )

    def _taken(self, step: int) -> bool:
        try:
            self.store.resolve(f"{self.task}@{step}")
        except RefNotFound:
            return False
        return True

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        self.store.wait()
        try:
            snap = self.store.show(f"{self.task}:{checkpoint_tag(path)}")
        except RefNotFound:
            if Path(path).is_file():
                loaded: dict[str, Any] = torch.load(
                    path, map_location=map_location, weights_only=bool(weights_only)
                )
                return loaded
            raise
        device = map_location if isinstance(map_location, (str, torch.device)) else None
        out: dict[str, Any] = self.store.restore_extra(snap.id, device=device)
        out["state_dict"] = self.store.restore(snap.id, device=device)
        return out

    def remove_checkpoint(self, path: Any) -> None:
        self.store.wait()
        try:
            self.store.delete(f"{self.task}:{checkpoint_tag(path)}")
        except RefNotFound:
            if Path(path).is_file():
                Path(path).unlink()

    def teardown(self) -> None:
        self.store.wait()
