"""Deterministic state dicts shared by the worker scripts and the tests that check their output.

``state(seed, version)`` is a small model of 20 tensors (fp32, bf16, int64; about 3 MiB): version
``v`` is version ``v - 1`` with about 1% of each float tensor's elements nudged, so consecutive
versions store as XOR deltas. The ``frozen.*`` tensors depend on neither argument (identical in
every process and every version: dedup hits on one digest), and ``specials`` holds NaN payloads,
-0.0, infinities and subnormals so that only a bit-exact restore passes.
"""

from __future__ import annotations

import torch

LAYERS = 4


def _gen(*key: int) -> torch.Generator:
    seed = 0
    for k in key:
        seed = (seed * 1_000_003 + k + 1) % (2**62)
    return torch.Generator().manual_seed(seed)


def _base(seed: int) -> dict[str, torch.Tensor]:
    g = _gen(seed, 0)
    sd: dict[str, torch.Tensor] = {"embed.weight": torch.randn(1024, 128, generator=g)}
    for i in range(LAYERS):
        sd[f"layers.{i}.attn.weight"] = torch.randn(256, 256, generator=g) * 0.05
        sd[f"layers.{i}.attn.bias"] = torch.zeros(256)
        sd[f"layers.{i}.mlp.weight"] = (torch.randn(512, 256, generator=g) * 0.05).bfloat16()
        sd[f"layers.{i}.norm.weight"] = torch.ones(256, dtype=torch.bfloat16)
    sd["head.weight"] = (torch.randn(256, 1024, generator=g) * 0.02).bfloat16()
    sd["step_counter"] = torch.tensor([0], dtype=torch.int64)
    nan_payloads = torch.tensor([0x7FC00001, 0x7FA00000, -0x200000], dtype=torch.int32)
    sd["specials"] = torch.cat(
        [
            torch.tensor([0.0, -0.0, float("inf"), float("-inf"), 1e-45, -1e-45, 3.0e38]),
            nan_payloads.view(torch.float32),
            torch.randn(1014, generator=g),
        ]
    )
    return sd


def _frozen() -> dict[str, torch.Tensor]:
    g = _gen(999_999, 0)
    return {
        "frozen.token_ids": torch.randint(0, 50_000, (4096,), dtype=torch.int64, generator=g),
        "frozen.pos_embed": torch.randn(512, 128, generator=g),
    }


_HISTORY: dict[int, list[dict[str, torch.Tensor]]] = {}


def _advance(seed: int, version: int, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Version ``version`` from version ``version - 1`` (a new dict; ``sd`` is not changed)."""
    g = _gen(seed, version)
    out = {}
    for name, t in sd.items():
        t = t.clone()
        if name == "step_counter":
            t += 1
        elif t.is_floating_point() and not name.startswith(("specials", "frozen.")):
            flat = t.view(-1)
            idx = torch.randint(0, flat.numel(), (max(1, flat.numel() // 100),), generator=g)
            noise = torch.randn(idx.numel(), generator=g) * 1e-3
            flat[idx] = (flat[idx].float() + noise).to(t.dtype)
        out[name] = t
    return out


def state(seed: int, version: int) -> dict[str, torch.Tensor]:
    """The state dict of model ``seed`` after ``version`` small training steps (a fresh copy;
    versions are computed once per process and cached)."""
    if version < 0:
        raise ValueError("version must be >= 0")
    history = _HISTORY.get(seed)
    if history is None:
        base = _base(seed)
        names = list(base)
        # Frozen tensors sit in the middle, so their position is not special.
        history = _HISTORY[seed] = [
            {**{n: base[n] for n in names[:5]}, **_frozen(), **{n: base[n] for n in names[5:]}}
        ]
    while len(history) <= version:
        history.append(_advance(seed, len(history), history[-1]))
    return {name: t.clone() for name, t in history[version].items()}


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-exact equality: dtype, shape and every byte (so NaN payloads and -0.0 count)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    x, y = a.detach().cpu().contiguous(), b.detach().cpu().contiguous()
    if x.numel() == 0:
        return True
    return bytes(x.reshape(-1).view(torch.uint8).numpy()) == bytes(
        y.reshape(-1).view(torch.uint8).numpy()
    )


def mismatches(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> list[str]:
    """Names whose tensors differ (or that only one side has), in ``expected``'s order."""
    names = list(expected) + [n for n in got if n not in expected]
    return [n for n in names if n not in got or n not in expected or not same(got[n], expected[n])]
