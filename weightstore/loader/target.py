"""The swap target: a module's or state dict's own tensors, by name (checked against a snapshot
by the one target check, :func:`weightstore.read.check_slots`)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from weightstore.errors import InvalidInput
from weightstore.ports import Weights


def target_tensors(weights: Weights) -> dict[str, torch.Tensor]:
    """The target's tensors by name, sharing its memory."""
    if isinstance(weights, torch.nn.Module):
        return dict(weights.state_dict(keep_vars=False))
    if isinstance(weights, Mapping):
        out: dict[str, torch.Tensor] = {}
        for name, t in weights.items():
            if not isinstance(t, torch.Tensor):
                raise InvalidInput(f"target {name!r} is a {type(t).__name__}, not a tensor")
            out[name] = t
        return out
    raise InvalidInput(
        f"the target must be an nn.Module or a mapping of name to tensor, not "
        f"{type(weights).__name__}"
    )
