"""A Hugging Face ``Trainer`` callback that checkpoints into a store.

    trainer = Trainer(..., callbacks=[WeightstoreCallback(store, task="run")])

Whenever the Trainer saves a checkpoint (``save_steps``, ``save_strategy``), the callback saves
the model as ``task@global_step`` (in the background by default: training waits only for the
copy), with the optimizer, scheduler and RNG states, and the Trainer's state and last logged
metrics as metadata. ``on_train_end`` waits for pending saves, so ``train()`` returns with
every checkpoint committed (or raises if one failed). Resuming: ``store.restore("run@1200",
into=model, optimizer=..., scheduler=..., rng=True)``; see the README.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from weightstore.store import WeightStore


def _numbers(logs: list[dict[str, Any]]) -> dict[str, float]:
    """The latest value of each numeric metric the Trainer logged."""
    out: dict[str, float] = {}
    for entry in logs:
        for key, value in entry.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[key] = value
    return out


class WeightstoreCallback(TrainerCallback):
    """Checkpoints into ``store`` as ``task@global_step`` (see the module docstring)."""

    def __init__(
        self,
        store: WeightStore,
        task: str,
        *,
        optimizer: bool = True,
        async_: bool = True,
        rng: bool = True,
        tags: tuple[str, ...] = (),
    ) -> None:
        self.store = store
        self.task = task
        self.optimizer = optimizer
        self.async_ = async_
        self.rng = rng
        self.tags = tags
        self.saved: list[Any] = []  # the snapshots (or their Futures), in order

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        metadata = {
            "trainer": {
                "global_step": state.global_step,
                "epoch": state.epoch,
                "best_metric": state.best_metric,
            },
            "metrics": _numbers(state.log_history),
        }
        save = self.store.save_async if self.async_ else self.store.save
        self.saved.append(
            save(
                self.task,
                kwargs["model"],
                step=state.global_step,
                tags=self.tags,
                metadata=metadata,
                optimizer=kwargs.get("optimizer") if self.optimizer else None,
                scheduler=kwargs.get("lr_scheduler") if self.optimizer else None,
                rng=self.rng,
            )
        )

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.store.wait()
