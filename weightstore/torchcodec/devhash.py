"""The device checksum (``weightstore.codec.devhash``) computed with torch ops where a tensor
lives: on a GPU after a delta was applied in place there, on the CPU in the tests, which check
it against the numpy definition bit for bit.

Words are handled as int64 (every step is a wrapping multiply or add, or a bit operation, so
the sign does not matter; the shift is made logical with a mask). On the CPU a block at a time
(it stays in cache); elsewhere many blocks per kernel, bounded so the temporaries stay small.
"""

from __future__ import annotations

import torch

from weightstore.codec.devhash import BLOCK, SHIFT, block_weight, finish, position_weights

_LOW = (1 << (64 - SHIFT)) - 1  # what a logical right shift by SHIFT keeps
_DEVICE_BLOCKS = 2048  # blocks per kernel off the CPU: 512 MiB of words
_weights: dict[torch.device, torch.Tensor] = {}


def _signed(u: int) -> int:
    return u - (1 << 64) if u >> 63 else u


def _position_weights(device: torch.device) -> torch.Tensor:
    w = _weights.get(device)
    if w is None:
        host = torch.from_numpy(position_weights(BLOCK).view("<i8"))
        w = _weights[device] = host.to(device)
    return w


def _words(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``t``'s bytes as int64 words (zero-padded, 8-byte aligned) and their byte length."""
    flat = t.detach().reshape(-1).view(torch.uint8) if t.numel() else t.new_empty(0).byte()
    n = flat.numel()
    if n % 8 or flat.data_ptr() % 8:
        padded = torch.zeros(-(-n // 8) * 8, dtype=torch.uint8, device=flat.device)
        padded[:n] = flat
        flat = padded
    return (flat.view(torch.int64) if flat.numel() else flat.new_empty(0, dtype=torch.int64)), n


def devhash_tensor(t: torch.Tensor, blocks_per_call: int | None = None) -> int:
    """The device checksum of ``t``'s bytes (contiguous order), computed on ``t.device``.
    ``blocks_per_call``: blocks reduced per kernel (default: 1 on the CPU, many elsewhere;
    the tests run the batched form on the CPU too)."""
    if not t.is_contiguous():
        t = t.contiguous()
    words, n = _words(t)
    weights = _position_weights(words.device)
    per_call = blocks_per_call or (1 if words.device.type == "cpu" else _DEVICE_BLOCKS)
    acc = 0
    step = per_call * BLOCK
    for at in range(0, words.numel(), step):
        w = words[at : at + step]
        blocks = -(-w.numel() // BLOCK)
        if w.numel() != blocks * BLOCK:  # zero words add nothing: pad the last block
            w = torch.cat([w, w.new_zeros(blocks * BLOCK - w.numel())])
        x = ((w >> SHIFT) & _LOW) ^ w
        dots = (x.view(blocks, BLOCK) * weights).sum(dim=1)
        first = at // BLOCK
        ks = torch.tensor(
            [_signed(block_weight(first + c)) for c in range(blocks)],
            dtype=torch.int64,
            device=words.device,
        )
        acc += int((dots * ks).sum().item())
    return finish(acc & ((1 << 64) - 1), n)
